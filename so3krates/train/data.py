"""From a data file to the graphs the training loop batches: reading, the default dataset, neighbour lists.

Reading and validation are the data layer's (``so3krates.data.read_frames``): its errors name the
file, key and frame. Neighbour lists are built once per structure here, before the first epoch
(:func:`build_graphs`), or, for a stream directory larger than memory, on access (:class:`LazyGraphs`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from so3krates.data import Frames, read_frames
from so3krates.data.stream import StreamDataset, is_stream
from so3krates.graph import Graph, make_graph

DEFAULT_DATASET = "ethanol"


def default_dataset_path() -> Path:
    """The bundled default dataset (``so3krates.datasets.path("ethanol")``, eV and Å)."""
    try:
        from so3krates import datasets
    except ModuleNotFoundError:
        raise FileNotFoundError(
            "no --data given and this installation has no bundled default dataset (so3krates.datasets); "
            "pass --data FILE"
        ) from None
    return Path(datasets.path(DEFAULT_DATASET))


def load_frames(
    path: str | Path,
    energy_unit: str = "eV",
    length_unit: str = "Å",
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
    require_energy: bool = False,
    require_forces: bool = False,
) -> Frames:
    """Read a data file with the data layer (eV and Å out); a stream directory (``so3krates prepare``) is
    opened memory-mapped instead (already eV and Å; the unit and key options do not apply to it)."""
    if is_stream(path):
        stream = StreamDataset(path)
        for label, required in (("energy", require_energy), ("forces", require_forces)):
            if required and getattr(stream, label) is None:
                raise ValueError(f"{path}: the stream has no {label} labels")
        return stream  # type: ignore[return-value] - indexes like Frames
    return read_frames(
        path,
        energy_unit=energy_unit,
        length_unit=length_unit,
        energy_key=energy_key,
        forces_key=forces_key,
        stress_key=stress_key,
        require_energy=require_energy,
        require_forces=require_forces,
    )


def build_graphs(frames: Frames, indices: Sequence[int], r_cut: float, labels: bool = True) -> list[Graph]:
    """Graphs (with neighbour lists) of ``frames`` at ``indices``; labels in eV/Å attached if ``labels``.

    The data layer has validated the structures already, so the per-structure check is skipped.
    """
    graphs = []
    for i in indices:
        i = int(i)
        graphs.append(
            make_graph(
                frames.positions[i],
                frames.numbers[i],
                r_cut,
                cell=frames.cell[i],
                pbc=frames.pbc[i],
                energy=float(frames.energy[i]) if labels and frames.energy is not None else None,
                forces=frames.forces[i] if labels and frames.forces is not None else None,
                stress=frames.stress[i] if labels and frames.stress is not None else None,
                where=f"{frames.source}: frame {i}",
                check=False,
            )
        )
    return graphs


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file: evaluation recognises the training file by it even if it was moved."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def elements_of(frames: Frames, indices: Sequence[int]) -> list[int]:
    """Sorted atomic numbers present in the frames at ``indices`` (one frame at a time: streams too)."""
    seen = np.zeros(256, bool)
    for i in indices:
        seen[np.asarray(frames.numbers[int(i)])] = True
    return [int(z) for z in np.flatnonzero(seen)]


@dataclass(frozen=True)
class GraphSize:
    """What padding needs to know of a graph (``max_pad_sizes`` reads only these two attributes)."""

    n_atoms: int
    n_edges: int


class LazyGraphs(Sequence):
    """The graphs of ``frames`` at ``indices``, each built (neighbour list included) when it is accessed.

    For data larger than memory: only the batches in flight exist as graphs. ``sizes()`` makes one pass
    to count atoms and edges, which fixes the padded batch shape before training.
    """

    def __init__(self, frames: Frames, indices: Sequence[int] | np.ndarray, r_cut: float, labels: bool = True) -> None:
        self.frames, self.indices, self.r_cut, self.labels = frames, np.asarray(indices, np.int64), r_cut, labels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> Graph:  # type: ignore[override]
        return build_graphs(self.frames, [self.indices[k]], self.r_cut, self.labels)[0]

    def sizes(self) -> list[GraphSize]:
        """Atoms and edges of every graph (builds each neighbour list once, keeps only the counts)."""
        return [GraphSize(g.n_atoms, g.n_edges) for g in (self[k] for k in range(len(self)))]
