"""Tests of so3krates.data readers and Frames (small files made in tmp_path, plus the shared real data)."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from so3krates.data import Frames, UnitsWarning, read_frames

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KCAL = units.kcal / units.mol


def _molecule(rng: np.random.Generator, n: int = 5) -> np.ndarray:
    """(n, 3) positions on a jittered line, atoms ~1.2 Å apart."""
    pos = np.zeros((n, 3))
    pos[:, 0] = np.arange(n) * 1.2
    return pos + rng.normal(scale=0.05, size=(n, 3))


def _sgdml(path: Path, m: int = 4, n: int = 5, seed: int = 0, **overrides: np.ndarray) -> dict[str, np.ndarray]:
    """Write an sGDML/MD17-style npz (R, z, E (M, 1), F) with M frames of n atoms; returns its arrays."""
    rng = np.random.default_rng(seed)
    data = {
        "R": np.stack([_molecule(rng, n) for _ in range(m)]),
        "z": np.array([6, 1, 1, 8, 1][:n] + [1] * max(0, n - 5), dtype=np.uint8),
        "E": rng.normal(size=(m, 1)),
        "F": rng.normal(size=(m, n, 3)),
    }
    data.update(overrides)
    np.savez(path, **data)
    return data


def _atoms_list(m: int = 3, seed: int = 0, periodic: bool = False) -> list[Atoms]:
    """M labelled carbon chains of 4, 5, 6, ... atoms (different sizes), optionally periodic with stress."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(m):
        n = 4 + k
        atoms = Atoms(numbers=[6] * n, positions=_molecule(rng, n))
        if periodic:
            atoms.cell = np.diag([n * 1.2 + 0.3, 5.0, 6.0]) + 0.1 * np.triu(np.ones((3, 3)), 1)
            atoms.pbc = True
        results = {"energy": float(rng.normal()), "forces": rng.normal(size=(n, 3))}
        if periodic:
            results["stress"] = rng.normal(size=6) * 0.01
        atoms.calc = SinglePointCalculator(atoms, **results)
        out.append(atoms)
    return out


# ------------------------------------------------------------------------------------------- npz


def test_npz_sgdml_kcal(tmp_path):
    path = tmp_path / "md17.npz"
    data = _sgdml(path, m=4, n=5)
    f = read_frames(path, energy_unit="kcal/mol", require_energy=True, require_forces=True)
    assert isinstance(f, Frames) and len(f) == 4
    assert f.n_atoms.tolist() == [5] * 4
    assert f.elements == [1, 6, 8]
    assert f.numbers[0].dtype == np.int64 and f.positions[0].dtype == np.float64
    np.testing.assert_allclose(f.energy, data["E"][:, 0] * KCAL)
    np.testing.assert_allclose(f.forces[3], data["F"][3] * KCAL)
    np.testing.assert_allclose(f.positions[0], data["R"][0])
    assert f.cell.shape == (4, 3, 3) and not f.cell.any() and not f.pbc.any() and f.stress is None
    assert f.source == str(path)
    sub = read_frames(path, index="1:3")
    assert len(sub) == 2
    np.testing.assert_allclose(sub.positions[0], data["R"][1])
    assert len(read_frames(path, index=-1)) == 1


def test_npz_sgdml_lattice_and_per_frame_z(tmp_path):
    path = tmp_path / "lat.npz"
    z = np.tile(np.array([6, 1, 1, 8, 1]), (4, 1))
    z[2] = [8, 1, 1, 6, 1]  # per-frame atomic numbers (M, n)
    _sgdml(path, z=z, E=np.arange(4.0), lattice=np.diag([20.0, 21.0, 22.0]))
    f = read_frames(path, length_unit="Bohr")
    assert f.pbc.all()
    np.testing.assert_allclose(f.cell[3], np.diag([20.0, 21.0, 22.0]) * units.Bohr)
    assert f.numbers[2].tolist() == [8, 1, 1, 6, 1]
    np.testing.assert_allclose(f.energy, np.arange(4.0))


