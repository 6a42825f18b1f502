"""On-disk streaming format for data sets larger than memory: flat, memory-mapped ``.npy`` arrays.

A stream directory holds (M frames, A = Σ n_i atoms; eV and Å, as :class:`~so3krates.data.Frames`)::

    meta.json        format, version, n_frames, n_atoms, labels present, source
    offsets.npy      (M+1,) int64: frame i is atoms offsets[i]:offsets[i+1]
    positions.npy    (A, 3) float64, Å
    numbers.npy      (A,) uint8 atomic numbers
    cell.npy         (M, 3, 3) float64, Å        pbc.npy (M, 3) bool
    energy.npy       (M,) float64, eV            (only if the data has energies)
    forces.npy       (A, 3) float64, eV/Å        (only if the data has forces)
    stress.npy       (M, 3, 3) float64, eV/Å³    (only if the data has stress)

:func:`write_stream` (:mod:`so3krates.data.stream_writer`) appends chunks of :class:`Frames` (so the
input never has to fit in memory at once) and writes each ``.npy`` header last. :class:`StreamDataset`
opens the arrays with ``mmap_mode="r"``: only the pages of the frames actually read are loaded. It quacks
like ``Frames`` for code that indexes ``positions[i]``, ``numbers[i]``, ``forces[i]``, ``energy``,
``cell``, ``pbc``, ``stress`` and ``len()``, and its :meth:`StreamDataset.prefetch` builds frames or
graphs of the next batches in a background thread (:class:`~so3krates.data.prefetch.Prefetcher`).

This module depends on numpy and the data layer (and ``so3krates.graph`` for graphs), never on the model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from so3krates.data.frames import Frames
from so3krates.data.prefetch import Prefetcher
from so3krates.data.stream_writer import FORMAT, META_FILE, VERSION, write_stream

__all__ = [
    "FORMAT",
    "META_FILE",
    "VERSION",
    "Frame",
    "Prefetcher",
    "RaggedView",
    "StreamDataset",
    "is_stream",
    "write_stream",
]


@dataclass
class Frame:
    """One structure from a stream (numpy arrays; labels None when the data set has none)."""

    positions: np.ndarray
    numbers: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)


# -- reading ------------------------------------------------------------------------------------------


class RaggedView(Sequence):
    """``view[i]`` is rows ``offsets[i]:offsets[i+1]`` of a flat (memory-mapped) array."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray, dtype: Any = None) -> None:
        self.flat, self.offsets, self.dtype = flat, offsets, dtype

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        if not isinstance(i, int | np.integer):
            raise TypeError("RaggedView takes one integer index")
        m = len(self)
        if not -m <= i < m:
            raise IndexError(f"frame {i} out of range for {m} frames")
        i = int(i) % m
        rows = self.flat[self.offsets[i] : self.offsets[i + 1]]
        return np.array(rows, dtype=self.dtype)  # a copy in memory, not a view into the file


