"""Training: loss (eq. 35), normalisation and energy constant (A.14), optimiser and EMA, the loop.

The public entry points are :class:`TrainConfig` and :func:`train`; ``so3krates train`` only parses
arguments and calls them.
"""

from so3krates.train.config import TrainConfig
from so3krates.train.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
