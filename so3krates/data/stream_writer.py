"""Write the on-disk streaming format (see :mod:`so3krates.data.stream`): flat ``.npy`` arrays and ``meta.json``.

Chunks of :class:`~so3krates.data.Frames` are appended one by one (the input never has to fit in memory at
once) and each ``.npy`` header is written last, once the shape is known.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from so3krates.data.frames import Frames
from so3krates.validation import check_atomic_numbers

FORMAT = "so3krates-stream"
VERSION = 1
META_FILE = "meta.json"
LABELS = ("energy", "forces", "stress")
_HEADER_BYTES = 256  # reserved .npy header (magic + length + dict), rewritten once the shape is known
_LABEL_ROWS = {"energy": (), "forces": (3,), "stress": (3, 3)}


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
            labels = _chunk_labels(chunk, k, labels, files, tmp)
            if chunk.source and chunk.source not in sources:
                sources.append(chunk.source)
            n_atoms = _append_chunk(files, chunk, labels, n_atoms)
            n_frames += len(chunk)
            bar.update(len(chunk))
    finally:
        for f in files.values():
            f.close()
        bar.close()
    labels = labels or dict.fromkeys(LABELS, False)
    _write_meta(tmp, n_frames, n_atoms, labels, source if source is not None else " + ".join(sources))
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out


def _chunk_labels(
    chunk: Frames, k: int, labels: dict[str, bool] | None, files: dict[str, _NpyAppender], tmp: Path
) -> dict[str, bool]:
    """The labels of chunk ``k``: the first chunk's open their files, later chunks must match them."""
    have = {key: getattr(chunk, key) is not None for key in LABELS}
    if labels is None:
        for key in LABELS:
            if have[key]:
                files[key] = _NpyAppender(tmp / f"{key}.npy", np.float64, _LABEL_ROWS[key])
        return have
    if have != labels:
        raise ValueError(
            f"chunk {k} ({chunk.source or 'no source'}) has labels "
            f"{[x for x in LABELS if have[x]]}, earlier chunks {[x for x in LABELS if labels[x]]}"
        )
    return labels


def _append_chunk(files: dict[str, _NpyAppender], chunk: Frames, labels: dict[str, bool], n_atoms: int) -> int:
    """Append one chunk's arrays; returns the number of atoms written so far."""
    if len(chunk) == 0:
        return n_atoms
    # atomic numbers are stored as uint8: 1..118 fit
    check_atomic_numbers(chunk.numbers, chunk.source or "frames", range(len(chunk)))
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
    return n_atoms + int(counts.sum())


def _write_meta(tmp: Path, n_frames: int, n_atoms: int, labels: dict[str, bool], source: str) -> None:
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "n_frames": n_frames,
        "n_atoms": n_atoms,
        "labels": [key for key in LABELS if labels[key]],
        "units": {"energy": "eV", "length": "Å"},
        "source": source,
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
