"""Training: loss (eq. 35), normalisation and energy constant (A.14), optimiser and EMA, the loop.

The public entry points are :class:`TrainConfig` and :func:`train`; ``so3krates train`` only parses
arguments and calls them. The parts :func:`train` is made of: ``pipeline`` (frames → split → graphs →
padded batches), ``batching`` (padded shapes, per-device parts), ``startup`` (model, initial or resumed
state, steps on their devices), ``steps`` (the jitted train and evaluation steps, one device or sharded),
``parallel`` (devices, mesh, processes), ``records`` (run files, metrics.csv, TensorBoard, learning curve),
``stopping`` (early stopping, time limit, SIGTERM), ``checkpoint``, ``metrics`` (error figures).
"""

from so3krates.train.config import TrainConfig
from so3krates.train.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
