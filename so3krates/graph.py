"""Structures as graphs, and many graphs as one flat, padded batch.

A :class:`Graph` is one structure (numpy, host side) with its neighbour list. :func:`collate` packs
several graphs into a :class:`Batch` of fixed, bucketed sizes: atoms, edges and graphs are padded so
that ``jit`` sees only a few distinct shapes. Padding atoms live in a padding graph (the last graph),
padding edges join a padding atom to itself, and every mask is False there, so padding changes
nothing in the energies and forces of the real structures.

Neighbour lists come from vesin (a compiled library): molecules, periodic cells of any shape and
cells smaller than 2·r_cut (several images of the same atom are then neighbours).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import flax.struct
import numpy as np
import vesin

MIN_DISTANCE = 0.1  # Å: closer atoms are almost surely a corrupted structure, not chemistry
MAX_ATOMIC_NUMBER = 118


def neighbour_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, r_cut: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full neighbour list (both i→j and j→i) within r_cut, with periodic images.

    Args:
        positions: (n, 3) Å.
        cell: (3, 3) lattice vectors as rows, Å (ignored where pbc is False).
        pbc: (3,) bools.
        r_cut: cutoff, Å.
    Returns:
        (i, j, shifts): int arrays (E,), (E,) and (E, 3) such that
        r_ij = positions[j] − positions[i] + shifts @ cell, sorted by i.
    """
    pbc = np.asarray(pbc, dtype=bool)
    box = np.asarray(cell, dtype=np.float64) if pbc.any() else np.zeros((3, 3))
    calculator = vesin.NeighborList(cutoff=float(r_cut), full_list=True, sorted=True)
    i, j, shifts = calculator.compute(
        points=np.asarray(positions, dtype=np.float64),
        box=box,
        periodic=pbc if pbc.any() else False,
        quantities="ijS",
    )
    return i.astype(np.int32), j.astype(np.int32), shifts.astype(np.int32)


