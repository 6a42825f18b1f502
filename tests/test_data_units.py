"""Tests of so3krates.data.units: factors from ase.units, spellings, errors, round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import units

from so3krates.data import (
    ENERGY_UNIT_NAMES,
    LENGTH_UNIT_NAMES,
    energy_factor,
    energy_from_ev,
    energy_unit_name,
    force_factor,
    force_unit_label,
    forces_from_ev,
    length_factor,
    length_from_angstrom,
    length_unit_name,
    stress_factor,
    stress_from_ev,
)

ENERGY = {
    "eV": 1.0,
    "kcal/mol": units.kcal / units.mol,
    "kJ/mol": units.kJ / units.mol,
    "Hartree": units.Hartree,
}
LENGTH = {"Å": 1.0, "A": 1.0, "Angstrom": 1.0, "Ang": 1.0, "Bohr": units.Bohr}


@pytest.mark.parametrize(("name", "factor"), ENERGY.items())
def test_energy_factors(name, factor):
    assert energy_factor(name) == pytest.approx(factor, rel=1e-15)
    assert energy_factor(name.upper()) == energy_factor(name.lower()) == energy_factor(name)
    assert energy_unit_name(f" {name.lower()} ") == name


@pytest.mark.parametrize(("name", "factor"), LENGTH.items())
def test_length_factors(name, factor):
    assert length_factor(name) == pytest.approx(factor, rel=1e-15)
    assert length_factor(name.lower()) == length_factor(name)
    assert length_unit_name(name) in ("Å", "Bohr")


def test_known_values():
    # sanity against textbook numbers, so a wrong ase constant would be noticed
    assert energy_factor("kcal/mol") == pytest.approx(0.0433641, rel=1e-5)
    assert energy_factor("kJ/mol") == pytest.approx(0.0103643, rel=1e-5)
    assert energy_factor("Hartree") == pytest.approx(27.211386, rel=1e-6)
    assert energy_factor("Ha") == energy_factor("Hartree")
    assert length_factor("Bohr") == pytest.approx(0.529177, rel=1e-6)


def test_unknown_units_list_allowed_names():
    with pytest.raises(ValueError, match=r"unknown energy unit 'kcal'; allowed: eV, kcal/mol, kJ/mol, Hartree"):
        energy_factor("kcal")
    with pytest.raises(ValueError, match=r"unknown length unit 'nm'; allowed: Å, A, Angstrom, Ang, Bohr"):
        length_factor("nm")
    with pytest.raises(ValueError, match="unknown energy unit None"):
        energy_factor(None)
    with pytest.raises(ValueError, match="unknown length unit"):
        force_factor("eV", "pm")
    assert set(ENERGY) <= set(ENERGY_UNIT_NAMES) and set(LENGTH) <= set(LENGTH_UNIT_NAMES)


@pytest.mark.parametrize("e_unit", list(ENERGY))
@pytest.mark.parametrize("l_unit", ["Å", "Bohr"])
def test_round_trips(e_unit, l_unit):
    rng = np.random.default_rng(0)
    e, x, f, s = rng.normal(size=5), rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), rng.normal(size=(3, 3))
    ef, lf = energy_factor(e_unit), length_factor(l_unit)
    np.testing.assert_allclose(energy_from_ev(e * ef, e_unit), e, rtol=1e-14)
    np.testing.assert_allclose(length_from_angstrom(x * lf, l_unit), x, rtol=1e-14)
    np.testing.assert_allclose(forces_from_ev(f * force_factor(e_unit, l_unit), e_unit, l_unit), f, rtol=1e-14)
    np.testing.assert_allclose(stress_from_ev(s * stress_factor(e_unit, l_unit), e_unit, l_unit), s, rtol=1e-14)
    assert force_factor(e_unit, l_unit) == pytest.approx(ef / lf)
    assert stress_factor(e_unit, l_unit) == pytest.approx(ef / lf**3)
    assert energy_from_ev(1.5, e_unit) == pytest.approx(1.5 / ef)  # plain floats work too


def test_labels():
    assert force_unit_label("kcal/mol", "A") == "kcal/mol/Å"
    assert force_unit_label("hartree", "bohr") == "Hartree/Bohr"


# -- units a file states (sGDML e_unit / r_unit) and plausibility of the labels (issue #19) --------------

from so3krates.data import UnitsWarning, check_units, resolve_units  # noqa: E402
from so3krates.data.frames import Frames  # noqa: E402


def test_resolve_units_user_file_default():
    declared = {"energy": ("e_unit", "kcal/mol"), "length": ("r_unit", "Ang")}
    assert resolve_units(None, None, {}, "f.npz") == ("eV", "Å", [])  # files without unit keys: as before
    e, length, notes = resolve_units(None, None, declared, "f.npz")
    assert (e, length) == ("kcal/mol", "Å") and "from the file's key 'e_unit'" in notes[0]
    assert resolve_units("KCAL/MOL", "A", declared, "f.npz")[:2] == ("kcal/mol", "Å")
    assert resolve_units(None, None, {"energy": ("e_unit", "au"), "length": ("r_unit", "au")}, "f")[:2] == (
        "Hartree",
        "Bohr",
    )
    assert resolve_units(None, None, {}, "f", default=("kcal/mol", "Bohr"))[:2] == ("kcal/mol", "Bohr")
    with pytest.raises(ValueError, match=r"f\.npz: energy unit eV was given \(--energy-unit.*'e_unit' says 'kcal/mol'"):
        resolve_units("eV", None, declared, "f.npz")
    with pytest.raises(ValueError, match=r"f\.npz: key 'e_unit' gives the energy unit 'meV'.*--energy-unit"):
        resolve_units(None, None, {"energy": ("e_unit", "meV")}, "f.npz")
    assert resolve_units("eV", None, {"energy": ("e_unit", "meV")}, "f.npz")[0] == "eV"  # the user decides


def _trajectory(m: int = 64, seed: int = 0) -> tuple[list, list, np.ndarray, list]:
    """A harmonic 4-atom 'MD' trajectory in eV and Å: positions, numbers, energies, forces = −dE/dR."""
    rng = np.random.default_rng(seed)
    ref = np.array([[0, 0, 0], [1.1, 0, 0], [0, 1.1, 0], [0, 0, 1.1]])
    k, x, v = 5.0, ref + rng.normal(scale=0.05, size=(4, 3)), rng.normal(scale=0.05, size=(4, 3))
    pos, energy, forces = [], [], []
    for _ in range(m):
        x = x + v * 0.2 + rng.normal(scale=0.002, size=(4, 3))
        v = v - 0.2 * k * (x - ref) * 0.2
        pos.append(x.copy())
        energy.append(-100.0 + 0.5 * k * np.sum((x - ref) ** 2))
        forces.append(-k * (x - ref))
    return pos, [np.array([6, 1, 1, 1])] * m, np.array(energy), forces


def _frames(pos, numbers, energy, forces) -> Frames:
    m = len(pos)
    return Frames(pos, numbers, energy, forces, np.zeros((m, 3, 3)), np.zeros((m, 3), bool), source="traj.npz")


def test_units_check_silent_on_consistent_trajectory(recwarn):
    assert check_units(_frames(*_trajectory()), "eV", "Å") == []
    assert not [w for w in recwarn if issubclass(w.category, UnitsWarning)]


@pytest.mark.parametrize(
    ("scale_e", "scale_f", "expected"),
    [
        (1 / units.Hartree, 1.0, "energies in Hartree with forces in eV/Å"),  # energies Hartree, forces eV/Å
        (1.0, units.Bohr / units.Hartree, "energies in eV with forces in Hartree/Bohr"),
        (1.0, -1.0, "wrong sign"),
    ],
)
def test_units_check_names_the_mismatch_from_the_force_energy_ratio(scale_e, scale_f, expected):
    pos, numbers, energy, forces = _trajectory()
    frames = _frames(pos, numbers, energy * scale_e, [f * scale_f for f in forces])
    with pytest.warns(UnitsWarning, match=r"traj\.npz: energy differences between consecutive frames") as record:
        check_units(frames, "eV", "Å")
    assert expected in str(record[0].message)


def test_units_check_magnitudes():
    pos, numbers, energy, forces = _trajectory()
    f = units.mol / units.kcal  # eV-sized numbers written in kcal/mol, read as eV
    frames = _frames(pos, numbers, (energy - 1000.0) * f * 10, [x * f * 10 for x in forces])
    with pytest.warns(UnitsWarning) as record:
        check_units(frames, "eV", "Å")
    text = " ".join(str(w.message) for w in record)
    assert "energies are larger than any total energy of their atoms" in text
    assert "forces are implausibly large" in text and "In kcal/mol/Å" in text


def test_units_check_is_cheap_for_many_frames():
    import time

    rng = np.random.default_rng(0)
    m = 100_000
    pos = list(rng.normal(size=(m, 3, 3)))
    frames = Frames.__new__(Frames)  # skip Frames' own per-frame checks: only check_units is timed
    frames.positions, frames.numbers, frames.forces = pos, [np.array([8, 1, 1])] * m, list(rng.normal(size=(m, 3, 3)))
    frames.energy, frames.cell, frames.source = rng.normal(size=m), np.zeros((m, 3, 3)), "big.npz"
    start = time.perf_counter()
    check_units(frames, "eV", "Å")
    assert time.perf_counter() - start < 1.0


SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL = [
    ("md17_ethanol.npz", "kcal/mol", ":"),
    ("azobenzene_kcal.extxyz", "kcal/mol", ":"),
    ("lipo_pbc.extxyz", "eV", ":"),
]


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data (real datasets) is not present")
@pytest.mark.parametrize(("name", "unit", "index"), REAL)
def test_real_datasets_do_not_warn_in_their_units_and_do_in_wrong_ones(name, unit, index):
    import warnings

    from so3krates.data import read_frames

    with warnings.catch_warnings():
        warnings.simplefilter("error", UnitsWarning)
        read_frames(SHARED / name, energy_unit=unit, index=index)
    if unit == "kcal/mol":  # the same numbers read as eV: 23× too large
        with pytest.warns(UnitsWarning) as record:
            read_frames(SHARED / name, energy_unit="eV", index=index)
        text = " ".join(str(w.message) for w in record)
        assert "Are the forces really in eV/Å" in text and "Are the energies really in eV" in text


@pytest.mark.parametrize("name", ["ethanol", "aspirin", "toluene"])
def test_bundled_datasets_do_not_warn(name):
    import warnings

    from so3krates import datasets
    from so3krates.data import read_frames

    with warnings.catch_warnings():
        warnings.simplefilter("error", UnitsWarning)
        read_frames(datasets.path(name), index=":120")  # a slice: ASE's gzipped extxyz parse is slow
