"""Random train / validation / test splits of frame indices, saved as npz."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

SPLIT_KEYS = ("train", "valid", "test")


def _count(value: int | float, n_frames: int, name: str) -> int:
    """A count given as an int (>= 0), or as a float fraction in (0, 1] of ``n_frames``.

    Integral floats above 1 (e.g. ``1e3`` from a config file) are taken as counts.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be an int or a fraction in (0, 1], got {value!r}")
    if isinstance(value, (int, np.integer)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
        return int(value)
    value = float(value)
    if not np.isfinite(value) or value < 0 or (value > 1 and not value.is_integer()):
        raise ValueError(f"{name} must be an int or a fraction in (0, 1], got {value}")
    return int(value) if value > 1 else int(round(value * n_frames))


def make_split(
    n_frames: int,
    n_train: int | float,
    n_valid: int | float,
    n_test: int | float | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Disjoint random index sets over ``range(n_frames)``.

    Args:
        n_frames: number of frames M.
        n_train, n_valid, n_test: counts, each an int or a float fraction in (0, 1] of ``n_frames``
            (``1.0`` = all frames, ``1`` = one frame); ``n_test=None`` = all the remaining frames.
        seed: seed of the permutation (same seed, same split).
    Returns:
        {"train": (n_train,), "valid": (n_valid,), "test": (n_test,)} int64 sorted frame indices.
    Raises:
        ValueError: negative or bad counts, or counts that together exceed ``n_frames``.
    """
    n_frames = int(n_frames)
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    n_tr = _count(n_train, n_frames, "n_train")
    n_va = _count(n_valid, n_frames, "n_valid")
    n_te = n_frames - n_tr - n_va if n_test is None else _count(n_test, n_frames, "n_test")
    if n_tr + n_va + max(n_te, 0) > n_frames or n_te < 0:
        te = "the rest" if n_test is None else n_te
        raise ValueError(
            f"split counts exceed the data: n_train={n_tr} + n_valid={n_va} + n_test={te} > n_frames={n_frames}"
        )
    perm = np.random.default_rng(seed).permutation(n_frames)
    parts = np.split(perm, [n_tr, n_tr + n_va, n_tr + n_va + n_te])[:3]
    return {k: np.sort(p).astype(np.int64) for k, p in zip(SPLIT_KEYS, parts, strict=True)}


def save_split(path: str | os.PathLike, split: dict[str, np.ndarray]) -> None:
    """Write a split to ``path`` (npz with keys train/valid/test), atomically (temporary file + rename)."""
    path = Path(path)
    missing = [k for k in SPLIT_KEYS if k not in split]
    if missing:
        raise ValueError(f"split is missing keys {missing}; has {sorted(split)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **{k: np.asarray(split[k], dtype=np.int64) for k in SPLIT_KEYS})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_split(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a split written by :func:`save_split`: {"train", "valid", "test"} → (n,) int64 indices."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such split file")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in SPLIT_KEYS if k not in data.files]
            if missing:
                raise ValueError(f"{path}: split file is missing keys {missing}; keys found: {data.files}")
            return {k: np.asarray(data[k], dtype=np.int64) for k in SPLIT_KEYS}
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: cannot read split file: {err}") from None
