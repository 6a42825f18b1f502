"""Physical sanity checks of structures on load: atomic numbers, periodic cells, overlapping atoms.

Kept free of jax/flax (numpy, ase, vesin only) so that reading data never pulls in the model stack.
The criteria match what the model's graph builder accepts, so a file that loads can be trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import vesin
from ase.data import chemical_symbols

MIN_DISTANCE = 0.1  # Å: closer atoms are almost surely a corrupted structure (duplicated atom), not chemistry
MAX_ATOMIC_NUMBER = 118
MIN_VOLUME = 1e-6  # Å³: below this a periodic cell is degenerate (coplanar or missing lattice vectors)

# vesin's cell list makes cells about as large as the cutoff; at 0.1 Å that is ~10⁶ cells for a
# 10 Å box and 30-100x slower than searching 1 Å and filtering. 1 Å returns only a few bonded
# pairs (H-H, O-H), so the filter is cheap.
_SEARCH_CUTOFF = 1.0
# molecules up to this size are checked all at once with dense numpy distance matrices, which is
# much faster than one neighbour-list call per frame for MD17-like datasets (10⁴-10⁵ small frames)
_DENSE_MAX_ATOMS = 256
_DENSE_PAIR_BUDGET = 1_000_000  # atom pairs per numpy chunk: bounds temporaries to ~50 MB


def symbol(z: int) -> str:
    """Element symbol of atomic number ``z``, or ``Z=z`` when out of range."""
    return chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}"


def first_bad_atomic_number(numbers: Sequence[np.ndarray]) -> tuple[int, int, int] | None:
    """(frame k, atom a, Z) of the first atomic number outside 1..118, or None. Vectorised over frames."""
    if not len(numbers):
        return None
    flat = np.concatenate(numbers)
    bad = (flat < 1) | (flat > MAX_ATOMIC_NUMBER)
    if not bad.any():
        return None
    first = int(np.argmax(bad))
    offsets = np.cumsum([0] + [len(z) for z in numbers])
    k = int(np.searchsorted(offsets, first, side="right") - 1)
    return k, first - int(offsets[k]), int(flat[first])


def cell_volumes(cell: np.ndarray) -> np.ndarray:
    """(M,) |det| of (M, 3, 3) cells, Å³."""
    return np.abs(np.linalg.det(np.asarray(cell, dtype=np.float64).reshape(-1, 3, 3)))


def first_degenerate_cell(cell: np.ndarray, pbc: np.ndarray) -> tuple[int, float] | None:
    """(frame k, volume) of the first periodic frame whose cell has (near) zero volume, or None.

    Args:
        cell: (M, 3, 3) lattice vectors as rows, Å.  pbc: (M, 3) bool.
    """
    periodic = np.asarray(pbc, dtype=bool).reshape(-1, 3).any(axis=1)
    if not periodic.any():
        return None
    vol = cell_volumes(cell)
    bad = periodic & ~(vol >= MIN_VOLUME)  # "not >=" also catches NaN
    if not bad.any():
        return None
    k = int(np.argmax(bad))
    return k, float(vol[k])


def closest_pair(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> tuple[int, int, float, np.ndarray] | None:
    """The closest pair of atoms nearer than ``MIN_DISTANCE``, minimum image for periodic frames.

    Uses vesin's compiled cell list (any cell shape, cells smaller than the cutoff included: an
    atom close to its own periodic image is reported with i == j).

    Args:
        positions: (n, 3) Å.  cell: (3, 3) rows, Å (non-degenerate where pbc).  pbc: (3,) bool.
    Returns:
        (i, j, distance Å, shift (3,) int cell offsets of j) or None if no pair is that close.
    """
    pbc = np.asarray(pbc, dtype=bool)
    points = np.ascontiguousarray(positions, dtype=np.float64)
    if len(points) < 2 and not pbc.any():
        return None
    periodic = bool(pbc.any())
    i, j, shift, d = vesin.NeighborList(cutoff=_SEARCH_CUTOFF, full_list=False).compute(
        points=points,
        box=np.ascontiguousarray(cell, dtype=np.float64) if periodic else np.zeros((3, 3)),
        periodic=pbc if periodic else False,
        quantities="ijSd",
    )
    if not len(d):
        return None
    k = int(np.argmin(d))
    if d[k] >= MIN_DISTANCE:
        return None
    return int(i[k]), int(j[k]), float(d[k]), np.asarray(shift[k], dtype=np.int64)


def first_close_pair(
    positions: Sequence[np.ndarray], cell: np.ndarray, pbc: np.ndarray
) -> tuple[int, int, int, float, np.ndarray] | None:
    """(frame k, i, j, distance, shift) of the first frame with two atoms closer than ``MIN_DISTANCE``.

    Small molecules of equal size are checked together with dense distance matrices (numpy,
    chunked); periodic and large frames one by one with :func:`closest_pair`.

    Args:
        positions: M arrays (n_k, 3), Å.  cell: (M, 3, 3), Å.  pbc: (M, 3) bool.
    """
    m = len(positions)
    pbc = np.asarray(pbc, dtype=bool).reshape(m, 3)
    sizes = np.array([len(p) for p in positions], dtype=np.int64)
    dense = ~pbc.any(axis=1) & (sizes <= _DENSE_MAX_ATOMS)
    hits: list[tuple[int, int, int, float, np.ndarray]] = []
    for n in np.unique(sizes[dense]):
        n = int(n)
        if n < 2:
            continue
        idx = np.flatnonzero(dense & (sizes == n))
        iu, ju = np.triu_indices(n, 1)  # each pair once, no self-pairs
        chunk = max(1, _DENSE_PAIR_BUDGET // len(iu))
        for start in range(0, len(idx), chunk):
            sel = idx[start : start + chunk]
            p = np.stack([positions[k] for k in sel])
            d2 = np.sum((p[:, iu] - p[:, ju]) ** 2, axis=-1)  # (frames, pairs)
            best = d2.argmin(axis=1)
            close = np.flatnonzero(d2[np.arange(len(sel)), best] < MIN_DISTANCE**2)
            if len(close):
                c = int(close[0])
                i, j = int(iu[best[c]]), int(ju[best[c]])
                hits.append((int(sel[c]), i, j, float(np.sqrt(d2[c, best[c]])), np.zeros(3, dtype=np.int64)))
                break  # later chunks hold later frames of this size
    first_dense = min((h[0] for h in hits), default=m)
    for k in np.flatnonzero(~dense):
        if k >= first_dense:
            break
        found = closest_pair(positions[k], cell[k], pbc[k])
        if found is not None:
            hits.append((int(k), *found))
            break
    return min(hits, key=lambda h: h[0]) if hits else None
