"""The validation rules (so3krates.validation): one function per rule, messages naming where and what."""

import subprocess
import sys

import numpy as np
import pytest

from so3krates import validation as v


def test_validation_imports_no_jax_and_no_other_so3krates_module():
    code = (
        "import sys; import so3krates.validation; "
        "bad = [m for m in sys.modules if m == 'jax' or (m.startswith('so3krates.') and m != 'so3krates.validation')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shapes():
    v.check_shapes(np.zeros((2, 3)), np.array([1, 1]))
    with pytest.raises(ValueError, match=r"s1: positions must have shape \(n_atoms, 3\) matching 3 atomic numbers"):
        v.check_shapes(np.zeros((2, 3)), np.array([1, 1, 1]), "s1")
    with pytest.raises(ValueError, match=r"s2: positions must have shape"):
        v.check_shapes(np.zeros((2, 2)), np.array([1, 1]), "s2")
    with pytest.raises(ValueError, match="s3: the structure has no atoms"):
        v.check_shapes(np.zeros((0, 3)), np.zeros(0, int), "s3")


def test_finite_names_the_atom_or_the_frame():
    v.check_finite(np.ones((3, 3)), "coordinates", "mol")
    with pytest.raises(ValueError, match="mol: atom 2 has NaN or infinite coordinates"):
        v.check_finite(np.array([[0, 0, 0], [1, 0, 0], [np.inf, 0, 0]]), "coordinates", "mol")
    values = [1.0, 2.0, np.nan, 3.0]
    with pytest.raises(ValueError, match="f.npz: key 'E': frame 12 has NaN or infinite energy"):
        v.check_finite(values, "energy", "f.npz: key 'E'", frame_ids=[10, 11, 12, 13])
    assert v.first_non_finite([np.ones(2), np.ones((2, 3)), np.array([0.0, np.nan])]) == 2
    assert v.first_non_finite([np.ones(2)]) is None


def test_atomic_numbers():
    v.check_atomic_numbers([np.array([1, 118])], "ok")
    with pytest.raises(ValueError, match=r"s: atom 1 has atomic number 119, outside 1\.\.118$"):
        v.check_atomic_numbers([np.array([1, 119])], "s")
    numbers = [np.array([1, 6]), np.array([8, 1, 0])]
    with pytest.raises(ValueError, match=r"d: frame 7: atom 2 has atomic number 0, outside 1\.\.118 \(padding\?\)"):
        v.check_atomic_numbers(numbers, "d", frame_ids=[3, 7], zero_hint=" (padding?)")
    assert v.first_bad_atomic_number(numbers) == (1, 2, 0)


def test_known_elements():
    v.check_known_elements([1, 6, 1], [1, 6, 8], 118, "mol")
    v.check_known_elements([1, 17], None, None, "mol")  # nothing known: nothing checked
    with pytest.raises(ValueError, match=r"mol contains element\(s\) N \(Z=7\), Cl \(Z=17\) that the model was not"):
        v.check_known_elements(np.array([1, 7, 17]), [1, 6, 8], 118, "mol")
    with pytest.raises(ValueError, match=r"it knows: H, C, O\); a model never trained on an element"):
        v.check_known_elements([7], (1, 6, 8), None, "mol")
    with pytest.raises(ValueError, match=r"b: atomic number 17 is outside the model's element embedding"):
        v.check_known_elements([1, 17], None, 9, "b")


def test_cell():
    v.check_cell(np.zeros((3, 3)), np.zeros(3, bool), "molecule")  # not periodic: any cell
    with pytest.raises(ValueError, match=r"s: the structure is periodic \(pbc=TTF\) but its cell has zero volume"):
        v.check_cell(np.diag([3.0, 3.0, 0.0]), [True, True, False], "s")
    with pytest.raises(ValueError, match="s: the cell has NaN or infinite entries"):
        v.check_cell(np.diag([3.0, np.nan, 3.0]), [True, True, True], "s")
    cells = np.stack([np.eye(3) * 3, np.eye(3) * 3, np.zeros((3, 3))])
    with pytest.raises(ValueError, match=r"f: frame 5: the structure is periodic \(pbc=FFT\)"):
        v.check_cell(cells, [[True] * 3, [True] * 3, [False, False, True]], "f", frame_ids=[3, 4, 5])


def test_overlap_in_molecules_and_periodic_images():
    mol = [np.array([[0.0, 0, 0], [1.0, 0, 0]]), np.array([[0.0, 0, 0], [1.0, 0, 0], [1.05, 0, 0]])]
    cell, pbc = np.zeros((2, 3, 3)), np.zeros((2, 3), bool)
    v.check_no_overlap(mol[:1], cell[:1], pbc[:1], "ok")
    with pytest.raises(ValueError, match=r"m: frame 1: atoms 1 and 2 are 0\.05 Å apart \(closer than 0\.1 Å\)"):
        v.check_no_overlap(mol, cell, pbc, "m", frame_ids=[0, 1])
    numbers = [np.array([6, 1]), np.array([6, 1, 8])]
    with pytest.raises(ValueError, match=r"frame 1: atoms 1 \(H\) and 2 \(O\) are 0\.05 Å apart.*atoms!"):
        v.check_no_overlap(mol, cell, pbc, "m", frame_ids=[0, 1], numbers=numbers, hint="!")
    # an atom 0.02 Å from the periodic image of another one
    crystal = [np.array([[0.0, 0, 0], [2.98, 0, 0]])]
    box, periodic = (np.eye(3) * 3.0)[None], np.ones((1, 3), bool)
    with pytest.raises(ValueError, match=r"c: atoms 0 and 1 are 0\.02 Å apart"):
        v.check_no_overlap(crystal, box, periodic, "c")
    with pytest.raises(ValueError, match=r"c: atom 0 \(Ar\) and the periodic image of atom 1 \(Ar\) in cell"):
        v.check_no_overlap(crystal, box, periodic, "c", numbers=[np.array([18, 18])])


def test_pair_distances_of_a_built_list():
    v.check_pair_distances(np.array([0, 1]), np.array([1, 0]), np.array([1.0, 1.0]), "md")
    v.check_pair_distances(np.zeros(0, int), np.zeros(0, int), np.zeros(0), "md")
    with pytest.raises(ValueError, match=r"md: atoms 2 and 3 are 0\.01 Å apart \(closer than 0\.1 Å\): overlapping"):
        v.check_pair_distances(np.array([0, 2]), np.array([1, 3]), np.array([1.0, 0.01]), "md")


def test_check_structure_runs_every_rule():
    v.check_structure(np.array([[0.0, 0, 0], [1.0, 0, 0]]), np.array([1, 1]), np.zeros((3, 3)), np.zeros(3, bool))
    with pytest.raises(ValueError, match="x: atom 1 has NaN"):
        v.check_structure(np.array([[0.0, 0, 0], [np.nan, 0, 0]]), np.array([1, 1]), np.zeros((3, 3)), False, "x")
    with pytest.raises(ValueError, match="x: atom 0 has atomic number 0"):
        v.check_structure(np.array([[0.0, 0, 0], [1.0, 0, 0]]), np.array([0, 1]), np.zeros((3, 3)), False, "x")


def test_cutoff():
    v.check_cutoff(None, 5.0)  # not known: not checked
    v.check_cutoff(5.0, 5.0)
    v.check_cutoff(6.0, 5.0)
    v.check_cutoff(float(np.float32(5.1)), 5.1)  # rounding only
    with pytest.raises(
        ValueError, match=r"batch: neighbour lists built with cutoff 3 Å, smaller than the model's r_cut = 5"
    ):
        v.check_cutoff(3.0, 5.0)
