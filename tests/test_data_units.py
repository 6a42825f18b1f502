"""Tests of so3krates.data.units: factors from ase.units, spellings, errors, round trips."""

from __future__ import annotations

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
