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