def test_npz_generic_padded_periodic_voigt(tmp_path):
    rng = np.random.default_rng(1)
    m, n = 3, 6
    pos = np.stack([_molecule(rng, n) for _ in range(m)])
    mask = np.ones((m, n), bool)
    mask[0, 4:] = False
    mask[2, 5:] = False
    z = np.where(mask, 6, 0)
    stress = rng.normal(size=(m, 6))
    forces = rng.normal(size=(m, n, 3))
    energy = rng.normal(size=m)
    path = tmp_path / "generic.npz"
    np.savez(
        path, positions=pos, atomic_numbers=z, energy=energy, forces=forces, cell=np.diag([9.0, 5.0, 5.0]),
        pbc=np.array([True, True, True]), stress=stress, node_mask=mask,
    )  # fmt: skip
    f = read_frames(path, energy_unit="kJ/mol", length_unit="Bohr")
    ef, lf = units.kJ / units.mol, units.Bohr
    assert f.n_atoms.tolist() == [4, 6, 5]  # padding atoms dropped
    assert f.elements == [6]
    np.testing.assert_allclose(f.positions[0], pos[0, :4] * lf)
    np.testing.assert_allclose(f.forces[0], forces[0, :4] * ef / lf)
    np.testing.assert_allclose(f.energy, energy * ef)
    assert f.cell.shape == (m, 3, 3) and f.pbc.all()
    np.testing.assert_allclose(f.cell[1], np.diag([9.0, 5.0, 5.0]) * lf)
    s = f.stress[1] / (ef / lf**3)  # Voigt order xx, yy, zz, yz, xz, xy
    np.testing.assert_allclose(np.diag(s), stress[1, :3])
    np.testing.assert_allclose([s[1, 2], s[0, 2], s[0, 1]], stress[1, 3:])
    np.testing.assert_allclose(s, s.T)


def test_npz_generic_per_frame_cell_pbc_and_unlabelled(tmp_path):
    rng = np.random.default_rng(2)
    m, n = 2, 4
    pos = np.stack([_molecule(rng, n) for _ in range(m)])
    cell = np.stack([np.diag([10.0, 6.0, 6.0]), np.diag([11.0, 7.0, 30.0])])
    pbc = np.array([[True, True, True], [True, True, False]])
    stress = rng.normal(size=(m, 3, 3))
    path = tmp_path / "percell.npz"
    np.savez(path, positions=pos, atomic_numbers=np.full((m, n), 14), cell=cell, pbc=pbc, stress=stress)
    f = read_frames(path)
    np.testing.assert_array_equal(f.pbc, pbc)
    np.testing.assert_allclose(f.cell, cell)
    np.testing.assert_allclose(f.stress, stress)
    assert f.energy is None and f.forces is None
    # (n,) atomic numbers, no labels, no pbc key: molecules without energy
    plain = tmp_path / "plain.npz"
    np.savez(plain, positions=pos, atomic_numbers=np.full(n, 8))
    g = read_frames(plain)
    assert g.energy is None and g.forces is None and not g.pbc.any()
    with pytest.raises(ValueError, match=r"plain\.npz: missing key 'energy' \(energy, required\); keys found"):
        read_frames(plain, require_energy=True)
    with pytest.raises(ValueError, match=r"plain\.npz: missing key 'forces' \(forces, required\); keys found"):
        read_frames(plain, require_forces=True)


def test_npz_named_keys(tmp_path):
    path = tmp_path / "named.npz"
    data = _sgdml(path, E_dft=np.arange(4.0), F_dft=np.ones((4, 5, 3)))
    f = read_frames(path, energy_key="E_dft", forces_key="F_dft")
    np.testing.assert_allclose(f.energy, np.arange(4.0))
    np.testing.assert_allclose(f.forces[0], 1.0)
    assert not np.allclose(f.energy, data["E"][:, 0])
    with pytest.raises(ValueError, match=r"named\.npz: missing key 'energies' \(energy, named by the user\).*'E_dft'"):
        read_frames(path, energy_key="energies")


# ----------------------------------------------------------------------------------- npz bad input


def _bad_r(tmp_path: Path) -> np.ndarray:
    return _sgdml(tmp_path / "ok.npz")["R"].copy()


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        # shape mismatches between F / E and R name both keys and what differs
        ({"F": np.zeros((4, 4, 3))}, r"key 'F' \(forces\) has shape \(4, 4, 3\): 4 atoms per frame, but 'R' has 5"),
        ({"F": np.zeros((3, 5, 3))}, r"key 'F' \(forces\) has shape \(3, 5, 3\): 3 frames, but 'R' has 4"),
        ({"E": np.zeros(3)}, r"key 'E' \(energy\) has shape \(3,\): 3 frames, but 'R' has 4"),
        ({"z": np.array([6, 1, 1])}, r"key 'z' \(atomic numbers\) has shape \(3,\); expected \(4, 5\) or \(5,\)"),
        ({"R": np.zeros((4, 5, 2))}, r"key 'R' \(positions\) must have shape \(M, n, 3\)"),
        ({"z": np.array([6, 1, 1, 200, 1])}, r"key 'z': frame 0: atom 3 has atomic number 200, outside 1\.\.118"),
        ({"z": np.array([6, 1, 1, 0, 1])}, r"key 'z': frame 0: atom 3 has atomic number 0, outside.*node_mask"),
        ({"z": np.array([6, 1.5, 1, 8, 1])}, r"key 'z': frame 0: atomic numbers must be integers"),
        ({"R": np.zeros((0, 5, 3)), "E": np.zeros(0), "F": np.zeros((0, 5, 3))}, r"empty dataset"),
    ],
)
def test_npz_bad_shapes_and_numbers(tmp_path, overrides, pattern):
    path = tmp_path / "bad.npz"
    _sgdml(path, **overrides)
    with pytest.raises(ValueError, match=r"bad\.npz: " + pattern):
        read_frames(path)


