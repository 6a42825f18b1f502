"""Training checkpoints: everything needed to continue a killed run exactly where it stopped.

One msgpack file (``flax.serialization``: arrays and plain Python values, no pickle) holding the
parameters, the optimiser state, the EMA weights, the best EMA weights so far, the normalisation, the
epoch and step counters, the learning-rate schedule state (incl. reduce-on-plateau), the early
stopping counter, the random state and the metrics history. It is written to a temporary file and
moved into place with ``os.replace``, so a crash while writing leaves the previous checkpoint intact.

Format version 2 wraps that state in an envelope ``{"format", "version", "sha256", "state"}``: ``state``
is the msgpack bytes of the state and ``sha256`` their checksum, so a file that still parses but has
flipped bytes (a bad disk, a bad copy) is refused, named, instead of resuming from damaged weights.
Version 1 files (the state itself, no checksum) are still read, unchecked.

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

from so3krates.files import atomic_write_bytes, sha256

CHECKPOINT_FILE = "checkpoint_latest.msgpack"
CHECKPOINT_FORMAT = "so3krates-checkpoint"
CHECKPOINT_VERSION = 2  # 2: the state in a checksummed envelope; 1 (no checksum) is still read


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


@dataclass
class Progress:
    """What changes from epoch to epoch besides the train state (all of it goes into the checkpoint, but
    ``saved_epoch``, the epoch of the checkpoint on disk)."""

    epoch: int
    best_loss: float
    best_epoch: int
    bad_epochs: int
    best_ema: Any
    history: list[dict[str, Any]]
    provisional_c: float = 0.0  # running estimate of c (A.14) for validation with β = 1
    saved_epoch: int = 0  # the epoch of the checkpoint on disk

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> Progress:
        done = ckpt.epoch
        return cls(done, ckpt.best_loss, ckpt.best_epoch, ckpt.bad_epochs, ckpt.best_ema, list(ckpt.history), 0.0, done)


def _to_numpy(tree: Any) -> Any:
    return jax.tree_util.tree_map(np.asarray, tree)


def checkpoint_to_bytes(ckpt: Checkpoint) -> bytes:
    """Serialise with flax's msgpack (arrays as raw buffers; no pickle), in the checksummed envelope."""
    state = {
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
    payload = flax.serialization.msgpack_serialize(state)
    envelope = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "sha256": sha256(payload), "state": payload}
    return flax.serialization.msgpack_serialize(envelope)


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


def _unpack(data: bytes, path: Path) -> dict[str, Any]:
    """msgpack bytes → dict; anything that does not parse is named as corrupted."""
    try:
        raw = flax.serialization.msgpack_restore(data)
    except Exception as err:  # msgpack raises several unrelated types for garbled input
        raise ValueError(f"{path} is corrupted (cannot be read as a checkpoint: {err})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is corrupted (not a so3krates checkpoint)")
    return raw


def read_checkpoint_state(path: str | Path) -> dict[str, Any]:
    """The stored state of a checkpoint file, its format, version and checksum checked (version 1, which
    has no checksum, unchecked); the arrays are not yet matched to a model.

    Raises:
        FileNotFoundError: no file.  ValueError: corrupted (does not parse, or its checksum differs),
            not a checkpoint, or newer than this so3krates reads; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint {path} to resume from")
    raw = _unpack(path.read_bytes(), path)
    if raw.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a so3krates checkpoint (or its header is corrupted)")
    version = raw.get("version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{path} is corrupted (checkpoint version {version!r})")
    if version > CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {version} is newer than this so3krates reads")
    if version == 1:
        return raw  # written before checkpoints carried a checksum
    payload = raw.get("state")
    if not isinstance(payload, bytes) or sha256(payload) != raw.get("sha256"):
        raise ValueError(f"{path} is corrupted (its checksum does not match its content)")
    return _unpack(payload, path)


def load_checkpoint(path: str | Path, params_template: Any, opt_state_template: Any) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (format version 1 or 2).

    Args:
        path: the checkpoint file.
        params_template: a parameter tree of the right structure (e.g. freshly initialised).
        opt_state_template: ``optimizer.init(params_template)``.
    Raises:
        FileNotFoundError: no checkpoint.  ValueError: corrupted (incl. a checksum that differs) or from
            an incompatible run.
    """
    path = Path(path)
    raw = read_checkpoint_state(path)
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


def checkpoint_epoch(path: str | Path) -> int:
    """The completed epochs stored in a checkpoint (its checksum checked)."""
    raw = read_checkpoint_state(path)
    try:
        return int(raw["epoch"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path} is incomplete: it has no epoch") from None
