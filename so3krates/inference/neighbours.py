"""Verlet neighbour lists with a skin and a fixed, bucketed capacity (host side, vesin).

The list holds every pair within ``r_cut + skin`` at the positions of its last build (the *reference*).
While no atom has moved more than ``skin / 2`` from its reference position, every pair now within
``r_cut`` is still in the list: a pair distance changes by at most |u_i| + |u_j| ≤ 2 · max |u| ≤ skin.

Pairs beyond ``r_cut`` need no masking: every edge term of the model is multiplied by the cosine
cutoff φ(r), which is exactly 0 (value and gradient) at r ≥ r_cut, so a listed pair in the skin adds
exact zeros (verified in ``tests/test_calculator.py``).

The edge arrays are padded to a fixed capacity (bucketed with headroom) so that jit sees one shape for
a whole MD run; a rebuild that no longer fits grows the capacity (one recompilation) instead of
dropping pairs.
"""

from __future__ import annotations

import math

import flax.struct
import jax
import numpy as np

from so3krates.graph import bucket, neighbour_list, pair_edges, paired_slots
from so3krates.validation import check_pair_distances

Array = jax.Array


@flax.struct.dataclass
class Neighbours:
    """The part of a batch that a neighbour-list rebuild changes (numpy on the host, jax in jit).

    Attributes:
        edge_i, edge_j: (E,) centre and neighbour atom; padding edges join the padding atom to itself.
            Paired (``Batch.edges_paired``): edge e < E/2 and edge E/2 + e are each other's reverse.
        edge_shift: (E, 3) integer cell shifts, r_ij = r_j − r_i + edge_shift @ cell.
        edge_mask: (E,) True for listed pairs.
        reference: (n, 3) positions of the real atoms at the build, for the displacement check.
    """

    edge_i: np.ndarray | Array
    edge_j: np.ndarray | Array
    edge_shift: np.ndarray | Array
    edge_mask: np.ndarray | Array
    reference: np.ndarray | Array

    @property
    def capacity(self) -> int:
        return int(self.edge_i.shape[0])


def max_displacement(positions: np.ndarray, reference: np.ndarray) -> float:
    """Largest distance any atom moved from its reference position (Å), host side."""
    if len(positions) == 0:
        return 0.0
    return float(np.sqrt(np.max(np.sum((np.asarray(positions) - reference) ** 2, axis=1))))


class SkinNeighbourList:
    """Builds :class:`Neighbours` within ``r_cut + skin`` into a capacity that only grows.

    Args:
        r_cut: the model cutoff (Å).
        skin: extra shell (Å); the list stays valid until an atom moved ``skin / 2``.
        headroom: capacity = bucket(headroom · number of pairs), so density fluctuations during MD
            rarely outgrow it.
        pad_atom: index of the padding atom that padding edges point to (the batch's last atom).

    Attributes:
        builds: number of builds so far.  grows: how often the capacity had to grow after the first.
    """

    def __init__(self, r_cut: float, skin: float = 0.5, headroom: float = 1.25, pad_atom: int = 0) -> None:
        if skin < 0:
            raise ValueError(f"skin must be ≥ 0, got {skin}")
        if headroom < 1:
            raise ValueError(f"headroom must be ≥ 1, got {headroom}")
        self.r_cut = float(r_cut)
        self.skin = float(skin)
        self.headroom = float(headroom)
        self.pad_atom = int(pad_atom)
        self.capacity: int | None = None
        self.builds = 0
        self.grows = 0

    @property
    def cutoff(self) -> float:
        """The list radius r_cut + skin."""
        return self.r_cut + self.skin

    def build(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> Neighbours:
        """All pairs within r_cut + skin at ``positions``, padded to the capacity (grown if needed)."""
        positions = np.asarray(positions, dtype=np.float64)
        i, j, shifts = neighbour_list(positions, cell, pbc, self.cutoff)
        n_edges = len(i)
        if self.capacity is None or n_edges > self.capacity:
            if self.capacity is not None:
                self.grows += 1
            # +1: at least one padding edge, so the padded shape never depends on an exact fit.
            self.capacity = bucket(math.ceil(n_edges * self.headroom) + 1)
        self.builds += 1
        E = self.capacity
        edge_i = np.full(E, self.pad_atom, np.int32)
        edge_j = np.full(E, self.pad_atom, np.int32)
        edge_shift = np.zeros((E, 3), np.int32)
        edge_mask = np.zeros(E, bool)
        # Paired layout (Batch.edges_paired): forward edges from 0, their reverses from E / 2 (E is even).
        order = pair_edges(i, j, shifts)
        place = paired_slots(0, n_edges, E)
        edge_i[place], edge_j[place], edge_shift[place], edge_mask[place] = i[order], j[order], shifts[order], True
        return Neighbours(edge_i, edge_j, edge_shift, edge_mask, positions.copy())

    def needs_rebuild(self, positions: np.ndarray, neighbours: Neighbours) -> bool:
        """True once an atom moved more than skin / 2 since ``neighbours`` was built."""
        return max_displacement(positions, np.asarray(neighbours.reference)) > 0.5 * self.skin


def check_close_pairs(
    positions: np.ndarray, cell: np.ndarray, neighbours: Neighbours, where: str = "structure"
) -> None:
    """Raise ``ValueError`` if two listed atoms (or images) are closer than ``MIN_DISTANCE`` (0.1 Å).

    The same rule as :func:`so3krates.validation.check_no_overlap`, but from a list that is
    already built (its radius r_cut + skin ≫ 0.1 Å, so it holds every such pair): checking a rebuilt list
    costs one pass over its edges instead of another neighbour search.
    """
    mask = np.asarray(neighbours.edge_mask)
    i, j = np.asarray(neighbours.edge_i)[mask], np.asarray(neighbours.edge_j)[mask]
    shifts = np.asarray(neighbours.edge_shift)[mask]
    d = np.linalg.norm(positions[j] - positions[i] + shifts @ np.asarray(cell, np.float64), axis=1)
    check_pair_distances(i, j, d, where)
