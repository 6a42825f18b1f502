"""Input validation: one function per rule, shared by the data readers, graphs, the potential, MD and training.

The bottom layer: numpy, ase and vesin only (no jax, no other so3krates module), so data can be read and
checked without the model stack. Every ``check_*`` raises a ``ValueError`` whose message starts with
``where`` (a file and key, a structure), then the frame (``frame_ids``, for many frames at once) and the
atom, then the problem. The ``first_*`` functions find the first offender over many frames at once
(vectorised, for data sets of 10⁵ frames).

Rules:

* :func:`check_shapes`: positions (n, 3) matching n atomic numbers, n ≥ 1.
* :func:`check_finite`: no NaN or infinite values.
* :func:`check_atomic_numbers`: atomic numbers in 1..118.
* :func:`check_known_elements`: only elements a model was trained on and has an embedding for.
* :func:`check_cell`: a periodic structure has a finite cell of non-zero volume.
* :func:`check_no_overlap` (:func:`check_pair_distances` for a list already built): no two atoms, or an
  atom and a periodic image, closer than ``MIN_DISTANCE``.
* :func:`check_cutoff`: neighbour lists built with at least the model's cutoff.

:func:`check_structure` applies the rules for one structure that every model input must pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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
_CUTOFF_TOLERANCE = 1e-6  # Å: cutoffs that differ by rounding only (float32) are the same


def symbol(z: int) -> str:
    """Element symbol of atomic number ``z``, or ``Z=z`` when out of range."""
    return chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}"


def _at(where: str, frame_ids: Sequence[int] | None, k: int) -> str:
    """``where`` followed by the frame number of entry ``k`` (when the check ran over several frames)."""
    return where if frame_ids is None else f"{where}: frame {frame_ids[k]}"


# -- shapes and values ---------------------------------------------------------------------------------


def check_shapes(positions: np.ndarray, numbers: np.ndarray, where: str = "structure") -> None:
    """Positions of shape (n, 3) for n ≥ 1 atoms, n the number of atomic numbers."""
    positions, numbers = np.asarray(positions), np.asarray(numbers)
    if positions.ndim != 2 or positions.shape[1] != 3 or numbers.shape != (len(positions),):
        raise ValueError(
            f"{where}: positions must have shape (n_atoms, 3) matching {numbers.size} atomic numbers, "
            f"got {positions.shape}"
        )
    if len(numbers) == 0:
        raise ValueError(f"{where}: the structure has no atoms")


def first_non_finite(values: Sequence) -> int | None:
    """Index of the first entry (number or array) holding NaN or ±inf, or None; one pass over all entries."""
    sizes = np.array([np.size(v) for v in values])
    flat = np.concatenate([np.ravel(v) for v in values]) if len(values) else np.zeros(0)
    bad = ~np.isfinite(flat)
    if not bad.any():
        return None
    return int(np.searchsorted(np.cumsum(sizes), int(np.argmax(bad)), side="right"))


def check_finite(values: np.ndarray | Sequence, what: str, where: str, frame_ids: Sequence[int] | None = None) -> None:
    """No NaN or infinite values.

    Args:
        values: with ``frame_ids``, one entry (number or array) per frame, and the message names the
            frame; without, one structure's per-atom array (n, ...), and the message names the atom.
        what: the quantity, for the message ("coordinates", "forces", "energy", ...).
    """
    if frame_ids is not None:
        k = first_non_finite(values)
        if k is not None:
            raise ValueError(f"{_at(where, frame_ids, k)} has NaN or infinite {what}")
        return
    bad = ~np.isfinite(np.asarray(values, dtype=np.float64)).reshape(len(values), -1).all(axis=1)
    if bad.any():
        raise ValueError(f"{where}: atom {int(np.argmax(bad))} has NaN or infinite {what}")


# -- elements ------------------------------------------------------------------------------------------


def first_bad_atomic_number(numbers: Sequence[np.ndarray]) -> tuple[int, int, int] | None:
    """(frame k, atom a, Z) of the first atomic number outside 1..118, or None. Vectorised over frames."""
    if not len(numbers):
        return None
    flat = np.concatenate([np.ravel(z) for z in numbers])
    bad = (flat < 1) | (flat > MAX_ATOMIC_NUMBER)
    if not bad.any():
        return None
    first = int(np.argmax(bad))
    offsets = np.cumsum([0] + [np.size(z) for z in numbers])
    k = int(np.searchsorted(offsets, first, side="right") - 1)
    return k, first - int(offsets[k]), int(flat[first])


def check_atomic_numbers(
    numbers: Sequence[np.ndarray], where: str, frame_ids: Sequence[int] | None = None, zero_hint: str = ""
) -> None:
    """Atomic numbers in 1..118 (``numbers``: one array per frame; one structure is a list of one).

    ``zero_hint`` is appended to the message when the offending atomic number is 0 (often padding).
    """
    bad = first_bad_atomic_number(numbers)
    if bad is not None:
        k, a, z = bad
        raise ValueError(
            f"{_at(where, frame_ids, k)}: atom {a} has atomic number {z}, outside 1..{MAX_ATOMIC_NUMBER}"
            + (zero_hint if z == 0 else "")
        )


def check_known_elements(
    numbers: Iterable[int] | np.ndarray,
    elements: Sequence[int] | None,
    max_atomic_number: int | None = None,
    where: str = "structure",
) -> None:
    """Only elements a model knows: those in ``elements`` (the ones it was trained on; None: not known,
    not checked) and atomic numbers within its embedding (≤ ``max_atomic_number``; None: not checked)."""
    numbers = np.asarray(numbers if isinstance(numbers, np.ndarray) else list(numbers), dtype=np.int64).ravel()
    present = np.unique(numbers)
    if elements is not None:
        unknown = sorted(set(present.tolist()) - {int(z) for z in elements})
        if unknown:
            names = ", ".join(f"{symbol(z)} (Z={z})" for z in unknown)
            known = ", ".join(symbol(int(z)) for z in sorted(elements))
            raise ValueError(
                f"{where} contains element(s) {names} that the model was not trained on (it knows: {known}); "
                "a model never trained on an element gives meaningless energies and forces for it"
            )
    if max_atomic_number is not None and present.size and int(present[-1]) > max_atomic_number:
        raise ValueError(
            f"{where}: atomic number {int(present[-1])} is outside the model's element embedding "
            f"(max_atomic_number = {max_atomic_number})"
        )


# -- periodic cells ------------------------------------------------------------------------------------


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


def check_cell(cell: np.ndarray, pbc: np.ndarray, where: str, frame_ids: Sequence[int] | None = None) -> None:
    """A periodic structure has a finite cell of non-zero volume.

    Args:
        cell: (M, 3, 3) or one (3, 3), rows, Å.  pbc: (M, 3) or one (3,) bool.
        frame_ids: frame numbers for the message (M frames), or None for one structure.
    """
    pbc = np.asarray(pbc, dtype=bool).reshape(-1, 3)
    cell = np.asarray(cell, dtype=np.float64).reshape(len(pbc), 3, 3)
    periodic = pbc.any(axis=1)
    bad = periodic & ~np.isfinite(cell).all(axis=(1, 2))
    if bad.any():
        raise ValueError(f"{_at(where, frame_ids, int(np.argmax(bad)))}: the cell has NaN or infinite entries")
    found = first_degenerate_cell(cell, pbc)
    if found is not None:
        k, vol = found
        flags = "".join("T" if x else "F" for x in pbc[k])
        raise ValueError(
            f"{_at(where, frame_ids, k)}: the structure is periodic (pbc={flags}) but its cell has zero volume "
            f"(|det| = {vol:.3g} Å³); give three linearly independent lattice vectors (for a slab or wire, a "
            "vacuum vector along each non-periodic direction), or mark it non-periodic"
        )


# -- overlapping atoms ---------------------------------------------------------------------------------


def closest_pair(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> tuple[int, int, float, np.ndarray] | None:
    """The closest pair of atoms nearer than ``MIN_DISTANCE``, minimum image for periodic frames.

    Uses vesin's compiled cell list (any cell shape, cells smaller than the cutoff included: an
    atom close to its own periodic image is reported with i == j).

    Args:
        positions: (n, 3) Å.  cell: (3, 3) rows, Å (non-degenerate where pbc).  pbc: (3,) bool.
    Returns:
        (i, j, distance Å, shift (3,) int cell offsets of j) with i ≤ j, or None if no pair is that close.
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
    a, b, s = int(i[k]), int(j[k]), np.asarray(shift[k], dtype=np.int64)
    return (a, b, float(d[k]), s) if a <= b else (b, a, float(d[k]), -s)