@pytest.mark.parametrize(
    ("key", "where", "what"),
    [
        ("E", (2,), "energy"),
        ("F", (3, 1, 0), "forces"),
        ("R", (1, 0, 2), "positions"),
    ],
)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_npz_non_finite(tmp_path, key, where, what, bad):
    arrays = {"E": np.zeros(4), "F": np.zeros((4, 5, 3)), "R": _bad_r(tmp_path)}
    arrays[key][where] = bad
    path = tmp_path / "bad.npz"
    _sgdml(path, **{key: arrays[key]})
    with pytest.raises(ValueError, match=rf"bad\.npz: key '{key}': frame {where[0]} has NaN or infinite {what}"):
        read_frames(path)


def test_npz_non_finite_stress_and_cell(tmp_path):
    pos = np.zeros((3, 2, 3)) + [[0, 0, 0], [1.5, 0, 0]]
    cell = np.tile(np.eye(3) * 5, (3, 1, 1))
    stress = np.zeros((3, 6))
    stress[2, 4] = np.nan
    path = tmp_path / "bad.npz"
    np.savez(path, positions=pos, atomic_numbers=np.ones(2, int), cell=cell, stress=stress)
    with pytest.raises(ValueError, match=r"bad\.npz: key 'stress': frame 2 has NaN or infinite stress"):
        read_frames(path)
    cell[1, 0, 0] = np.inf
    np.savez(path, positions=pos, atomic_numbers=np.ones(2, int), cell=cell)
    with pytest.raises(ValueError, match=r"bad\.npz: key 'cell': frame 1 has NaN or infinite cell"):
        read_frames(path)


def test_npz_missing_keys_and_labels(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, coords=np.zeros((2, 3, 3)), Z=np.ones(3))
    with pytest.raises(ValueError, match=r"bad\.npz: missing required keys.*keys found: \['coords', 'Z'\]"):
        read_frames(path)
    np.savez(path, R=np.zeros((2, 3, 3)), E=np.zeros(2))
    with pytest.raises(ValueError, match=r"bad\.npz: missing required key 'z'.*keys found: \['R', 'E'\]"):
        read_frames(path)
    np.savez(path, R=np.zeros((2, 5, 3)) + np.arange(5)[:, None], z=np.ones(5, int))
    with pytest.raises(ValueError, match=r"bad\.npz: missing key 'F' \(forces, required\); keys found: \['R', 'z'\]"):
        read_frames(path, require_forces=True)
    with pytest.raises(ValueError, match=r"bad\.npz: missing key 'E' \(energy, required\)"):
        read_frames(path, require_energy=True)
    assert read_frames(path).energy is None  # labels are optional unless required


def test_npz_overlapping_atoms_and_zero_volume(tmp_path):
    r = _bad_r(tmp_path)
    r[1, 0] = r[1, 1] + [0.01, 0.0, 0.0]
    path = tmp_path / "bad.npz"
    _sgdml(path, R=r)
    with pytest.raises(ValueError, match=r"bad\.npz: key 'R': frame 1: atoms 0 \(C\) and 1 \(H\) are 0\.01 Å apart"):
        read_frames(path)
    pos = np.zeros((2, 2, 3)) + [[0, 0, 0], [1.5, 0, 0]]
    np.savez(path, positions=pos, atomic_numbers=np.ones(2, int), cell=np.zeros((2, 3, 3)), pbc=np.ones(3, bool))
    with pytest.raises(ValueError, match=r"bad\.npz: key 'cell': frame 0: .*periodic.*zero volume"):
        read_frames(path)
    flat = np.tile(np.diag([5.0, 5.0, 0.0]), (2, 1, 1))  # a slab without a vacuum vector
    flat[0, 2, 2] = 10.0
    np.savez(path, positions=pos, atomic_numbers=np.ones(2, int), cell=flat, pbc=[True, True, False])
    with pytest.raises(ValueError, match=r"bad\.npz: key 'cell': frame 1: .*pbc=TTF.*zero volume"):
        read_frames(path)


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        read_frames(tmp_path / "nothere.npz")
    weird = tmp_path / "data.weird"
    weird.write_text("hello\n")
    with pytest.raises(ValueError, match=r"data\.weird: (unsupported format|cannot read)"):
        read_frames(weird)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"broken\.npz: cannot read as npz"):
        read_frames(broken)
    with pytest.raises(ValueError, match="is a directory"):
        read_frames(tmp_path)
    ok = tmp_path / "ok.npz"
    _sgdml(ok)
    with pytest.raises(ValueError, match=r"unknown energy unit 'kcal'.*kcal/mol"):
        read_frames(ok, energy_unit="kcal")
    with pytest.raises(ValueError, match=r"ok\.npz: frame index 9 out of range: the file has 4 frames"):
        read_frames(ok, index=9)
    with pytest.raises(ValueError, match=r"ok\.npz: empty dataset"):
        read_frames(ok, index="2:2")


