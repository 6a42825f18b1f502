"""Padded batches: one padded shape per run, epoch orders, index chunks, per-device parts.

Every batch of a run is collated to one :class:`~so3krates.graph.PadSizes` that fits the largest batch
any epoch can draw (:func:`max_pad_sizes`), so the train step and the evaluation step compile once each.
For data-parallel steps a global batch is split into one part per device, each collated to the same
per-device sizes (:func:`max_device_pad_sizes`) and stacked along a new leading axis (:func:`stack_batches`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import jax
import numpy as np

from so3krates.graph import Batch, Graph, PadSizes, bucket, collate, stackable


class Sized(Protocol):
    """What padding needs to know of a graph: its atoms and edges."""

    n_atoms: int
    n_edges: int


def max_pad_sizes(graphs: Sequence[Sized], batch_size: int, all_pairs: bool = False) -> PadSizes:
    """Padded sizes that fit *any* ``batch_size`` of ``graphs``: the largest atoms, edges and pairs.

    One shape for every batch of an epoch means one jit compilation for the whole run, at the price
    of padding when structure sizes vary a lot.
    """
    b = min(batch_size, len(graphs))
    atoms = sorted((g.n_atoms for g in graphs), reverse=True)[:b]
    edges = sorted((g.n_edges for g in graphs), reverse=True)[:b]
    pairs = sorted((g.n_atoms * (g.n_atoms - 1) for g in graphs), reverse=True)[:b] if all_pairs else [0]
    return PadSizes(
        n_atoms=bucket(sum(atoms) + 1),
        n_edges=bucket(sum(edges) + 1),
        n_graphs=batch_size + 1,
        n_pairs=bucket(sum(pairs) + 1) if all_pairs else 0,
    )


def max_device_pad_sizes(
    graphs: Sequence[Sized], per_device: int, all_pairs: bool = False, minimum: int = 8
) -> PadSizes:
    """Sizes that fit any ``per_device`` structures of ``graphs``: the largest ones, plus padding."""
    k = min(per_device, len(graphs))
    atoms = np.sort([g.n_atoms for g in graphs])[::-1][:k].sum()
    edges = np.sort([g.n_edges for g in graphs])[::-1][:k].sum()
    pairs = np.sort([g.n_atoms * (g.n_atoms - 1) for g in graphs])[::-1][:k].sum() if all_pairs else 0
    return PadSizes(
        n_atoms=bucket(int(atoms) + 1, minimum),
        n_edges=bucket(int(edges) + 1, minimum),
        n_graphs=per_device + 1,
        n_pairs=bucket(int(pairs) + 1, minimum) if all_pairs else 0,
    )


def batches(indices: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Consecutive chunks of ``indices`` (the last may be shorter)."""
    return [indices[k : k + batch_size] for k in range(0, len(indices), batch_size)]


def epoch_chunks(
    n_graphs: int, batch_size: int, n_steps: int, seed: int, epoch: int, process_index: int, process_count: int
) -> list[np.ndarray]:
    """This process's batches of one epoch: index chunks of a seeded permutation of its ``n_graphs``.

    The permutation comes from ``default_rng([seed, epoch])`` (with one process: the whole training set's,
    as without data parallelism), so a resumed run draws the same batches. The list is padded with empty
    chunks to ``n_steps``: every process takes the same number of steps.
    """
    seed_seq = [seed, epoch] if process_count == 1 else [seed, epoch, process_index]
    order = np.random.default_rng(seed_seq).permutation(n_graphs)
    chunks = batches(order, batch_size)
    return chunks + [order[:0]] * (n_steps - len(chunks))


def split_for_devices(graphs: Sequence[Graph], num_devices: int) -> list[list[Graph]]:
    """Split a global batch into ``num_devices`` contiguous parts of near-equal structure counts."""
    if num_devices < 1:
        raise ValueError(f"num_devices must be ≥ 1, got {num_devices}")
    bounds = np.linspace(0, len(graphs), num_devices + 1).round().astype(int)
    return [list(graphs[bounds[d] : bounds[d + 1]]) for d in range(num_devices)]


def stack_batches(parts: Sequence[Sequence[Graph]], sizes: PadSizes, all_pairs: bool = False) -> Batch:
    """Collate every part to the same ``sizes`` and stack them: each array gets a leading axis (D, ...).

    An empty part becomes an all-padding batch (it contributes nothing to the loss).
    """
    collated = [collate(list(part), sizes, all_pairs=all_pairs) for part in parts]
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *stackable(collated))
