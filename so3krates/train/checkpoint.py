"""Training checkpoints: everything needed to continue a killed run exactly where it stopped.

One msgpack file (``flax.serialization``: arrays and plain Python values, no pickle) holding the
parameters, the optimiser state, the EMA weights, the best EMA weights so far, the normalisation, the
epoch and step counters, the learning-rate schedule state (incl. reduce-on-plateau), the early
stopping counter, the random state and the metrics history. It is written to a temporary file and
moved into place with ``os.replace``, so a crash while writing leaves the previous checkpoint intact.

The random state is the seed and the next epoch: each epoch's shuffling comes from
``numpy.random.default_rng([seed, epoch])``, so it is reproduced exactly on resume without storing a
generator's internals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np

from so3krates.files import atomic_write_bytes

CHECKPOINT_FILE = "checkpoint_latest.msgpack"
CHECKPOINT_FORMAT = "so3krates-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class Checkpoint:
    """A training state between two epochs (host numpy arrays).

    Attributes:
        params, ema, best_ema: parameter trees (current, moving average, best moving average).
        opt_state: optax state.  normalization: the fixed normalisation collection.
        epoch: completed epochs.  step: optimiser steps taken.
        schedule: :meth:`LearningRateSchedule.state_dict`.
        best_loss, best_epoch: best validation loss and its epoch (0: none yet).
        bad_epochs: validations since the best (early stopping).
        seed: the run's seed (the random state together with ``epoch``).
        history: one dict of metrics per completed epoch.
    """

    params: Any
    ema: Any
    best_ema: Any
    opt_state: Any
    normalization: dict[str, Any]
    epoch: int
    step: int
    schedule: dict[str, Any]
    best_loss: float
    best_epoch: int
    bad_epochs: int
    seed: int
    history: list[dict[str, Any]] = field(default_factory=list)


def _to_numpy(tree: Any) -> Any:
    return jax.tree_util.tree_map(np.asarray, tree)


def checkpoint_to_bytes(ckpt: Checkpoint) -> bytes:
    """Serialise with flax's msgpack (arrays as raw buffers; no pickle)."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "params": _to_numpy(ckpt.params),
        "ema": _to_numpy(ckpt.ema),
        "best_ema": _to_numpy(ckpt.best_ema),
        "opt_state": flax.serialization.to_state_dict(_to_numpy(ckpt.opt_state)),
        "normalization": _to_numpy(ckpt.normalization),
        "epoch": int(ckpt.epoch),
        "step": int(ckpt.step),
        # Plain values as JSON: msgpack would restore a list of dicts as a dict keyed '0', '1', …
        "schedule_json": json.dumps(ckpt.schedule),
        "best_loss": float(ckpt.best_loss),
        "best_epoch": int(ckpt.best_epoch),
        "bad_epochs": int(ckpt.bad_epochs),
        "seed": int(ckpt.seed),
        "history_json": json.dumps(ckpt.history),
    }
    return flax.serialization.msgpack_serialize(state)


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> None:
    """Atomically write ``ckpt`` to ``path`` (temporary file + os.replace)."""
    atomic_write_bytes(path, checkpoint_to_bytes(ckpt))


def _restore_tree(template: Any, stored: Any, name: str, path: Path) -> Any:
    """Stored arrays in the structure of ``template``, with shapes checked."""
    try:
        tree = flax.serialization.from_state_dict(template, stored)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: {name} does not match this run's model/optimizer: {err}") from None
    for want, got in zip(jax.tree_util.tree_leaves(template), jax.tree_util.tree_leaves(tree), strict=True):
        if np.shape(want) != np.shape(got):
            raise ValueError(f"{path}: {name} has an array of shape {np.shape(got)}, expected {np.shape(want)}")
    return tree


def load_checkpoint(path: str | Path, params_template: Any, opt_state_template: Any) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file.
        params_template: a parameter tree of the right structure (e.g. freshly initialised).
        opt_state_template: ``optimizer.init(params_template)``.
    Raises:
        FileNotFoundError: no checkpoint.  ValueError: corrupted or from an incompatible run.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint {path} to resume from")
    try:
        raw = flax.serialization.msgpack_restore(path.read_bytes())
    except Exception as err:  # msgpack raises several unrelated types for garbled input
        raise ValueError(f"{path} is corrupted (cannot be read as a checkpoint: {err})") from None
    if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a so3krates checkpoint")
    if int(raw.get("version", 0)) > CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {raw['version']} is newer than this so3krates reads")
    try:
        return Checkpoint(
            params=_restore_tree(params_template, raw["params"], "params", path),
            ema=_restore_tree(params_template, raw["ema"], "ema", path),
            best_ema=_restore_tree(params_template, raw["best_ema"], "best_ema", path),
            opt_state=_restore_tree(opt_state_template, raw["opt_state"], "opt_state", path),
            normalization={k: np.asarray(v) for k, v in raw["normalization"].items()},
            epoch=int(raw["epoch"]),
            step=int(raw["step"]),
            schedule=json.loads(raw["schedule_json"]),
            best_loss=float(raw["best_loss"]),
            best_epoch=int(raw["best_epoch"]),
            bad_epochs=int(raw["bad_epochs"]),
            seed=int(raw["seed"]),
            history=json.loads(raw["history_json"]),
        )
    except KeyError as err:
        raise ValueError(f"{path} is incomplete: it has no {err}") from None
