"""Optimiser, learning-rate schedules and the exponential moving average (EMA) of the weights (A.13).

* Adam with gradient clipping at a global norm (paper: 1). The learning rate is not part of the optax
  state but passed to every step: the schedules below decide it on the host once per epoch (they need
  the validation loss), and a traced scalar changes nothing in the compiled step.
* Schedules: exponential decay lr_e = lr_0 · factor^(e / decay_epochs) (the paper: × 0.5 every 1000
  epochs for MD17), or reduce-on-plateau (the authors' release: × 0.5 after 25 epochs without a
  better validation loss); both floored at ``min_lr``.
* EMA of the weights (decay 0.999), used for validation and saved as the model. During the first
  steps the decay is min(decay, (1 + t)/(10 + t)) (as TensorFlow's ExponentialMovingAverage with
  ``num_updates``), so that short runs are not dominated by the random initial weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def make_optimizer(grad_clip: float | None = 1.0) -> optax.GradientTransformation:
    """Adam's update direction (scale by −lr separately, see :func:`apply_learning_rate`), clipped first."""
    parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip else []
    return optax.chain(*parts, optax.scale_by_adam())


def apply_learning_rate(updates: Any, lr: Array) -> Any:
    """Gradient descent direction: −lr · updates."""
    return jax.tree_util.tree_map(lambda u: -lr * u, updates)


def ema_update(ema: Any, params: Any, decay: float, step: Array) -> Any:
    """ema ← d · ema + (1 − d) · params with d = min(decay, (1 + step)/(10 + step)); step counts from 0."""
    step = jnp.asarray(step, jnp.float32)
    d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    return jax.tree_util.tree_map(lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), ema, params)


@dataclass
class LearningRateSchedule:
    """Host-side learning rate, updated once per epoch; its state goes into every checkpoint.

    Attributes:
        kind: "exponential", "plateau" or "constant".
        lr0: initial learning rate.  lr: current learning rate.
        decay_factor, decay_epochs: exponential decay lr0 · decay_factor^(epoch / decay_epochs).
        plateau_factor, plateau_patience: reduce-on-plateau.
        min_lr: floor.
        best: best validation loss seen by the plateau rule.  bad_epochs: epochs since it improved.
    """

    kind: str
    lr0: float
    lr: float
    decay_factor: float = 0.5
    decay_epochs: int = 1000
    plateau_factor: float = 0.5
    plateau_patience: int = 25
    min_lr: float = 0.0
    best: float = math.inf
    bad_epochs: int = 0

    @classmethod
    def from_config(cls, config: Any) -> LearningRateSchedule:
        """From a :class:`~so3krates.train.config.TrainConfig`."""
        return cls(
            kind=config.schedule,
            lr0=config.lr,
            lr=config.lr,
            decay_factor=config.decay_factor,
            decay_epochs=config.decay_epochs,
            plateau_factor=config.plateau_factor,
            plateau_patience=config.plateau_patience,
            min_lr=config.min_lr,
        )

    def end_epoch(self, epoch: int, valid_loss: float | None) -> float:
        """Update after ``epoch`` (1-based, completed) with its validation loss; returns the next lr."""
        if self.kind == "exponential":
            self.lr = max(self.lr0 * self.decay_factor ** (epoch / self.decay_epochs), self.min_lr)
        elif self.kind == "plateau" and valid_loss is not None and math.isfinite(valid_loss):
            # Relative threshold 1e-4 (as torch's ReduceLROnPlateau): noise is not progress.
            if valid_loss < self.best * (1.0 - 1e-4) or not math.isfinite(self.best):
                self.best, self.bad_epochs = valid_loss, 0
            else:
                self.bad_epochs += 1
                if self.bad_epochs >= self.plateau_patience:
                    self.lr = max(self.lr * self.plateau_factor, self.min_lr)
                    self.bad_epochs = 0
        return self.lr

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("lr", "best", "bad_epochs"):
            if key in state:
                setattr(self, key, type(getattr(self, key))(state[key]))
