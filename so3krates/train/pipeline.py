"""The training data pipeline: frames → split → graphs → padded batches, prepared in a background thread.

Reading and validation are the data layer's (``so3krates.data.read_frames``): its errors name the
file, key and frame. :func:`open_training_data` reads the frames (or reloads the saved split on resume),
checks labels and elements, and builds every neighbour list once (:func:`build_graphs`), or, for a
stream directory larger than memory, on access (:class:`LazyGraphs`). :func:`batch_shapes` fixes the
padded shape of every batch; :class:`BatchCollator` turns a chunk of indices into the batch a train step
takes, and :func:`prefetch` runs it two batches ahead of the step.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase.data import chemical_symbols

from so3krates import run_dir as rd
from so3krates.data import Frames, make_split, read_frames
from so3krates.data.npz import declared_units
from so3krates.data.stream import Prefetcher, StreamDataset, is_stream
from so3krates.graph import Batch, Graph, PadSizes, collate, make_graph
from so3krates.potential import residual_energy_graphs
from so3krates.train.batching import max_pad_sizes, split_for_devices, stack_batches
from so3krates.train.config import TrainConfig
from so3krates.train.parallel import agree_pad_sizes, process_shard
from so3krates.validation import check_known_elements

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
    energy_unit: str | None = None,
    length_unit: str | None = None,
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
    require_energy: bool = False,
    require_forces: bool = False,
) -> Frames:
    """Read a data file with the data layer (eV and Å out; a unit None is the file's own, else eV/Å); a
    stream directory (``so3krates prepare``) is opened memory-mapped instead (already eV and Å; the unit and
    key options do not apply to it)."""
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
    """What padding needs to know of a graph (:func:`~so3krates.train.batching.max_pad_sizes` reads only these)."""

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


def symbols(elements: Iterable[int]) -> list[str]:
    """Chemical symbols of atomic numbers."""
    return [chemical_symbols[z] for z in elements]


# -- the data of a run --------------------------------------------------------------------------------


@dataclass
class TrainingData:
    """The frames of a run, its split and this process's graphs.

    Attributes:
        path: the data file or stream directory.  frames: eV and Å (or an open stream).
        split: ``train``/``valid``/``test`` frame indices.  elements: atomic numbers of the training frames.
        local_train: this process's shard of ``split["train"]`` (all of it with one process).
        train_graphs, valid_graphs: graphs of ``local_train`` and of the validation frames.
        size_source: atoms and edges of all of those graphs (for the padded shapes).
    """

    path: Path
    frames: Frames | StreamDataset
    split: dict[str, np.ndarray]
    elements: list[int]
    local_train: np.ndarray
    train_graphs: Sequence[Graph]
    valid_graphs: Sequence[Graph]
    size_source: Sequence[Graph | GraphSize]


def open_training_data(
    config: TrainConfig,
    run_dir: Path,
    resume: bool,
    frames: Frames | StreamDataset | None,
    log: Callable[[str], None],
    process_index: int = 0,
    process_count: int = 1,
) -> TrainingData:
    """Read ``config.data`` (unless ``frames`` are given), split it (or reload ``run_dir``'s split on
    resume), check labels and elements, and build the graphs of this process's training shard and of
    the validation frames."""
    path = Path(config.data) if config.data else default_dataset_path()
    if frames is None:
        frames = load_frames(
            path,
            config.energy_unit,
            config.length_unit,
            config.energy_key,
            config.forces_key,
            config.stress_key,
            require_energy=config.beta < 1.0,
            require_forces=config.beta > 0.0,
        )
    for kind, (key, text) in declared_units(path).items():
        log(f"{path}: the file's {key!r} says {text!r}; reading it as {getattr(config, kind + '_unit')}")
    if config.beta < 1.0 and frames.energy is None:
        raise ValueError(f"{path}: no energies in the data, but beta = {config.beta} < 1 needs them")
    if config.beta > 0.0 and frames.forces is None:
        raise ValueError(f"{path}: no forces in the data, but beta = {config.beta} > 0 needs them")
    split = _split(config, run_dir, resume, len(frames), path)
    if len(split["train"]) < process_count:
        raise ValueError(f"{path}: {len(split['train'])} training frames cannot be shared by {process_count} processes")
    elements = _checked_elements(frames, split, config.model.max_atomic_number, path, log)
    local_train = process_shard(split["train"], process_index, process_count)
    r_cut = config.model.r_cut
    if isinstance(frames, StreamDataset):
        log(f"streaming {path}: neighbour lists (r_cut = {r_cut} Å) are built batch by batch")
        lazy_train, lazy_valid = LazyGraphs(frames, local_train, r_cut), LazyGraphs(frames, split["valid"], r_cut)
        log(f"counting atoms and edges of {len(lazy_train) + len(lazy_valid)} structures for the padded shape")
        return TrainingData(
            path, frames, split, elements, local_train, lazy_train, lazy_valid, lazy_train.sizes() + lazy_valid.sizes()
        )
    log(f"building neighbour lists (r_cut = {r_cut} Å) for {len(local_train) + len(split['valid'])} structures")
    train_graphs = build_graphs(frames, local_train, r_cut)
    valid_graphs = build_graphs(frames, split["valid"], r_cut)
    return TrainingData(
        path, frames, split, elements, local_train, train_graphs, valid_graphs, train_graphs + valid_graphs
    )


def _split(config: TrainConfig, run_dir: Path, resume: bool, n_frames: int, path: Path) -> dict[str, np.ndarray]:
    """The saved split of a resumed run (checked against the data), else a new seeded one."""
    if resume and (run_dir / rd.SPLIT_FILE).exists():
        split = rd.read_split(run_dir)
        top = max((int(v.max()) for v in split.values() if len(v)), default=-1)
        if top >= n_frames:
            raise ValueError(
                f"{run_dir / rd.SPLIT_FILE} refers to frame {top} but {path} has {n_frames} frames: "
                "the data changed since the run started"
            )
    else:
        split = make_split(n_frames, config.n_train, config.n_valid, config.n_test, seed=config.seed)
    if len(split["train"]) == 0:
        raise ValueError(f"{path}: the split leaves no training frames")
    return split


def _checked_elements(
    frames: Frames, split: dict[str, np.ndarray], max_atomic_number: int, path: Path, log: Callable[[str], None]
) -> list[int]:
    """The training frames' elements; an error if validation frames (a warning if test frames) have others."""
    elements = elements_of(frames, split["train"])
    unseen = sorted(set(elements_of(frames, split["valid"])) - set(elements))
    if unseen:
        raise ValueError(
            f"{path}: element(s) {symbols(unseen)} occur in validation frames but in no training frame; "
            "use more training frames or another --seed"
        )
    unseen_test = sorted(set(elements_of(frames, split["test"])) - set(elements))
    if unseen_test:
        log(
            f"warning: element(s) {symbols(unseen_test)} occur only in test frames; the model will not know them "
            "and evaluation will refuse those frames"
        )
    check_known_elements(elements, None, max_atomic_number, str(path))
    return elements


# -- padded batches -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchShapes:
    """Batch sizes and padded shapes of a run, the same on every process.

    Attributes:
        batch_size: structures per global training batch.  valid_batch: per evaluation batch.
        sizes: the padded shape of a training batch on one device (also the initialisation batch).
        valid_sizes: of an evaluation batch (validation, and the energy constant over the training set).
        local_batch: this process's part of each global batch.
        steps_per_epoch: steps of every process per epoch (those of the largest shard).
    """

    batch_size: int
    valid_batch: int
    sizes: PadSizes
    valid_sizes: PadSizes
    local_batch: int
    steps_per_epoch: int


def batch_shapes(config: TrainConfig, data: TrainingData, process_count: int = 1) -> BatchShapes:
    """One padded shape for every batch (the largest batch any epoch can draw), agreed by all processes."""
    n_train, all_pairs = len(data.split["train"]), config.model.nonlocal_correction
    batch_size = min(config.batch_size, n_train)
    valid_batch = config.valid_batch_size or config.batch_size
    sizes = agree_pad_sizes(max_pad_sizes(data.size_source, batch_size, all_pairs))
    # The evaluation step also runs over the training set (energy constant), so it must fit both.
    valid_sizes = (
        sizes if valid_batch == batch_size else agree_pad_sizes(max_pad_sizes(data.size_source, valid_batch, all_pairs))
    )
    local_batch = math.ceil(batch_size / process_count)
    steps_per_epoch = math.ceil(math.ceil(n_train / process_count) / local_batch)
    return BatchShapes(batch_size, valid_batch, sizes, valid_sizes, local_batch, steps_per_epoch)


@dataclass
class BatchCollator:
    """A chunk of indices into ``graphs`` → (structures, the batch a train step takes).

    Energy labels become residuals against ``normalization``. With ``n_devices`` None the batch is one
    plain batch of ``sizes``; else the chunk is split into ``n_devices`` parts stacked along a leading axis.
    """

    graphs: Sequence[Graph]
    normalization: dict[str, Any]
    sizes: PadSizes
    all_pairs: bool
    n_devices: int | None = None

    def __call__(self, chunk: np.ndarray) -> tuple[int, Batch]:
        members = residual_energy_graphs([self.graphs[int(k)] for k in chunk], self.normalization)
        if self.n_devices is None:
            return len(chunk), collate(members, self.sizes, all_pairs=self.all_pairs)
        return len(chunk), stack_batches(split_for_devices(members, self.n_devices), self.sizes, self.all_pairs)


def prefetch(collator: BatchCollator, chunks: Sequence[np.ndarray]) -> Prefetcher:
    """Collate ``chunks`` in a background thread, two batches ahead of the consumer (a context manager)."""
    return Prefetcher(collator, chunks, depth=2)