def pair_edges(i: np.ndarray, j: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Order of a full neighbour list that puts every edge opposite its reverse: with m = len(i) // 2,
    edge k < m is i→j with shift S and edge m + k is j→i with shift −S.

    The model evaluates what depends on the distance alone (radial filters, eq. 16) once per pair on the
    first half and reuses it for the second (``Batch.edges_paired``). A full list is symmetric, so every
    edge has its reverse; for an atom and its own periodic image (i = j) the edge with the
    lexicographically positive shift goes first.

    Returns:
        (E,) permutation of the edges.
    Raises:
        ValueError: if some edge has no reverse (not a full neighbour list).
    """
    i, j, shifts = np.asarray(i), np.asarray(j), np.asarray(shifts).reshape(-1, 3)
    nonzero = shifts != 0
    first = np.argmax(nonzero, axis=1)  # first non-zero component of the shift (0 if none)
    positive_shift = np.take_along_axis(shifts, first[:, None], axis=1)[:, 0] > 0
    forward = (i < j) | ((i == j) & positive_shift)
    fwd, rev = np.flatnonzero(forward), np.flatnonzero(~forward)
    # Sort both halves by the same key, (i, j, S) of the forward edge and (j, i, −S) of the reverse.
    fwd = fwd[np.lexsort((*shifts[fwd].T[::-1], j[fwd], i[fwd]))]
    rev = rev[np.lexsort((*(-shifts[rev]).T[::-1], i[rev], j[rev]))]
    if (
        len(fwd) != len(rev)
        or not np.array_equal(i[fwd], j[rev])
        or not np.array_equal(j[fwd], i[rev])
        or not np.array_equal(shifts[fwd], -shifts[rev])
    ):
        raise ValueError("the neighbour list is not symmetric: some edge i→j has no edge j→i")
    return np.concatenate([fwd, rev])


def edges_are_paired(i: np.ndarray, j: np.ndarray, shifts: np.ndarray) -> bool:
    """True if the edges are ordered as :func:`pair_edges` orders them (each opposite its reverse)."""
    m, odd = divmod(len(i), 2)
    return (
        not odd
        and np.array_equal(i[:m], j[m:])
        and np.array_equal(j[:m], i[m:])
        and np.array_equal(shifts[:m], -shifts[m:])
    )


def paired_slots(start: int, count: int, capacity: int) -> np.ndarray:
    """Where ``count`` paired edges (see :func:`pair_edges`) go in a padded array of ``capacity`` edges
    laid out as ``Batch.edges_paired`` says: their forward half from ``start // 2``, their reverse half at
    the same place in the second half of the array. ``start`` is the number of edges placed before them."""
    half, first = capacity // 2, start // 2
    return np.r_[first : first + count // 2, half + first : half + first + count // 2]


def check_structure(
    positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray, pbc: np.ndarray, where: str = "structure"
) -> None:
    """Raise a clear ``ValueError`` for input the model cannot meaningfully evaluate.

    Checks: finite coordinates, atomic numbers in 1..118, non-degenerate periodic cell, and no two
    atoms (or periodic images) closer than 0.1 Å. ``where`` names the structure in the message.
    """
    positions = np.asarray(positions)
    numbers = np.asarray(numbers)
    if positions.ndim != 2 or positions.shape[1] != 3 or len(numbers) != len(positions):
        raise ValueError(
            f"{where}: positions must have shape (n_atoms, 3) matching {len(numbers)} atomic numbers, "
            f"got {positions.shape}"
        )
    if len(numbers) == 0:
        raise ValueError(f"{where}: the structure has no atoms")
    bad = ~np.isfinite(positions).all(axis=1)
    if bad.any():
        raise ValueError(f"{where}: atom {int(np.argmax(bad))} has NaN or infinite coordinates")
    out = (numbers < 1) | (numbers > MAX_ATOMIC_NUMBER)
    if out.any():
        k = int(np.argmax(out))
        raise ValueError(f"{where}: atom {k} has atomic number {int(numbers[k])}, outside 1..118")
    if np.any(pbc):
        if not np.isfinite(cell).all():
            raise ValueError(f"{where}: the cell has NaN or infinite entries")
        volume = abs(np.linalg.det(cell))
        if volume < 1e-6:
            raise ValueError(f"{where}: the periodic cell has zero volume (det = {volume:.3g} Å³)")
    i, j, shifts = neighbour_list(positions, cell, pbc, MIN_DISTANCE)
    if len(i):
        d = np.linalg.norm(positions[j] - positions[i] + shifts @ np.asarray(cell), axis=1)
        k = int(np.argmin(d))
        raise ValueError(
            f"{where}: atoms {int(i[k])} and {int(j[k])} are {d[k]:.3g} Å apart (closer than "
            f"{MIN_DISTANCE} Å): overlapping atoms"
        )


@dataclass
class Graph:
    """One structure with its neighbour list and optional labels (numpy, eV and Å).

    Attributes:
        positions: (n, 3).  numbers: (n,).  cell: (3, 3), zeros for molecules.  pbc: (3,).
        edge_i, edge_j: (E,) centre and neighbour atom of each directed edge; :func:`make_graph` orders them
            with :func:`pair_edges` (the second half reverses the first).
        edge_shift: (E, 3) integer cell shifts, r_ij = r_j − r_i + edge_shift @ cell.
        energy: scalar or None.  forces: (n, 3) or None.  stress: (3, 3) or None.
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
    """Validate a structure and build its neighbour list (see :func:`check_structure`)."""
    positions = np.asarray(positions, dtype=np.float64)
    numbers = np.asarray(numbers, dtype=np.int32)
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64).reshape(3, 3)
    pbc = np.zeros(3, bool) if pbc is None else np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    if check:
        check_structure(positions, numbers, cell, pbc, where)
    i, j, shifts = neighbour_list(positions, cell, pbc, r_cut)
    order = pair_edges(i, j, shifts)
    return Graph(positions, numbers, cell, pbc, i[order], j[order], shifts[order], energy, forces, stress)


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
    pad_atom, pad_graph = N - 1, G - 1

    positions = np.zeros((N, 3))
    numbers = np.zeros(N, np.int32)
    node_graph = np.full(N, pad_graph, np.int32)
    node_mask = np.zeros(N, bool)
    forces = np.zeros((N, 3))
    edge_i = np.full(E, pad_atom, np.int32)
    edge_j = np.full(E, pad_atom, np.int32)
    edge_shift = np.zeros((E, 3), np.int32)
    edge_mask = np.zeros(E, bool)
    cell = np.zeros((G, 3, 3))
    pbc = np.zeros((G, 3), bool)
    graph_mask = np.zeros(G, bool)
    n_atoms = np.zeros(G, np.int32)
    energy = np.zeros(G)
    stress = np.zeros((G, 3, 3))
    has_energy = np.zeros(G, bool)
    has_forces = np.zeros(G, bool)
    has_stress = np.zeros(G, bool)
    pair_lists: list[tuple[np.ndarray, np.ndarray]] = []
    # Paired layout (each graph's forward edges in the first half, their reverses at the same place in
    # the second) when every graph's edges are paired, as make_graph builds them.
    paired = E % 2 == 0 and all(edges_are_paired(g.edge_i, g.edge_j, g.edge_shift) for g in graphs)

    a = e = 0
    for g, graph in enumerate(graphs):
        n, m = graph.n_atoms, graph.n_edges
        positions[a : a + n] = graph.positions
        numbers[a : a + n] = graph.numbers
        node_graph[a : a + n] = g
        node_mask[a : a + n] = True
        place = paired_slots(e, m, E) if paired else np.arange(e, e + m)
        edge_i[place] = graph.edge_i + a
        edge_j[place] = graph.edge_j + a
        edge_shift[place] = graph.edge_shift
        edge_mask[place] = True
        cell[g] = graph.cell
        pbc[g] = graph.pbc
        graph_mask[g] = True
        n_atoms[g] = n
        if graph.energy is not None:
            energy[g], has_energy[g] = graph.energy, True
        if graph.forces is not None:
            forces[a : a + n], has_forces[g] = graph.forces, True
        if graph.stress is not None:
            stress[g], has_stress[g] = graph.stress, True
        if all_pairs:
            ii, jj = np.nonzero(~np.eye(n, dtype=bool))
            pair_lists.append((ii + a, jj + a))
        a += n
        e += m
    # Padding atoms and graphs get a unit cell so that no volume or inverse is ever zero.
    cell[len(graphs) :] = np.eye(3)

    if all_pairs:
        pi = np.concatenate([p[0] for p in pair_lists]) if pair_lists else np.zeros(0, np.int32)
        pj = np.concatenate([p[1] for p in pair_lists]) if pair_lists else np.zeros(0, np.int32)
        P = max(sizes.n_pairs, 1)
        if len(pi) > P:
            raise ValueError(f"{len(pi)} atom pairs do not fit the padded size {P}")
        pair_i = np.full(P, pad_atom, np.int32)
        pair_j = np.full(P, pad_atom, np.int32)
        pair_mask = np.zeros(P, bool)
        pair_i[: len(pi)], pair_j[: len(pj)], pair_mask[: len(pi)] = pi, pj, True
    else:
        pair_i = pair_j = np.zeros(0, np.int32)
        pair_mask = np.zeros(0, bool)

    return Batch(
        positions=positions,
        numbers=numbers,
        node_graph=node_graph,
        node_mask=node_mask,
        edge_i=edge_i,
        edge_j=edge_j,
        edge_shift=edge_shift,
        edge_mask=edge_mask,
        cell=cell,
        pbc=pbc,
        graph_mask=graph_mask,
        n_atoms=n_atoms,
        energy=energy,
        forces=forces,
        stress=stress,
        has_energy=has_energy,
        has_forces=has_forces,
        has_stress=has_stress,
        pair_i=pair_i,
        pair_j=pair_j,
        pair_mask=pair_mask,
        edges_paired=paired,
    )