def _first_dense_close_pair(
    positions: Sequence[np.ndarray], sizes: np.ndarray, dense: np.ndarray
) -> tuple[int, int, int, float] | None:
    """(frame k, i, j, distance) of the first frame among ``dense`` ones with two atoms too close (numpy)."""
    hits = []
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
                hits.append((int(sel[c]), int(iu[best[c]]), int(ju[best[c]]), float(np.sqrt(d2[c, best[c]]))))
                break  # later chunks hold later frames of this size
    return min(hits) if hits else None


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
    cell = np.asarray(cell, dtype=np.float64).reshape(m, 3, 3)
    sizes = np.array([len(p) for p in positions], dtype=np.int64)
    dense = ~pbc.any(axis=1) & (sizes <= _DENSE_MAX_ATOMS)
    hit = _first_dense_close_pair(positions, sizes, dense)
    first_dense = m if hit is None else hit[0]
    for k in np.flatnonzero(~dense):
        if k >= first_dense:
            break
        found = closest_pair(positions[k], cell[k], pbc[k])
        if found is not None:
            return (int(k), *found)
    return None if hit is None else (*hit, np.zeros(3, dtype=np.int64))


def _pair_text(i: int, j: int, shift: np.ndarray | None, numbers: np.ndarray | None) -> str:
    """The pair as "atoms i and j", with element symbols and the periodic image where known."""
    if numbers is None:
        return f"atoms {i} and {j}"
    si, sj = symbol(int(numbers[i])), symbol(int(numbers[j]))
    if shift is not None and (i == j or np.any(shift)):
        return f"atom {i} ({si}) and the periodic image of atom {j} ({sj}) in cell {np.asarray(shift).tolist()}"
    return f"atoms {i} ({si}) and {j} ({sj})"


