"""Small bundled reference datasets (GFN2-xTB Langevin MD, extended XYZ, gzip); see README.md here.

>>> from so3krates import datasets
>>> from so3krates.data import read_frames
>>> datasets.available()
['aspirin', 'ethanol', 'toluene']
>>> frames = read_frames(datasets.path("ethanol"))

``path`` returns a decompressed copy (made once, in a cache directory) because ASE's extended XYZ
reader seeks backwards in the file for every frame, which on a gzip stream means decompressing from
the start again: reading a 2000-frame ``.extxyz.gz`` takes minutes, the plain file a second.
``path(name, decompressed=False)`` gives the bundled ``.extxyz.gz`` itself.
"""

from __future__ import annotations

import gzip
import os
import pathlib
import shutil
import tempfile
from importlib import resources

from so3krates.files import atomic_write

__all__ = ["available", "path", "cache_dir"]

_SUFFIX = ".extxyz.gz"


def _root() -> pathlib.Path:
    return pathlib.Path(str(resources.files(__name__)))


def available() -> list[str]:
    """Names of the bundled datasets, sorted."""
    return sorted(p.name[: -len(_SUFFIX)] for p in _root().iterdir() if p.name.endswith(_SUFFIX))


def cache_dir() -> pathlib.Path:
    """Where decompressed copies go: ``$SO3KRATES_CACHE/datasets``, else ``$XDG_CACHE_HOME/so3krates/datasets``
    (default ``~/.cache``), else the system temporary directory when that is not writable."""
    if os.environ.get("SO3KRATES_CACHE"):
        base = pathlib.Path(os.environ["SO3KRATES_CACHE"])
    else:
        base = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "so3krates"
    return base / "datasets"


def _decompressed(src: pathlib.Path, name: str) -> pathlib.Path:
    stat = src.stat()
    stem = f"{name}-{stat.st_size}-{int(stat.st_mtime)}.extxyz"  # a changed bundled file gets a new copy
    for folder in (cache_dir(), pathlib.Path(tempfile.gettempdir()) / "so3krates-datasets"):
        target = folder / stem
        if target.is_file():
            return target
        try:
            with gzip.open(src, "rb") as f:  # atomic: concurrent callers never see a partial file
                atomic_write(target, lambda dst: shutil.copyfileobj(f, dst))  # noqa: B023 - called at once
            return target
        except OSError:
            continue
    raise OSError(f"cannot write a decompressed copy of {src} to {cache_dir()} or the temporary directory")


def path(name: str, *, decompressed: bool = True) -> pathlib.Path:
    """Path of the bundled dataset ``name``, readable by ``so3krates.data.read_frames`` and ``ase.io.read``.

    Args:
        name: one of :func:`available`.
        decompressed: return a plain ``.extxyz`` copy in :func:`cache_dir` (fast to read); False: the
            bundled ``.extxyz.gz`` inside the package.
    Raises:
        ValueError: unknown name (the message lists the available ones).
    """
    p = _root() / f"{name}{_SUFFIX}"
    if not p.is_file():
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(available()) or 'none'}")
    return _decompressed(p, name) if decompressed else p
