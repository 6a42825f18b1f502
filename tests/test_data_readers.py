"""Tests of so3krates.data readers, Frames and units (small files made in tmp_path, plus the shared real data)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from so3krates.data import Frames, energy_factor, length_factor, read_frames

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
KCAL = units.kcal / units.mol


def _molecule(rng: np.random.Generator, n: int = 5) -> np.ndarray:
    """(n, 3) positions on a jittered line, at least ~1 Å apart."""
    pos = np.zeros((n, 3))
    pos[:, 0] = np.arange(n) * 1.2
    return pos + rng.normal(scale=0.05, size=(n, 3))


def _sgdml(path: Path, m: int = 4, n: int = 5, seed: int = 0, **overrides: np.ndarray) -> dict[str, np.ndarray]:
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
    rng = np.random.default_rng(seed)
    out = []
    for k in range(m):
        n = 4 + k  # different sizes
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


# ------------------------------------------------------------------------------------------- units


def test_units_round_trip_and_errors():
    assert energy_factor("eV") == 1.0
    assert energy_factor("kcal/mol") == pytest.approx(KCAL)
    assert energy_factor("kJ/mol") == pytest.approx(units.kJ / units.mol)
    assert energy_factor("Hartree") == pytest.approx(units.Hartree)
    for name in ("Å", "A", "Angstrom", "Ang"):
        assert length_factor(name) == 1.0
    assert length_factor("Bohr") == pytest.approx(units.Bohr)
    x = 1.2345
    for name in ("kcal/mol", "kJ/mol", "Hartree"):
        assert x * energy_factor(name) / energy_factor(name) == pytest.approx(x)
    with pytest.raises(ValueError, match=r"unknown energy unit 'kcal'.*kcal/mol.*Hartree"):
        energy_factor("kcal")
    with pytest.raises(ValueError, match=r"unknown length unit 'nm'.*Bohr"):
        length_factor("nm")


def test_read_units_bohr_hartree(tmp_path):
    path = tmp_path / "md.npz"
    data = _sgdml(path)
    f = read_frames(path, energy_unit="Hartree", length_unit="Bohr")
    np.testing.assert_allclose(f.positions[1], data["R"][1] * units.Bohr)
    np.testing.assert_allclose(f.energy, data["E"][:, 0] * units.Hartree)
    np.testing.assert_allclose(f.forces[2], data["F"][2] * units.Hartree / units.Bohr)
    with pytest.raises(ValueError, match="unknown energy unit"):
        read_frames(path, energy_unit="kcal")


# ------------------------------------------------------------------------------------------- npz


def test_npz_sgdml(tmp_path):
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


def test_npz_generic_padded_periodic_voigt(tmp_path):
    rng = np.random.default_rng(1)
    m, n = 3, 6
    pos = np.stack([_molecule(rng, n) for _ in range(m)])
    mask = np.ones((m, n), bool)
    mask[0, 4:] = False
    mask[2, 5:] = False
    z = np.where(mask, 6, 0)
    cell = np.diag([9.0, 5.0, 5.0])
    stress = rng.normal(size=(m, 6))
    forces = rng.normal(size=(m, n, 3))
    path = tmp_path / "generic.npz"
    np.savez(
        path, positions=pos, atomic_numbers=z, energy=rng.normal(size=m), forces=forces, cell=cell,
        pbc=np.array([True, True, True]), stress=stress, node_mask=mask,
    )  # fmt: skip
    f = read_frames(path)
    assert f.n_atoms.tolist() == [4, 6, 5]
    np.testing.assert_allclose(f.forces[0], forces[0, :4])
    assert f.cell.shape == (m, 3, 3) and f.pbc.all()
    s = f.stress[1]
    np.testing.assert_allclose(np.diag(s), stress[1, :3])
    np.testing.assert_allclose([s[1, 2], s[0, 2], s[0, 1]], stress[1, 3:])
    np.testing.assert_allclose(s, s.T)
    # (n,) atomic numbers, no labels, no pbc key: molecules without energy
    path2 = tmp_path / "plain.npz"
    np.savez(path2, positions=pos, atomic_numbers=np.full(n, 8))
    g = read_frames(path2)
    assert g.energy is None and g.forces is None and not g.pbc.any()
    with pytest.raises(ValueError, match=r"plain\.npz.*'energy'.*keys found"):
        read_frames(path2, require_energy=True)


def test_npz_bad_inputs(tmp_path):
    path = tmp_path / "bad.npz"
    _sgdml(path, F=np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match=r"bad\.npz.*'F'.*shape"):
        read_frames(path)
    _sgdml(path, E=np.zeros(3))
    with pytest.raises(ValueError, match=r"bad\.npz.*'E'.*shape"):
        read_frames(path)
    e = np.zeros(4)
    e[2] = np.nan
    _sgdml(path, E=e)
    with pytest.raises(ValueError, match=r"bad\.npz.*'E'.*frame 2.*NaN"):
        read_frames(path)
    f = np.zeros((4, 5, 3))
    f[3, 1, 0] = np.inf
    _sgdml(path, F=f)
    with pytest.raises(ValueError, match=r"bad\.npz.*'F'.*frame 3.*NaN or infinite forces"):
        read_frames(path)
    r = _sgdml(tmp_path / "ok.npz")["R"].copy()
    r[1, 0] = np.nan
    _sgdml(path, R=r)
    with pytest.raises(ValueError, match=r"bad\.npz.*'R'.*frame 1.*positions"):
        read_frames(path)
    r[1, 0] = r[1, 1] + 0.01  # overlapping atoms
    _sgdml(path, R=r)
    with pytest.raises(ValueError, match=r"bad\.npz: frame 1: atoms 0 and 1.*closer"):
        read_frames(path)
    _sgdml(path, z=np.array([6, 1, 1, 200, 1]))
    with pytest.raises(ValueError, match=r"bad\.npz: frame 0: atom 3 has atomic number 200"):
        read_frames(path)
    np.savez(path, coords=np.zeros((2, 3, 3)), Z=np.ones(3))
    with pytest.raises(ValueError, match=r"bad\.npz.*missing required keys.*\['coords', 'Z'\]"):
        read_frames(path)
    np.savez(path, R=np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match=r"bad\.npz.*missing required key 'z'"):
        read_frames(path)
    _sgdml(path, R=np.zeros((0, 5, 3)), E=np.zeros(0), F=np.zeros((0, 5, 3)))
    with pytest.raises(ValueError, match=r"bad\.npz.*empty dataset"):
        read_frames(path)
    _sgdml(path)
    with pytest.raises(ValueError, match=r"bad\.npz.*'energies'.*keys found"):
        read_frames(path, energy_key="energies")
    np.savez(path, R=np.zeros((2, 5, 3)) + np.arange(5)[:, None], z=np.ones(5, int))
    with pytest.raises(ValueError, match=r"bad\.npz.*'F'.*forces.*keys found"):
        read_frames(path, require_forces=True)
    m = 2
    np.savez(
        path, positions=np.zeros((m, 2, 3)) + [[0, 0, 0], [1, 0, 0]], atomic_numbers=np.ones(2, int),
        cell=np.zeros((m, 3, 3)), pbc=np.ones(3, bool),
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"bad\.npz: frame 0: the periodic cell has zero volume"):
        read_frames(path)
    cell = np.tile(np.eye(3) * 5, (m, 1, 1))
    cell[1, 0, 0] = np.nan
    np.savez(path, positions=np.zeros((m, 2, 3)) + [[0, 0, 0], [1, 0, 0]], atomic_numbers=np.ones(2, int), cell=cell)
    with pytest.raises(ValueError, match=r"bad\.npz.*'cell'.*frame 1"):
        read_frames(path)


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        read_frames(tmp_path / "nothere.npz")
    weird = tmp_path / "data.weird"
    weird.write_text("hello\n")
    with pytest.raises(ValueError, match=r"data\.weird.*(unsupported format|cannot read)"):
        read_frames(weird)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"broken\.npz.*cannot read"):
        read_frames(broken)


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
    assert len(read_frames(path, index="-1")) == 1


def test_extxyz_info_keys(tmp_path):
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
    f = read_frames(path, require_energy=True, require_forces=True)  # REF_* fallback
    np.testing.assert_allclose(f.energy, [a.info["REF_energy"] for a in images])
    np.testing.assert_allclose(f.forces[1], images[1].arrays["REF_forces"], rtol=1e-6, atol=1e-9)
    g = read_frames(path, energy_key="dft_energy", forces_key="REF_forces")
    np.testing.assert_allclose(g.energy, [a.info["dft_energy"] for a in images])
    with pytest.raises(ValueError, match=r"ref\.xyz.*'xc_energy'.*frame 0.*info keys"):
        read_frames(path, energy_key="xc_energy")


def test_extxyz_missing_labels(tmp_path):
    images = _atoms_list(3)
    bare = [Atoms(a.numbers, a.positions) for a in images]
    path = tmp_path / "bare.extxyz"
    ase.io.write(path, bare, format="extxyz")
    f = read_frames(path)
    assert f.energy is None and f.forces is None
    with pytest.raises(ValueError, match=r"bare\.extxyz.*'forces'.*frame 0.*required"):
        read_frames(path, require_forces=True)
    with pytest.raises(ValueError, match=r"bare\.extxyz.*'energy'.*frame 0.*required"):
        read_frames(path, require_energy=True)
    mixed = [images[0], bare[1], images[2]]
    path2 = tmp_path / "mixed.extxyz"
    ase.io.write(path2, mixed, format="extxyz")
    with pytest.raises(ValueError, match=r"mixed\.extxyz.*frame 1 has no energy"):
        read_frames(path2)
    with pytest.raises(ValueError, match=r"mixed\.extxyz.*frame 1 has no forces \(required\)"):
        read_frames(path2, require_forces=True)
    bad = _atoms_list(3)
    bad[2].positions[1] = bad[2].positions[0] + [0.05, 0, 0]
    path3 = tmp_path / "close.extxyz"
    ase.io.write(path3, bad, format="extxyz")
    with pytest.raises(ValueError, match=r"close\.extxyz: frame 2: atoms 0 and 1 .*closer than 0\.1"):
        read_frames(path3)
    nan = _atoms_list(2)
    nan[1].calc.results["forces"][2, 1] = np.nan
    path4 = tmp_path / "nan.extxyz"
    ase.io.write(path4, nan, format="extxyz")
    with pytest.raises(ValueError, match=r"nan\.extxyz.*'forces'.*frame 1.*NaN"):
        read_frames(path4)
    empty = tmp_path / "empty.extxyz"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty\.extxyz.*(empty|cannot read)"):
        read_frames(empty)


def test_periodic_extxyz_with_stress_and_frames_round_trip(tmp_path):
    images = _atoms_list(3, periodic=True)
    path = tmp_path / "pbc.extxyz"
    ase.io.write(path, images, format="extxyz")
    f = read_frames(path, energy_unit="kJ/mol", length_unit="Bohr")
    ef, lf = units.kJ / units.mol, units.Bohr
    assert f.pbc.all() and f.stress.shape == (3, 3, 3)
    for k, a in enumerate(images):
        np.testing.assert_allclose(f.cell[k], a.cell[:] * lf, atol=1e-7)
        np.testing.assert_allclose(f.positions[k], a.positions * lf, atol=1e-7)
        np.testing.assert_allclose(f.forces[k], a.get_forces() * ef / lf, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(f.stress[k], a.get_stress(voigt=False) * ef / lf**3, rtol=1e-6, atol=1e-12)
    # Frames <-> Atoms
    atoms = f.to_atoms(1)
    assert atoms.get_potential_energy() == pytest.approx(f.energy[1])
    np.testing.assert_allclose(atoms.get_stress(voigt=False), f.stress[1])
    np.testing.assert_allclose(atoms.get_forces(), f.forces[1])
    back = Frames.from_atoms([f.to_atoms(i) for i in range(len(f))], source="x")
    np.testing.assert_allclose(back.stress, f.stress)
    np.testing.assert_allclose(back.energy, f.energy)
    np.testing.assert_array_equal(back.pbc, f.pbc)
    sub = f.subset([2, 0])
    assert sub.n_atoms.tolist() == [6, 4]
    np.testing.assert_allclose(sub.stress[0], f.stress[2])
    np.testing.assert_allclose(sub.cell[1], f.cell[0])


def test_ase_db_and_traj(tmp_path):
    images = _atoms_list(3)
    for name in ("mols.db", "mols.traj"):
        path = tmp_path / name
        ase.io.write(path, images)
        f = read_frames(path, require_energy=True, require_forces=True)
        assert f.n_atoms.tolist() == [4, 5, 6]
        np.testing.assert_allclose(f.energy, [a.get_potential_energy() for a in images])
        np.testing.assert_allclose(f.forces[2], images[2].get_forces())


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
    raw = np.load(path)
    np.testing.assert_allclose(f.energy, raw["E"][:, 0] * KCAL)
    np.testing.assert_allclose(f.forces[7], raw["F"][7] * KCAL)
    assert -4300 < f.energy.mean() < -4100  # eV


def test_shared_azobenzene():
    path = _shared("azobenzene_kcal.extxyz")
    f = read_frames(path, energy_unit="kcal/mol", require_energy=True, require_forces=True)
    assert len(f) == 100 and set(f.n_atoms.tolist()) == {24}
    assert f.elements == [1, 6, 7]
    assert f.energy[0] == pytest.approx(-358872.85966800 * KCAL)
    assert not f.pbc.any()


def test_shared_lipo_pbc():
    path = _shared("lipo_pbc.extxyz")
    f = read_frames(path, require_energy=True, require_forces=True)
    assert len(f) == 50 and set(f.n_atoms.tolist()) == {192}
    assert f.elements == [3, 8, 15]
    assert f.pbc.all()
    np.testing.assert_allclose(np.diag(f.cell[0]), [10.54544, 12.319383, 14.856735])
    assert f.energy[0] == pytest.approx(-1202.43358566)


def test_close_atoms_minimum_image_and_late_frame(tmp_path):
    # periodic: atoms 0.05 Å apart only through the boundary
    a = Atoms("H2", positions=[[0.02, 1, 1], [4.97, 1, 1]], cell=np.eye(3) * 5.0, pbc=True)
    path = tmp_path / "wrap.extxyz"
    ase.io.write(path, [a.copy(), a], format="extxyz")
    with pytest.raises(ValueError, match=r"wrap\.extxyz: frame 0: atoms 0 and 1 .*closer than 0\.1"):
        read_frames(path)
    a.pbc = False  # the same coordinates as a molecule are fine
    ase.io.write(path, [a], format="extxyz")
    assert len(read_frames(path)) == 1
    # the vectorised pre-check finds a bad frame deep in a large molecular dataset
    rng = np.random.default_rng(5)
    r = np.stack([_molecule(rng) for _ in range(300)])
    r[257, 4] = r[257, 2] + [0.0, 0.03, 0.0]
    big = tmp_path / "big.npz"
    np.savez(big, R=r, z=np.array([6, 1, 1, 8, 1]))
    with pytest.raises(ValueError, match=r"big\.npz: frame 257: atoms 2 and 4"):
        read_frames(big)
    assert len(read_frames(big, index="-40:")) == 40