def is_stream(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a stream directory (has a ``meta.json`` of this format)."""
    meta = Path(path) / META_FILE
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("format") == FORMAT
    except (ValueError, OSError):
        return False


class StreamDataset:
    """A stream directory opened read-only with memory maps; behaves like :class:`Frames` for indexing.

    Attributes:
        path: the directory.  meta: the contents of ``meta.json``.  source: where the frames came from.
        positions, numbers, forces: sequences of per-frame arrays (read from disk on access).
        energy, cell, pbc, stress: memory-mapped arrays (M,), (M, 3, 3), (M, 3), (M, 3, 3), or None.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path}: no such stream directory (create one with `so3krates prepare`)")
        if not is_stream(self.path):
            raise ValueError(f"{self.path}: not a so3krates stream directory (no valid {META_FILE})")
        self.meta: dict[str, Any] = json.loads((self.path / META_FILE).read_text(encoding="utf-8"))
        if int(self.meta.get("version", 0)) > VERSION:
            raise ValueError(f"{self.path}: stream format version {self.meta['version']} is newer than {VERSION}")
        self.source = str(self.path)
        self.offsets = np.asarray(self._load("offsets"))
        m = len(self.offsets) - 1
        if m != int(self.meta["n_frames"]) or int(self.offsets[-1]) != int(self.meta["n_atoms"]):
            raise ValueError(f"{self.path}: offsets.npy does not match {META_FILE} (truncated or mixed files?)")
        labels = set(self.meta.get("labels", []))
        self.positions = RaggedView(self._load("positions"), self.offsets, np.float64)
        self.numbers = RaggedView(self._load("numbers"), self.offsets, np.int64)
        self.cell = self._load("cell")
        self.pbc = self._load("pbc")
        self.energy = self._load("energy") if "energy" in labels else None
        self.forces = RaggedView(self._load("forces"), self.offsets, np.float64) if "forces" in labels else None
        self.stress = self._load("stress") if "stress" in labels else None

    def _load(self, name: str) -> np.ndarray:
        file = self.path / f"{name}.npy"
        if not file.is_file():
            raise ValueError(f"{self.path}: {file.name} is missing")
        return np.load(file, mmap_mode="r")

    def __len__(self) -> int:
        """Number of frames M."""
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> Frame:
        return self.frame(i)

    def __repr__(self) -> str:
        return f"StreamDataset({str(self.path)!r}, {len(self)} frames, labels={self.meta.get('labels', [])})"

    @property
    def n_atoms(self) -> np.ndarray:
        """(M,) int64 atoms per frame."""
        return np.diff(self.offsets).astype(np.int64)

    @property
    def elements(self) -> list[int]:
        """Sorted unique atomic numbers over all frames (one pass over ``numbers.npy``, blockwise)."""
        flat = self.numbers.flat
        seen = np.zeros(256, bool)
        for start in range(0, len(flat), 1 << 24):
            seen[np.asarray(flat[start : start + (1 << 24)])] = True
        return [int(z) for z in np.nonzero(seen)[0]]

    def frame(self, i: int) -> Frame:
        """Frame ``i`` (negative counts from the end) as in-memory arrays."""
        m = len(self)
        if not -m <= int(i) < m:
            raise IndexError(f"{self.path}: frame {i} out of range for {m} frames")
        i = int(i) % m
        return Frame(
            positions=self.positions[i],
            numbers=self.numbers[i],
            cell=np.array(self.cell[i], dtype=np.float64),
            pbc=np.array(self.pbc[i], dtype=bool),
            energy=None if self.energy is None else float(self.energy[i]),
            forces=None if self.forces is None else self.forces[i],
            stress=None if self.stress is None else np.array(self.stress[i], dtype=np.float64),
        )

    def subset(self, indices: Sequence[int] | np.ndarray) -> Frames:
        """The frames at ``indices`` as in-memory :class:`Frames` (order kept, repeats allowed)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        frames = [self.frame(int(i)) for i in idx]
        return Frames(
            positions=[f.positions for f in frames],
            numbers=[f.numbers for f in frames],
            energy=None if self.energy is None else np.array([f.energy for f in frames], dtype=np.float64),
            forces=None if self.forces is None else [f.forces for f in frames],
            cell=np.array([f.cell for f in frames]).reshape(len(idx), 3, 3),
            pbc=np.array([f.pbc for f in frames]).reshape(len(idx), 3),
            stress=None if self.stress is None else np.array([f.stress for f in frames]).reshape(len(idx), 3, 3),
            source=self.source,
        )

    def to_frames(self) -> Frames:
        """Everything in memory (only for data that fits)."""
        return self.subset(np.arange(len(self)))

    def graphs(self, indices: Sequence[int] | np.ndarray, r_cut: float, labels: bool = True) -> list:
        """:class:`~so3krates.graph.Graph` objects (with neighbour lists) of the frames at ``indices``."""
        from so3krates.graph import make_graph

        out = []
        for i in np.asarray(indices, dtype=np.int64).reshape(-1):
            f = self.frame(int(i))
            out.append(
                make_graph(
                    f.positions,
                    f.numbers,
                    r_cut,
                    cell=f.cell,
                    pbc=f.pbc,
                    energy=f.energy if labels else None,
                    forces=f.forces if labels else None,
                    stress=f.stress if labels else None,
                    where=f"{self.source}: frame {int(i)}",
                    check=False,
                )
            )
        return out

    def prefetch(
        self, index_batches: Iterable[Sequence[int] | np.ndarray], r_cut: float | None = None, depth: int = 2
    ) -> Prefetcher:
        """Iterate over ``index_batches`` with a background thread reading ahead ``depth`` batches.

        Each item is a list of :class:`Frame` (``r_cut`` None) or of Graphs with neighbour lists built
        at ``r_cut``. Use as a context manager (or call ``close()``) to stop the thread early.
        """
        if r_cut is None:

            def load(idx: Sequence[int] | np.ndarray) -> list:
                return [self.frame(int(i)) for i in np.asarray(idx).reshape(-1)]
        else:

            def load(idx: Sequence[int] | np.ndarray) -> list:
                return self.graphs(idx, r_cut)

        return Prefetcher(load, index_batches, depth)