# ---------------------------------------------------------------------------------------- ASE formats


def test_extxyz_kcal_converted_and_gz(tmp_path):
    images = _atoms_list(3)
    path = tmp_path / "mols.extxyz"
    ase.io.write(path, images, format="extxyz")
    f = read_frames(path, energy_unit="kcal/mol", require_energy=True, require_forces=True)
    assert f.n_atoms.tolist() == [4, 5, 6]
    for k, a in enumerate(images):
        assert f.energy[k] == pytest.approx(a.get_potential_energy() * KCAL)
        np.testing.assert_allclose(f.forces[k], a.get_forces() * KCAL, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(f.positions[k], a.positions, atol=1e-7)
    gz = tmp_path / "mols.extxyz.gz"
    with open(path, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    g = read_frames(gz, energy_unit="kcal/mol")
    np.testing.assert_allclose(g.energy, f.energy)
    last = read_frames(path, index="-1")
    assert len(last) == 1 and last.n_atoms.tolist() == [6]


def test_extxyz_info_keys_and_fallbacks(tmp_path):
    rng = np.random.default_rng(3)
    images = []
    for _ in range(2):
        a = Atoms("CO", positions=[[0, 0, 0], [1.1, 0, 0]])
        a.info["REF_energy"] = float(rng.normal())
        a.info["dft_energy"] = float(rng.normal())
        a.arrays["REF_forces"] = rng.normal(size=(2, 3))
        images.append(a)
    path = tmp_path / "ref.xyz"
    ase.io.write(path, images, format="extxyz")
    f = read_frames(path, require_energy=True, require_forces=True)  # no calculator: REF_* fallback
    np.testing.assert_allclose(f.energy, [a.info["REF_energy"] for a in images])
    np.testing.assert_allclose(f.forces[1], images[1].arrays["REF_forces"], rtol=1e-6, atol=1e-9)
    with pytest.warns(UnitsWarning, match="forces are implausibly large"):  # random forces, read as Hartree/Å
        g = read_frames(path, energy_key="dft_energy", forces_key="REF_forces", energy_unit="Hartree")
    np.testing.assert_allclose(g.energy, [a.info["dft_energy"] * units.Hartree for a in images])
    with pytest.raises(ValueError, match=r"ref\.xyz: key 'xc_energy' \(energy, named by the user\) missing in frame 0"):
        read_frames(path, energy_key="xc_energy")
    with pytest.raises(ValueError, match=r"ref\.xyz: key 'F' \(forces.*frame 0.*array keys: .*'REF_forces'"):
        read_frames(path, forces_key="F")


def test_extxyz_sgdml_style_names(tmp_path):
    # sGDML's extxyz writer uses Energy= and a 'force' column, which ase leaves in info/arrays
    path = tmp_path / "sgdml.xyz"
    path.write_text(
        '2\nEnergy="-10.5" Properties=species:S:1:pos:R:3:force:R:3\n'
        "O 0.0 0.0 0.0 0.1 0.2 0.3\nH 0.96 0.0 0.0 -0.1 -0.2 -0.3\n"
    )
    f = read_frames(path, energy_unit="kcal/mol", require_energy=True, require_forces=True)
    assert f.energy[0] == pytest.approx(-10.5 * KCAL)
    np.testing.assert_allclose(f.forces[0][1], np.array([-0.1, -0.2, -0.3]) * KCAL)


def test_extxyz_missing_and_mixed_labels(tmp_path):
    images = _atoms_list(3)
    bare = [Atoms(a.numbers, a.positions) for a in images]
    path = tmp_path / "bare.extxyz"
    ase.io.write(path, bare, format="extxyz")
    f = read_frames(path)
    assert f.energy is None and f.forces is None
    with pytest.raises(
        ValueError,
        match=r"bare\.extxyz: key 'forces': frame 0 \(line 1\) has no forces \(forces required in every frame\)",
    ):
        read_frames(path, require_forces=True)
    with pytest.raises(ValueError, match=r"bare\.extxyz: key 'energy': frame 0 \(line 1\) has no energy .*required"):
        read_frames(path, require_energy=True)
    path2 = tmp_path / "mixed.extxyz"
    ase.io.write(path2, [images[0], bare[1], images[2]], format="extxyz")
    with pytest.raises(
        ValueError, match=r"mixed\.extxyz: key 'energy': frame 1 \(line \d+\) has no energy but frame 0 \(line 1\) has"
    ):
        read_frames(path2)
    with pytest.raises(
        ValueError,
        match=r"mixed\.extxyz: key 'forces': frame 1 \(line \d+\) has no forces \(forces required in every frame\)",
    ):
        read_frames(path2, require_forces=True)
    # only the selected frames count
    assert len(read_frames(path2, index="2:", require_forces=True)) == 1


def test_extxyz_bad_values(tmp_path):
    bad = _atoms_list(3)
    bad[2].positions[1] = bad[2].positions[0] + [0.05, 0, 0]
    path = tmp_path / "close.extxyz"
    ase.io.write(path, bad, format="extxyz")
    with pytest.raises(
        ValueError, match=r"close\.extxyz: key 'positions': frame 2 \(line \d+\): atoms 0 \(C\) and 1 \(C\) .*0\.1 Å"
    ):
        read_frames(path)
    nan = _atoms_list(2)
    nan[1].calc.results["forces"][2, 1] = np.nan
    path = tmp_path / "nan.extxyz"
    ase.io.write(path, nan, format="extxyz")
    with pytest.raises(ValueError, match=r"nan\.extxyz: key 'forces': frame 1 \(line \d+\) has NaN or infinite forces"):
        read_frames(path)
    inf = _atoms_list(2)
    inf[1].calc.results["energy"] = np.inf
    path = tmp_path / "inf.extxyz"
    ase.io.write(path, inf, format="extxyz")
    with pytest.raises(ValueError, match=r"inf\.extxyz: key 'energy': frame 1 \(line \d+\) has NaN or infinite energy"):
        read_frames(path)
    heavy = _atoms_list(2)
    heavy[1].numbers[3] = 119
    heavy[1].calc = SinglePointCalculator(heavy[1], **heavy[0].calc.results | {"forces": np.zeros((5, 3))})
    path = tmp_path / "z.traj"
    ase.io.write(path, heavy)
    with pytest.raises(ValueError, match=r"z\.traj: key 'numbers': frame 1: atom 3 has atomic number 119"):
        read_frames(path)
    empty = tmp_path / "empty.extxyz"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty\.extxyz: (empty dataset|cannot read)"):
        read_frames(empty)


def test_periodic_extxyz_with_stress(tmp_path):
    images = _atoms_list(3, periodic=True)
    path = tmp_path / "pbc.extxyz"
    ase.io.write(path, images, format="extxyz")
    f = read_frames(path, energy_unit="kJ/mol", length_unit="Bohr")
    ef, lf = units.kJ / units.mol, units.Bohr
    assert f.pbc.all() and f.stress.shape == (3, 3, 3)
    for k, a in enumerate(images):
        np.testing.assert_allclose(f.cell[k], a.cell[:] * lf, atol=1e-7)
        np.testing.assert_allclose(f.positions[k], a.positions * lf, atol=1e-7)
        assert f.energy[k] == pytest.approx(a.get_potential_energy() * ef)
        np.testing.assert_allclose(f.forces[k], a.get_forces() * ef / lf, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(f.stress[k], a.get_stress(voigt=False) * ef / lf**3, rtol=1e-6, atol=1e-12)
    g = read_frames(path)  # eV, Å: stress as ase has it (ASE sign convention)
    np.testing.assert_allclose(g.stress[1], images[1].get_stress(voigt=False), rtol=1e-6, atol=1e-12)


def test_periodic_minimum_image_and_small_cells(tmp_path):
    # atoms 0.05 Å apart only through the boundary
    a = Atoms("H2", positions=[[0.02, 1, 1], [4.97, 1, 1]], cell=np.eye(3) * 5.0, pbc=True)
    path = tmp_path / "wrap.extxyz"
    ase.io.write(path, [a.copy(), a], format="extxyz")
    with pytest.raises(
        ValueError, match=r"wrap\.extxyz: key 'positions': frame 0 \(line 1\): atom 0 \(H\) and the periodic image"
    ):
        read_frames(path)
    a.pbc = [False, True, True]  # not periodic along x: the same coordinates are fine
    ase.io.write(path, [a], format="extxyz")
    assert len(read_frames(path)) == 1
    a.pbc = False
    ase.io.write(path, [a], format="extxyz")
    assert len(read_frames(path)) == 1
    # a cell so small that an atom meets its own image
    tiny = Atoms("Ar", positions=[[0, 0, 0]], cell=np.diag([0.05, 5.0, 5.0]), pbc=True)
    ase.io.write(path, [tiny], format="extxyz")
    with pytest.raises(
        ValueError, match=r"frame 0 \(line 1\): atom 0 \(Ar\) and the periodic image of atom 0 .*0\.05 Å apart"
    ):
        read_frames(path)


def test_close_atoms_found_late_in_large_dataset(tmp_path):
    rng = np.random.default_rng(5)
    r = np.stack([_molecule(rng) for _ in range(300)])
    r[257, 4] = r[257, 2] + [0.0, 0.03, 0.0]
    big = tmp_path / "big.npz"
    np.savez(big, R=r, z=np.array([6, 1, 1, 8, 1]))
    with pytest.raises(ValueError, match=r"big\.npz: key 'R': frame 257: atoms 2 \(H\) and 4 \(H\)"):
        read_frames(big)
    assert len(read_frames(big, index="-40:")) == 40
    assert len(read_frames(big, index=":257")) == 257


def test_ase_db_and_traj(tmp_path):
    images = _atoms_list(3)
    for name in ("mols.db", "mols.traj"):
        path = tmp_path / name
        ase.io.write(path, images)
        f = read_frames(path, require_energy=True, require_forces=True, energy_unit="kcal/mol")
        assert f.n_atoms.tolist() == [4, 5, 6]
        np.testing.assert_allclose(f.energy, [a.get_potential_energy() * KCAL for a in images])
        np.testing.assert_allclose(f.forces[2], images[2].get_forces() * KCAL)
        assert len(read_frames(path, index="1:")) == 2


def test_ase_db_key_value_pairs_and_data(tmp_path):
    path = tmp_path / "kv.db"
    rng = np.random.default_rng(7)
    ref = []
    with ase.db.connect(path) as db:
        for _ in range(3):
            a = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
            e, f = float(rng.normal()), rng.normal(size=(3, 3))
            db.write(a, dft_energy=e, data={"dft_forces": f})
            ref.append((e, f))
    with pytest.warns(UnitsWarning, match="forces are implausibly large"):  # random forces, read as Hartree/Å
        f = read_frames(path, energy_key="dft_energy", forces_key="dft_forces", energy_unit="Hartree")
    np.testing.assert_allclose(f.energy, [e * units.Hartree for e, _ in ref])
    np.testing.assert_allclose(f.forces[2], ref[2][1] * units.Hartree)
    with pytest.raises(ValueError, match=r"kv\.db: key 'wB97_energy' \(energy.*frame 0; info keys: \['dft_energy'"):
        read_frames(path, energy_key="wB97_energy")


def test_data_layer_does_not_import_jax(tmp_path):
    path = tmp_path / "md.npz"
    _sgdml(path)
    code = (
        "import sys; from so3krates.data import read_frames, make_split; "
        f"read_frames({str(path)!r}); make_split(4, 2, 1); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax') "
        "or m.startswith(('so3krates.model', 'so3krates.train'))); print(bad); assert not bad"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# --------------------------------------------------------------------------------------------- Frames


def test_frames_methods(tmp_path):
    images = _atoms_list(3, periodic=True)
    path = tmp_path / "pbc.extxyz"
    ase.io.write(path, images, format="extxyz")
    f = read_frames(path)
    assert len(f) == 3 and f.n_atoms.tolist() == [4, 5, 6] and f.elements == [6]
    atoms = f.to_atoms(1)
    assert atoms.get_potential_energy() == pytest.approx(f.energy[1])
    np.testing.assert_allclose(atoms.get_stress(voigt=False), f.stress[1])
    np.testing.assert_allclose(atoms.get_forces(), f.forces[1])
    np.testing.assert_allclose(atoms.cell[:], f.cell[1])
    assert atoms.pbc.all()
    back = Frames.from_atoms([f.to_atoms(i) for i in range(len(f))], source="x")
    np.testing.assert_allclose(back.stress, f.stress)
    np.testing.assert_allclose(back.energy, f.energy)
    np.testing.assert_array_equal(back.pbc, f.pbc)
    assert back.source == "x"
    sub = f.subset([2, 0])
    assert sub.n_atoms.tolist() == [6, 4]
    np.testing.assert_allclose(sub.stress[0], f.stress[2])
    np.testing.assert_allclose(sub.cell[1], f.cell[0])
    np.testing.assert_allclose(sub.forces[0], f.forces[2])
    sub.positions[0][0, 0] += 1.0  # a subset is a copy
    assert f.positions[2][0, 0] != sub.positions[0][0, 0]
    with pytest.raises(IndexError):
        f.subset([3])
    both = Frames.concatenate([f, sub])
    assert len(both) == 5 and both.n_atoms.tolist() == [4, 5, 6, 6, 4]
    np.testing.assert_allclose(both.energy[3:], f.energy[[2, 0]])
    np.testing.assert_allclose(both.stress[4], f.stress[0])
    assert both.source == str(path)
    unlabelled = Frames.from_atoms([Atoms("H2", positions=[[0, 0, 0], [0.7, 0, 0]])], source="bare")
    assert unlabelled.energy is None and unlabelled.to_atoms(0).calc is None
    with pytest.raises(ValueError, match=r"cannot concatenate: part 1 \(bare\) has no energy"):
        Frames.concatenate([f, unlabelled])
    with pytest.raises(ValueError, match=r"frame 1 has no 'energy' while frame 0 has one"):
        Frames.from_atoms([f.to_atoms(0), Atoms("H")], source="y")


# -------------------------------------------------------------------------------------- shared data


def _shared(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"reference data {path} absent (it lives in shared/data beside the repository)")
    return path


def test_shared_md17_ethanol():
    path = _shared("md17_ethanol.npz")
    f = read_frames(path, energy_unit="kcal/mol", require_energy=True, require_forces=True)
    assert len(f) == 2000 and set(f.n_atoms.tolist()) == {9}
    assert f.elements == [1, 6, 8]
    with np.load(path) as raw:
        np.testing.assert_allclose(f.energy, raw["E"][:, 0] * KCAL)
        np.testing.assert_allclose(f.forces[7], raw["F"][7] * KCAL)
    assert -4300 < f.energy.mean() < -4100  # eV: ethanol at PBE is about -4209 eV
    assert not f.pbc.any() and f.stress is None


def test_shared_azobenzene():
    path = _shared("azobenzene_kcal.extxyz")
    f = read_frames(path, energy_unit="kcal/mol", require_energy=True, require_forces=True)
    assert len(f) == 100 and set(f.n_atoms.tolist()) == {24}
    assert f.elements == [1, 6, 7]
    assert f.energy[0] == pytest.approx(-358872.85966800 * KCAL)
    np.testing.assert_allclose(f.forces[0][0], np.array([-0.005617, -0.004371, -0.002503]) * KCAL)
    assert not f.pbc.any()


def test_shared_lipo_pbc():
    path = _shared("lipo_pbc.extxyz")
    f = read_frames(path, require_energy=True, require_forces=True)
    assert len(f) == 50 and set(f.n_atoms.tolist()) == {192}
    assert f.elements == [3, 8, 15]
    assert f.pbc.all()
    np.testing.assert_allclose(np.diag(f.cell[0]), [10.54544, 12.319383, 14.856735])
    assert f.energy[0] == pytest.approx(-1202.43358566)
    np.testing.assert_allclose(f.forces[0][0], [-0.073899, -0.006582, 0.020927])


def test_frames_shape_errors():
    one = {"energy": None, "forces": None, "cell": np.zeros((1, 3, 3)), "pbc": np.zeros((1, 3)), "source": "mem"}
    with pytest.raises(ValueError, match=r"mem: frame 0: positions have shape \(3, 4\)"):
        Frames(positions=[np.zeros((3, 4))], numbers=[[1, 1, 1]], **one)
    with pytest.raises(ValueError, match=r"mem: frame 0: 2 positions but 3 atomic numbers"):
        Frames(positions=[np.zeros((2, 3))], numbers=[[1, 1, 1]], **one)
    with pytest.raises(ValueError, match=r"mem: 1 frames but stress has shape \(2, 3, 3\)"):
        Frames(positions=[np.zeros((2, 3))], numbers=[[1, 1]], stress=np.zeros((2, 3, 3)), **one)
    empty = Frames([], [], None, None, np.zeros((0, 3, 3)), np.zeros((0, 3)))
    assert len(empty) == 0 and empty.elements == [] and empty.n_atoms.shape == (0,)


# -- npz keys: the authors' mlff convention, sGDML metadata, keys that are not understood (issue #19) -----


def test_npz_mlff_convention_padding_cell_and_ignored_keys(tmp_path):
    rng = np.random.default_rng(3)
    pos = np.stack([_molecule(rng, 5) for _ in range(3)]) + 1.0
    z = np.array([[6, 1, 1, 0, 0], [6, 1, 1, 8, 0], [6, 1, 1, 8, 1]])
    path = tmp_path / "mlff.npz"
    np.savez(
        path, R=pos, z=z, E=rng.normal(size=(3, 1)), F=rng.normal(size=(3, 5, 3)), unit_cell=np.eye(3) * 12.0,
        idx_i=np.zeros((3, 8), int), idx_j=np.zeros((3, 8), int), Q=np.zeros((3, 1)), q=np.zeros((3, 5)),
    )  # fmt: skip
    f = read_frames(path)
    assert f.n_atoms.tolist() == [3, 4, 5]  # Z = 0 after the last atom is padding
    assert f.pbc.all()  # 'unit_cell' is the cell: periodic (no pbc key: non-zero cell vectors)
    np.testing.assert_allclose(f.cell[0], np.eye(3) * 12.0)
    np.savez(path, R=pos, z=z, unit_cell=np.eye(3) * 12.0, pbc=np.array([True, True, False]))
    assert read_frames(path).pbc.tolist() == [[True, True, False]] * 3  # an explicit pbc wins
    np.savez(path, R=pos, z=z, node_mask=z > 0)
    assert read_frames(path).n_atoms.tolist() == [3, 4, 5]
    mask = z > 0
    mask[0, 3] = True  # the mask says atom 3 of frame 0 is real, but its Z is 0
    np.savez(path, R=pos, z=z, node_mask=mask)
    with pytest.raises(ValueError, match=r"mlff\.npz: key 'z': frame 0: atom 3 has atomic number 0.*node_mask marks"):
        read_frames(path)


def test_npz_sgdml_metadata_is_read_and_unknown_keys_are_refused(tmp_path):
    path = tmp_path / "meta.npz"
    meta = {k: np.array("x") for k in ("type", "code_version", "name", "theory", "md5")}
    stats = {f"{q}_{s}": np.array(1.0) for q in "EF" for s in ("min", "max", "mean", "var")}
    data = _sgdml(path, **meta, **stats, perms=np.arange(5)[None], e_unit=np.array("eV"), r_unit=np.array("Ang"))
    np.testing.assert_allclose(read_frames(path).energy, data["E"].ravel())
    _sgdml(path, dipole=np.zeros((4, 3)), charges=np.zeros((4, 5)))
    with pytest.raises(
        ValueError, match=r"meta\.npz: keys \['charges', 'dipole'\] not understood.*understood keys: pos"
    ):
        read_frames(path)


def test_npz_ambiguous_keys_and_user_named_labels(tmp_path):
    path = tmp_path / "two.npz"
    _sgdml(path, lattice=np.eye(3) * 9, cell=np.eye(3) * 9)
    with pytest.raises(ValueError, match=r"two\.npz: keys \['cell', 'lattice'\] all hold the cell: keep one"):
        read_frames(path)
    data = _sgdml(path, E_dft=np.zeros(4), energy=np.ones(4))
    with pytest.raises(ValueError, match=r"keys \['E', 'energy'\] all hold the energy: keep one \(or name"):
        read_frames(path)
    f = read_frames(path, energy_key="E_dft")  # a named label is understood; the unnamed 'E'/'energy' too
    np.testing.assert_allclose(f.energy, 0.0)
    assert data["E"].shape == (4, 1)


def test_npz_file_units_are_used_and_contradictions_refused(tmp_path):
    path = tmp_path / "u.npz"
    data = _sgdml(path, e_unit=np.array("kcal/mol"), r_unit=np.array("bohr"))
    f = read_frames(path)
    np.testing.assert_allclose(f.energy, data["E"].ravel() * units.kcal / units.mol)
    np.testing.assert_allclose(f.positions[0], data["R"][0] * units.Bohr)
    assert read_frames(path, energy_unit="kcal/mol", length_unit="Bohr").energy[0] == f.energy[0]
    with pytest.raises(ValueError, match=r"u\.npz: length unit Å was given \(--length-unit.*'r_unit' says 'bohr'"):
        read_frames(path, length_unit="Å")
    _sgdml(path, e_unit=np.array([1.0]))
    with pytest.raises(ValueError, match=r"u\.npz: key 'e_unit' \(energy unit\) must be one string"):
        read_frames(path)


def test_train_config_takes_the_file_units(tmp_path):
    from so3krates.train.config import TrainConfig

    path = tmp_path / "u.npz"
    _sgdml(path, e_unit=np.array("kcal/mol"))
    config = TrainConfig(data=str(path))
    assert (config.energy_unit, config.length_unit) == ("kcal/mol", "Å")  # saved so in config.yaml, metadata.json
    assert TrainConfig(data=str(tmp_path / "other.xyz")).energy_unit == "eV"  # no unit keys: as before
    with pytest.raises(ValueError, match=r"u\.npz: energy unit Hartree was given"):
        TrainConfig(data=str(path), energy_unit="Hartree", length_unit=None)
