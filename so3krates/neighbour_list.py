"""Neighbour lists of structures and the paired edge order the model relies on.

Neighbour lists come from vesin (a compiled library): molecules, periodic cells of any shape and
cells smaller than 2·r_cut (several images of the same atom are then neighbours). :func:`pair_edges`
orders a full list so that every edge sits opposite its reverse (``Batch.edges_paired``).
"""

from __future__ import annotations

import numpy as np
import vesin


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
    positions = np.asarray(positions, dtype=np.float64)
    if not np.isfinite(positions).all():  # vesin and the slabs would both return a list missing pairs
        raise ValueError("neighbour list: positions are not finite (NaN or infinite coordinates)")
    if pbc.any():
        i, j, shifts = _vesin(positions, np.asarray(cell, dtype=np.float64), pbc, r_cut)
    else:
        i, j = _molecule_pairs(positions, np.arange(len(positions)), float(r_cut), MAX_EXTENT_IN_CUTOFFS)
        if not np.all(i[1:] >= i[:-1]):  # cut into slabs: sorted by i as vesin's own list
            order = np.lexsort((j, i))
            i, j = i[order], j[order]
        shifts = np.zeros((len(i), 3))
    return i.astype(np.int32), j.astype(np.int32), shifts.astype(np.int32)


#: Largest extent of a molecule, in cutoffs, handed to vesin in one piece. vesin 0.6 builds a cell grid over
#: the bounding box and dies of a floating-point exception (the process, not a Python error) somewhere
#: beyond ~10⁵ cells along an axis: an atom flung far away in MD, or a long chain, would kill the run.
MAX_EXTENT_IN_CUTOFFS = 1.0e4


def _vesin(positions: np.ndarray, box: np.ndarray, periodic: np.ndarray | bool, r_cut: float):
    calculator = vesin.NeighborList(cutoff=float(r_cut), full_list=True, sorted=True)
    return calculator.compute(points=positions, box=box, periodic=periodic, quantities="ijS")


def _molecule_pairs(
    positions: np.ndarray, index: np.ndarray, r_cut: float, max_extent: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j) within r_cut of a non-periodic structure, in the numbering of ``index``.

    A structure wider than ``max_extent`` cutoffs is cut into slabs along its widest axis, only the
    occupied ones (so an atom 10⁴⁰ Å away costs nothing): each slab's atoms with a halo of r_cut on both
    sides go to vesin (recursively, for structures wide along several axes), and a pair is kept by the
    slab that holds its first atom, so every pair is found once. ``max_extent`` ≥ 4 keeps a slab with
    its halo within ``max_extent`` cutoffs, so the recursion ends.
    """
    if len(positions) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    extent = positions.max(axis=0) - positions.min(axis=0)
    axis = int(np.argmax(extent))
    if extent[axis] <= max_extent * r_cut:
        i, j, _ = _vesin(positions, np.zeros((3, 3)), False, r_cut)
        return index[i], index[j]
    width = 0.5 * max_extent * r_cut
    x = positions[:, axis]
    slab = np.floor((x - x.min()) / width)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    pairs_i, pairs_j = [], []
    for k in np.unique(slab):
        lo, hi = x.min() + k * width, x.min() + (k + 1) * width
        members = order[np.searchsorted(xs, lo - r_cut) : np.searchsorted(xs, hi + r_cut, side="right")]
        i, j = _molecule_pairs(positions[members], members, r_cut, max_extent)
        core = slab[i] == k
        pairs_i.append(index[i[core]])
        pairs_j.append(index[j[core]])
    return np.concatenate(pairs_i), np.concatenate(pairs_j)


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