def check_pair_distances(
    i: np.ndarray,
    j: np.ndarray,
    distances: np.ndarray,
    where: str = "structure",
    shifts: np.ndarray | None = None,
    numbers: np.ndarray | None = None,
    hint: str = "",
) -> None:
    """No listed pair (i, j) closer than ``MIN_DISTANCE``: the overlap rule on a neighbour list already built.

    ``numbers`` adds element symbols (and, with ``shifts``, which periodic image) to the message.
    """
    distances = np.asarray(distances)
    if not distances.size:
        return
    k = int(np.argmin(distances))
    if distances[k] < MIN_DISTANCE:
        shift = None if shifts is None else np.asarray(shifts)[k]
        pair = _pair_text(int(np.asarray(i)[k]), int(np.asarray(j)[k]), shift, numbers)
        raise ValueError(
            f"{where}: {pair} are {distances[k]:.3g} Å apart (closer than {MIN_DISTANCE} Å): overlapping atoms{hint}"
        )


def check_no_overlap(
    positions: Sequence[np.ndarray],
    cell: np.ndarray,
    pbc: np.ndarray,
    where: str,
    frame_ids: Sequence[int] | None = None,
    numbers: Sequence[np.ndarray] | None = None,
    hint: str = "",
) -> None:
    """No two atoms (or an atom and a periodic image, minimum image) closer than ``MIN_DISTANCE``.

    Args:
        positions: M arrays (n_k, 3), Å (one structure: a list of one).  cell: (M, 3, 3).  pbc: (M, 3).
        frame_ids: frame numbers for the message, or None for one structure.
        numbers: M arrays of atomic numbers: element symbols in the message.
        hint: appended to the message.
    """
    found = first_close_pair(positions, cell, pbc)
    if found is not None:
        k, i, j, d, shift = found
        z = None if numbers is None else numbers[k]
        check_pair_distances([i], [j], [d], _at(where, frame_ids, k), np.asarray([shift]), z, hint)


# -- one structure, one batch --------------------------------------------------------------------------


def check_structure(
    positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray, pbc: np.ndarray, where: str = "structure"
) -> None:
    """Raise a clear ``ValueError`` for a structure the model cannot meaningfully evaluate.

    Checks: shapes, finite coordinates, atomic numbers in 1..118, a finite non-degenerate periodic cell,
    and no two atoms (or periodic images) closer than ``MIN_DISTANCE``. ``where`` names the structure.
    """
    positions, numbers = np.asarray(positions, dtype=np.float64), np.asarray(numbers)
    check_shapes(positions, numbers, where)
    check_finite(positions, "coordinates", where)
    check_atomic_numbers([numbers], where)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    check_cell(cell, pbc, where)
    check_no_overlap([positions], cell[None], pbc[None], where)


def check_cutoff(graph_r_cut: float | None, model_r_cut: float, where: str = "batch") -> None:
    """Neighbour lists built with a cutoff at least the model's (None: not known, not checked).

    A smaller one would silently drop the pairs between the two cutoffs; a larger one is fine, as the
    model's cutoff function weighs pairs beyond its own cutoff with exactly zero.
    """
    if graph_r_cut is not None and graph_r_cut < model_r_cut - _CUTOFF_TOLERANCE:
        raise ValueError(
            f"{where}: neighbour lists built with cutoff {graph_r_cut:g} Å, smaller than the model's "
            f"r_cut = {model_r_cut:g} Å: the pairs between {graph_r_cut:g} and {model_r_cut:g} Å would be "
            f"missing; build the graphs with r_cut ≥ {model_r_cut:g} Å (the model's config.r_cut)"
        )
