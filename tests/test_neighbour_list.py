"""Neighbour lists of molecules that vesin alone cannot take: atoms flung far away, very long chains."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from so3krates import neighbour_list as nl

NO_CELL, NO_PBC = np.zeros((3, 3)), np.zeros(3, dtype=bool)


def _pairs(i: np.ndarray, j: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(i.tolist(), j.tolist(), strict=True))


def _brute_force(positions: np.ndarray, r_cut: float) -> set[tuple[int, int]]:
    d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    i, j = np.nonzero((d < r_cut) & ~np.eye(len(positions), dtype=bool))
    return _pairs(i, j)


def test_slabs_find_every_pair_once_and_sorted_by_i() -> None:
    positions = np.random.default_rng(0).uniform(0, 20, (300, 3))
    i, j = nl._molecule_pairs(positions, np.arange(300), 2.0, max_extent=4.0)  # forced into slabs, recursively
    assert len(i) == len(_pairs(i, j)) == len(_brute_force(positions, 2.0))
    assert _pairs(i, j) == _brute_force(positions, 2.0)
    whole = nl.neighbour_list(positions, NO_CELL, NO_PBC, 2.0)  # no slabs at this size: vesin's own order
    assert _pairs(whole[0], whole[1]) == _brute_force(positions, 2.0) and np.all(np.diff(whole[0]) >= 0)


def test_atoms_flung_far_away_neither_crash_the_process_nor_lose_pairs() -> None:
    # vesin 0.6 dies of SIGFPE (the whole process) on such a bounding box; run it in a child to see that.
    code = (
        "import numpy as np; from so3krates.neighbour_list import neighbour_list as nl; "
        "p = np.array([[0, 0, 0], [1, 0, 0], [5e5, 0, 0], [5e5 + 1, 0, 0], [1e40, 3, 0]], float); "
        "i, j, s = nl(p, np.zeros((3, 3)), np.zeros(3, bool), 4.5); print(sorted(zip(i.tolist(), j.tolist())))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[(0, 1), (1, 0), (2, 3), (3, 2)]"


def test_a_long_chain_is_listed_in_slabs() -> None:
    chain = np.zeros((40_000, 3))
    chain[:, 0] = np.arange(40_000) * 1.0
    i, j, shifts = nl.neighbour_list(chain, NO_CELL, NO_PBC, 1.5)  # 2.7e4 cutoffs wide: cut into slabs
    assert len(i) == 2 * (40_000 - 1) and np.all(np.abs(i - j) == 1) and not shifts.any()
    assert np.all(np.diff(i) >= 0)


def test_non_finite_positions_are_refused_not_listed_without_pairs() -> None:
    import pytest

    positions = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [np.nan, 0.0, 0.0]])
    with pytest.raises(ValueError, match="not finite"):
        nl.neighbour_list(positions, NO_CELL, NO_PBC, 2.0)
