"""Random train / validation / test splits of frame indices; saved as npz (default) or json.

A split is ``{"train": (n_train,), "valid": (n_valid,), "test": (n_test,)}`` int64 sorted frame
indices, pairwise disjoint. Files are written atomically (:func:`so3krates.files.atomic_write`), so a
crash never leaves a half-written split that a later run would trust.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from so3krates.files import atomic_write

SPLIT_KEYS = ("train", "valid", "test")


def _count(value: int | float, n_frames: int, name: str) -> int:
    """A count given as an int (>= 0), or as a float fraction in (0, 1] of ``n_frames``.

    Integral floats above 1 (e.g. ``1e3`` from a config file) are taken as counts.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be an int (a number of frames) or a fraction in (0, 1], got {value!r}")
    if isinstance(value, (int, np.integer)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
        return int(value)
    value = float(value)
    if not np.isfinite(value) or value < 0 or (value > 1 and not value.is_integer()):
        raise ValueError(f"{name} must be an int (a number of frames) or a fraction in (0, 1], got {value}")
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
        seed: seed of the permutation (same seed and counts, same split, on any machine).
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
    # numpy's Generator permutation is stable across platforms and numpy versions with the same seed
    perm = np.random.default_rng(seed).permutation(n_frames)
    parts = np.split(perm, [n_tr, n_tr + n_va, n_tr + n_va + n_te])[:3]
    return {k: np.sort(p).astype(np.int64) for k, p in zip(SPLIT_KEYS, parts, strict=True)}


def _is_json(path: Path) -> bool:
    return path.suffix.lower() == ".json"


def save_split(path: str | os.PathLike, split: dict[str, np.ndarray]) -> None:
    """Write a split to ``path`` atomically: json if the name ends in ``.json``, else npz.

    Args:
        path: destination; parent folders are created.
        split: {"train", "valid", "test"} → (n,) integer frame indices (extra keys are ignored).
    Raises:
        ValueError: a key is missing or an index array is not 1-D integers >= 0.
    """
    path = Path(path)
    missing = [k for k in SPLIT_KEYS if k not in split]
    if missing:
        raise ValueError(f"split is missing keys {missing}; has {sorted(split)}")
    arrays = {}
    for k in SPLIT_KEYS:
        a = np.asarray(split[k])
        if a.ndim != 1 or (a.size and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0)):
            raise ValueError(f"split[{k!r}] must be a 1-D array of frame indices >= 0, got {a.dtype} {a.shape}")
        arrays[k] = a.astype(np.int64)

    def write(fh: Any) -> None:
        if _is_json(path):
            fh.write((json.dumps({k: a.tolist() for k, a in arrays.items()}) + "\n").encode())
        else:
            np.savez(fh, **arrays)

    atomic_write(path, write)


def load_split(path: str | os.PathLike, n_frames: int | None = None) -> dict[str, np.ndarray]:
    """Read a split written by :func:`save_split` (npz, or json if the name ends in ``.json``).

    Args:
        path: the split file.
        n_frames: if given, every index must be < n_frames (catches a split made for another dataset).
    Returns:
        {"train", "valid", "test"} → (n,) int64 frame indices.
    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: unreadable file, missing keys, non-integer, negative, overlapping or
            out-of-range indices.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such split file")
    try:
        if _is_json(path):
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object with keys train/valid/test")
            files = list(data)
        else:
            with np.load(path, allow_pickle=False) as npz:
                files = list(npz.files)
                data = {k: npz[k] for k in SPLIT_KEYS if k in files}
    except (OSError, EOFError, ValueError, AttributeError) as err:
        raise ValueError(f"{path}: cannot read split file ({type(err).__name__}: {err})") from None
    missing = [k for k in SPLIT_KEYS if k not in files]
    if missing:
        raise ValueError(f"{path}: split file is missing keys {missing}; keys found: {files}")
    out = {}
    for k in SPLIT_KEYS:
        a = np.asarray(data[k])
        if a.size == 0:
            a = a.reshape(0).astype(np.int64)  # json [] loads as float64
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer) or (a.size and a.min() < 0):
            raise ValueError(f"{path}: key {k!r} must be 1-D frame indices >= 0, got {a.dtype} {a.shape}")
        if n_frames is not None and a.size and a.max() >= n_frames:
            raise ValueError(
                f"{path}: key {k!r} refers to frame {int(a.max())}, but the dataset has {n_frames} frames "
                "(was this split made for another data file?)"
            )
        out[k] = a.astype(np.int64)
    union = np.concatenate(list(out.values()))
    if len(np.unique(union)) != len(union):
        raise ValueError(f"{path}: the train/valid/test index sets overlap (a frame appears more than once)")
    return out
