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

:func:`write_stream` appends chunks of :class:`Frames` (so the input never has to fit in memory at once)
and writes each ``.npy`` header last. :class:`StreamDataset` opens the arrays with ``mmap_mode="r"``:
only the pages of the frames actually read are loaded. It quacks like ``Frames`` for code that indexes
``positions[i]``, ``numbers[i]``, ``forces[i]``, ``energy``, ``cell``, ``pbc``, ``stress`` and ``len()``,
and its :meth:`StreamDataset.prefetch` builds frames or graphs of the next batches in a background thread.

This module depends on numpy and the data layer (and ``so3krates.graph`` for graphs), never on the model.
"""

from __future__ import annotations

import json
import os
import queue
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from so3krates.data.frames import Frames

FORMAT = "so3krates-stream"
VERSION = 1
META_FILE = "meta.json"
_HEADER_BYTES = 256  # reserved .npy header (magic + length + dict), rewritten once the shape is known
_LABELS = ("energy", "forces", "stress")


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


# -- writing ------------------------------------------------------------------------------------------


class _NpyAppender:
    """An ``.npy`` file written row block by row block; the header (with the final shape) goes in last."""

    def __init__(self, path: Path, dtype: np.dtype, row_shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.row_shape, self.rows = path, np.dtype(dtype), row_shape, 0
        self.file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.file.write(b"\0" * _HEADER_BYTES)

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype).reshape(-1, *self.row_shape)
        self.file.write(block.tobytes())
        self.rows += len(block)

    def close(self) -> None:
        shape = (self.rows, *self.row_shape)
        header = repr({"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape})
        prefix = b"\x93NUMPY\x01\x00"
        body_len = _HEADER_BYTES - len(prefix) - 2
        body = header.encode("latin1")
        if len(body) + 1 > body_len:
            raise ValueError(f"{self.path}: .npy header too long for shape {shape}")
        body = body + b" " * (body_len - len(body) - 1) + b"\n"
        self.file.seek(0)
        self.file.write(prefix + struct.pack("<H", body_len) + body)
        self.file.close()


def write_stream(
    frames: Frames | Iterable[Frames], out_dir: str | os.PathLike, progress: bool = True, source: str | None = None
) -> Path:
    """Write frames (one :class:`Frames` or an iterable of chunks) to the stream directory ``out_dir``.

    Every chunk must carry the same labels (energy, forces, stress). Files are written to a temporary
    directory next to ``out_dir`` and renamed at the end, so an interrupted run leaves no half stream.

    Args:
        frames: the data, eV and Å (as read by ``so3krates.data.read_frames``).
        out_dir: the directory to create (must not exist or be empty).
        progress: show a tqdm bar over frames.
        source: recorded in ``meta.json`` (default: the chunks' ``source``).
    Returns:
        ``Path(out_dir)``.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} already exists and is not an empty directory")
    chunks: Iterable[Frames] = [frames] if isinstance(frames, Frames) else frames
    tmp = out.with_name(out.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    for old in tmp.iterdir():
        old.unlink()

    from tqdm.auto import tqdm

    bar = tqdm(desc=f"writing {out.name}", unit=" frames", disable=not progress)
    files = {
        "positions": _NpyAppender(tmp / "positions.npy", np.float64, (3,)),
        "numbers": _NpyAppender(tmp / "numbers.npy", np.uint8, ()),
        "cell": _NpyAppender(tmp / "cell.npy", np.float64, (3, 3)),
        "pbc": _NpyAppender(tmp / "pbc.npy", np.bool_, (3,)),
        "offsets": _NpyAppender(tmp / "offsets.npy", np.int64, ()),
    }
    labels: dict[str, bool] | None = None
    sources: list[str] = []
    n_frames = n_atoms = 0
    files["offsets"].append(np.zeros(1, np.int64))
    try:
        for k, chunk in enumerate(chunks):
            have = {key: getattr(chunk, key) is not None for key in _LABELS}
            if labels is None:
                labels = have
                for key, row in (("energy", ()), ("forces", (3,)), ("stress", (3, 3))):
                    if have[key]:
                        files[key] = _NpyAppender(tmp / f"{key}.npy", np.float64, row)
            elif have != labels:
                raise ValueError(
                    f"chunk {k} ({chunk.source or 'no source'}) has labels "
                    f"{[x for x in _LABELS if have[x]]}, earlier chunks {[x for x in _LABELS if labels[x]]}"
                )
            if chunk.source and chunk.source not in sources:
                sources.append(chunk.source)
            if len(chunk) == 0:
                continue
            for z in chunk.numbers:
                if len(z) and (z.min() < 1 or z.max() > 255):
                    raise ValueError(f"{chunk.source}: atomic numbers must be in 1..255 for the stream format")
            counts = chunk.n_atoms
            files["positions"].append(np.concatenate(chunk.positions))
            files["numbers"].append(np.concatenate(chunk.numbers))
            files["cell"].append(chunk.cell)
            files["pbc"].append(chunk.pbc)
            files["offsets"].append(n_atoms + np.cumsum(counts))
            if labels["energy"]:
                files["energy"].append(chunk.energy)
            if labels["forces"]:
                files["forces"].append(np.concatenate(chunk.forces))
            if labels["stress"]:
                files["stress"].append(chunk.stress)
            n_frames += len(chunk)
            n_atoms += int(counts.sum())
            bar.update(len(chunk))
    finally:
        for f in files.values():
            f.close()
        bar.close()
    labels = labels or dict.fromkeys(_LABELS, False)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "n_frames": n_frames,
        "n_atoms": n_atoms,
        "labels": [key for key in _LABELS if labels[key]],
        "units": {"energy": "eV", "length": "Å"},
        "source": source if source is not None else " + ".join(sources),
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out


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


_DONE = object()


class Prefetcher(Iterator):
    """Runs ``load(item)`` for each item of ``items`` in a daemon thread, ``depth`` results ahead.

    Errors in the thread are raised in the consumer at the batch where they happened.
    """

    def __init__(self, load: Any, items: Iterable[Any], depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be ≥ 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._work, args=(load, iter(items)), daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, load: Any, items: Iterator[Any]) -> None:
        try:
            for item in items:
                if self._stop.is_set() or not self._put(("ok", load(item))):
                    return
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            self._put(("error", err))
            return
        self._put(("done", _DONE))

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Any:
        if self._finished:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == "ok":
            return value
        self._finished = True
        self._thread.join()
        if kind == "error":
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop the background thread (pending results are dropped)."""
        self._stop.set()
        self._finished = True
        self._thread.join(timeout=5)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
