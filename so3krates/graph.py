"""Structures as graphs, and many graphs as one flat, padded batch.

A :class:`Graph` is one structure (numpy, host side) with its neighbour list. :func:`collate` packs
several graphs into a :class:`Batch` of fixed, bucketed sizes: atoms, edges and graphs are padded so
that ``jit`` sees only a few distinct shapes. Padding atoms live in a padding graph (the last graph),
padding edges join a padding atom to itself, and every mask is False there, so padding changes
nothing in the energies and forces of the real structures.

Neighbour lists come from :mod:`so3krates.neighbour_list` (vesin), input checks from
:mod:`so3krates.validation`. A graph and a batch record the cutoff their neighbour lists were built with
(``r_cut``), and the potential refuses a batch built with a smaller cutoff than its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import flax.struct
import numpy as np

from so3krates.neighbour_list import edges_are_paired, neighbour_list, pair_edges, paired_slots
from so3krates.validation import MAX_ATOMIC_NUMBER, MIN_DISTANCE, check_structure

__all__ = [
    "MAX_ATOMIC_NUMBER",
    "MIN_DISTANCE",
    "Batch",
    "Graph",
    "PadSizes",
    "bucket",
    "check_structure",
    "collate",
    "edges_are_paired",
    "graph_from_atoms",
    "make_graph",
    "neighbour_list",
    "pad_sizes_for",
    "pair_edges",
    "paired_slots",
    "stackable",
]


@dataclass
class Graph:
    """One structure with its neighbour list and optional labels (numpy, eV and Å).

    Attributes:
        positions: (n, 3).  numbers: (n,).  cell: (3, 3), zeros for molecules.  pbc: (3,).
        edge_i, edge_j: (E,) centre and neighbour atom of each directed edge; :func:`make_graph` orders them
            with :func:`pair_edges` (the second half reverses the first).
        edge_shift: (E, 3) integer cell shifts, r_ij = r_j − r_i + edge_shift @ cell.
        energy: scalar or None.  forces: (n, 3) or None.  stress: (3, 3) or None.
        r_cut: the cutoff the edges were built with, Å: they hold every pair closer than it (None: not known).
    """

    positions: np.ndarray
    numbers: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    edge_i: np.ndarray
    edge_j: np.ndarray
    edge_shift: np.ndarray
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    r_cut: float | None = None

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    @property
    def n_edges(self) -> int:
        return len(self.edge_i)


def make_graph(
    positions: np.ndarray,
    numbers: np.ndarray,
    r_cut: float,
    cell: np.ndarray | None = None,
    pbc: np.ndarray | bool | None = None,
    energy: float | None = None,
    forces: np.ndarray | None = None,
    stress: np.ndarray | None = None,
    where: str = "structure",
    check: bool = True,
) -> Graph:
    """Validate a structure (:func:`~so3krates.validation.check_structure`) and build its neighbour list
    within ``r_cut``, paired (:func:`~so3krates.neighbour_list.pair_edges`)."""
    positions = np.asarray(positions, dtype=np.float64)
    numbers = np.asarray(numbers, dtype=np.int32)
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64).reshape(3, 3)
    pbc = np.zeros(3, bool) if pbc is None else np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    if check:
        check_structure(positions, numbers, cell, pbc, where)
    i, j, shifts = neighbour_list(positions, cell, pbc, r_cut)
    order = pair_edges(i, j, shifts)
    return Graph(positions, numbers, cell, pbc, i[order], j[order], shifts[order], energy, forces, stress, float(r_cut))


def graph_from_atoms(atoms, r_cut: float, where: str = "structure", check: bool = True) -> Graph:  # noqa: ANN001
    """Build a :class:`Graph` from an ``ase.Atoms`` (labels are not read; see the data readers)."""
    return make_graph(
        atoms.get_positions(),
        atoms.get_atomic_numbers(),
        r_cut,
        cell=np.asarray(atoms.get_cell()),
        pbc=atoms.get_pbc(),
        where=where,
        check=check,
    )


@flax.struct.dataclass
class Batch:
    """Many structures as one flat, padded graph (arrays are numpy or jax; shapes are static).

    N atoms, E edges and G graphs, all including padding; the last graph is always a padding graph.

    Attributes:
        positions: (N, 3) Å.  numbers: (N,) atomic numbers (0 for padding atoms).
        node_graph: (N,) graph index of every atom.  node_mask: (N,) True for real atoms.
        edge_i, edge_j: (E,) centre and neighbour atom.  edge_shift: (E, 3) integer cell shifts.
        edge_mask: (E,) True for real edges.
        cell: (G, 3, 3).  pbc: (G, 3).  graph_mask: (G,) True for real graphs.  n_atoms: (G,).
        energy: (G,) eV.  forces: (N, 3) eV/Å.  stress: (G, 3, 3) eV/Å³ (labels, zero when absent).
        has_energy, has_forces, has_stress: (G,) which labels are present.
        pair_i, pair_j, pair_mask: (P,) all ordered pairs i ≠ j within each structure; empty unless
            the batch was built with ``all_pairs=True`` (for the non-local correction, eq. 14).
        edges_paired: static; True if edge e < E/2 and edge E/2 + e are each other's reverse (padding
            edges included), so that the model computes per-pair quantities on the first half only.
        r_cut: static; the cutoff the edges were built with, Å (the smallest of the graphs' that record
            one; None: not known). The potential refuses a batch whose r_cut is below its own.
    """

    positions: np.ndarray
    numbers: np.ndarray
    node_graph: np.ndarray
    node_mask: np.ndarray
    edge_i: np.ndarray
    edge_j: np.ndarray
    edge_shift: np.ndarray
    edge_mask: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    graph_mask: np.ndarray
    n_atoms: np.ndarray
    energy: np.ndarray
    forces: np.ndarray
    stress: np.ndarray
    has_energy: np.ndarray
    has_forces: np.ndarray
    has_stress: np.ndarray
    pair_i: np.ndarray
    pair_j: np.ndarray
    pair_mask: np.ndarray
    edges_paired: bool = flax.struct.field(pytree_node=False, default=False)
    r_cut: float | None = flax.struct.field(pytree_node=False, default=None)

    @property
    def num_graphs(self) -> int:
        return self.graph_mask.shape[0]


def bucket(n: int, minimum: int = 8) -> int:
    """Smallest size ≥ n that is a multiple of max(p/8, 8), p the largest power of two ≤ n (and ≥ ``minimum``).

    Sizes grow in steps of at most 12.5 %, so padding (which costs the same work per entry as real atoms
    and edges) wastes little, while a long training run or MD sees only a handful of distinct shapes (each
    a jit recompilation). Sizes are multiples of 8, hence even, as paired edges need.
    """
    if n <= minimum:
        return minimum
    step = max(2 ** math.floor(math.log2(n)) // 8, 8)
    return -(-n // step) * step


@dataclass(frozen=True)
class PadSizes:
    """Static sizes of a padded batch: atoms, edges, graphs and (optional) all-pairs entries."""

    n_atoms: int
    n_edges: int
    n_graphs: int
    n_pairs: int = 0


def pad_sizes_for(graphs: Sequence[Graph], n_graphs: int | None = None, all_pairs: bool = False) -> PadSizes:
    """Bucketed sizes that fit ``graphs`` plus at least one padding atom and one padding graph."""
    n_atoms = sum(g.n_atoms for g in graphs)
    n_edges = sum(g.n_edges for g in graphs)
    n_pairs = sum(g.n_atoms * (g.n_atoms - 1) for g in graphs) if all_pairs else 0
    return PadSizes(
        n_atoms=bucket(n_atoms + 1),
        n_edges=bucket(n_edges + 1),
        n_graphs=(n_graphs if n_graphs is not None else len(graphs)) + 1,
        n_pairs=bucket(n_pairs + 1) if all_pairs else 0,
    )


def collate(graphs: Sequence[Graph], sizes: PadSizes | None = None, all_pairs: bool = False) -> Batch:
    """Pack graphs into one padded :class:`Batch` (numpy arrays; jit converts them on the device).

    Args:
        graphs: the structures.
        sizes: padded sizes; by default the bucketed :func:`pad_sizes_for`.
        all_pairs: also list all ordered atom pairs of each structure (non-local correction).
    """
    sizes = sizes or pad_sizes_for(graphs, all_pairs=all_pairs)
    n_real_atoms = sum(g.n_atoms for g in graphs)
    n_real_edges = sum(g.n_edges for g in graphs)
    N, E, G = sizes.n_atoms, sizes.n_edges, sizes.n_graphs
    if n_real_atoms >= N or n_real_edges > E or len(graphs) >= G:
        raise ValueError(
            f"batch of {len(graphs)} structures ({n_real_atoms} atoms, {n_real_edges} edges) does not "
            f"fit the padded sizes {sizes} (one padding atom and one padding graph are required)"
        )
    # Paired layout (each graph's forward edges in the first half, their reverses at the same place in
    # the second) when every graph's edges are paired, as make_graph builds them.
    paired = E % 2 == 0 and all(edges_are_paired(g.edge_i, g.edge_j, g.edge_shift) for g in graphs)
    fields = _padded_fields(N, E, G)
    _place_graphs(fields, graphs, paired)
    pair_i, pair_j, pair_mask = _all_pairs(graphs, sizes, N - 1) if all_pairs else _no_pairs()
    cutoffs = [g.r_cut for g in graphs if g.r_cut is not None]
    return Batch(
        **fields,
        pair_i=pair_i,
        pair_j=pair_j,
        pair_mask=pair_mask,
        edges_paired=paired,
        r_cut=float(min(cutoffs)) if cutoffs else None,
    )


def stackable(batches: Sequence[Batch]) -> list[Batch]:
    """``batches`` with the same static fields, so that they stack into one pytree (one per device).

    The paired edge layout only if every batch has it (the plain layout is valid for paired edges too),
    and the smallest recorded cutoff (an empty, all-padding batch records none).
    """
    paired = all(b.edges_paired for b in batches)
    cutoffs = [b.r_cut for b in batches if b.r_cut is not None]
    r_cut = min(cutoffs) if cutoffs else None
    return [b.replace(edges_paired=paired, r_cut=r_cut) for b in batches]


def _padded_fields(N: int, E: int, G: int) -> dict[str, np.ndarray]:
    """The arrays of an all-padding batch of N atoms, E edges and G graphs (no all-pairs lists).

    Padding edges join the last (padding) atom to itself; every padding atom is in the last graph;
    every graph has a unit cell, so that no volume or inverse is ever zero.
    """
    return {
        "positions": np.zeros((N, 3)),
        "numbers": np.zeros(N, np.int32),
        "node_graph": np.full(N, G - 1, np.int32),
        "node_mask": np.zeros(N, bool),
        "edge_i": np.full(E, N - 1, np.int32),
        "edge_j": np.full(E, N - 1, np.int32),
        "edge_shift": np.zeros((E, 3), np.int32),
        "edge_mask": np.zeros(E, bool),
        "cell": np.tile(np.eye(3), (G, 1, 1)),
        "pbc": np.zeros((G, 3), bool),
        "graph_mask": np.zeros(G, bool),
        "n_atoms": np.zeros(G, np.int32),
        "energy": np.zeros(G),
        "forces": np.zeros((N, 3)),
        "stress": np.zeros((G, 3, 3)),
        "has_energy": np.zeros(G, bool),
        "has_forces": np.zeros(G, bool),
        "has_stress": np.zeros(G, bool),
    }


def _place_graphs(fields: dict[str, np.ndarray], graphs: Sequence[Graph], paired: bool) -> None:
    """Write the atoms, edges and labels of ``graphs`` into the padded arrays, in order."""
    f = fields
    E = len(f["edge_i"])
    a = e = 0
    for g, graph in enumerate(graphs):
        n, m = graph.n_atoms, graph.n_edges
        atoms = slice(a, a + n)
        f["positions"][atoms], f["numbers"][atoms] = graph.positions, graph.numbers
        f["node_graph"][atoms], f["node_mask"][atoms] = g, True
        place = paired_slots(e, m, E) if paired else np.arange(e, e + m)
        f["edge_i"][place], f["edge_j"][place] = graph.edge_i + a, graph.edge_j + a
        f["edge_shift"][place], f["edge_mask"][place] = graph.edge_shift, True
        f["cell"][g], f["pbc"][g], f["graph_mask"][g], f["n_atoms"][g] = graph.cell, graph.pbc, True, n
        if graph.energy is not None:
            f["energy"][g], f["has_energy"][g] = graph.energy, True
        if graph.forces is not None:
            f["forces"][atoms], f["has_forces"][g] = graph.forces, True
        if graph.stress is not None:
            f["stress"][g], f["has_stress"][g] = graph.stress, True
        a += n
        e += m


def _no_pairs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, bool)


def _all_pairs(graphs: Sequence[Graph], sizes: PadSizes, pad_atom: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pair_i, pair_j, pair_mask) of all ordered pairs i ≠ j within each graph, padded to ``sizes.n_pairs``."""
    lists, a = [], 0
    for graph in graphs:
        ii, jj = np.nonzero(~np.eye(graph.n_atoms, dtype=bool))
        lists.append((ii + a, jj + a))
        a += graph.n_atoms
    pi = np.concatenate([p[0] for p in lists]) if lists else np.zeros(0, np.int32)
    pj = np.concatenate([p[1] for p in lists]) if lists else np.zeros(0, np.int32)
    P = max(sizes.n_pairs, 1)
    if len(pi) > P:
        raise ValueError(f"{len(pi)} atom pairs do not fit the padded size {P}")
    pair_i = np.full(P, pad_atom, np.int32)
    pair_j = np.full(P, pad_atom, np.int32)
    pair_mask = np.zeros(P, bool)
    pair_i[: len(pi)], pair_j[: len(pj)], pair_mask[: len(pi)] = pi, pj, True
    return pair_i, pair_j, pair_mask
