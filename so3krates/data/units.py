"""Energy and length units of data files, converted once on load to eV and Å (factors from ``ase.units``)."""

from __future__ import annotations

from ase import units

#: energy unit name → factor that turns a value in that unit into eV
ENERGY_UNITS: dict[str, float] = {
    "eV": 1.0,
    "kcal/mol": units.kcal / units.mol,
    "kJ/mol": units.kJ / units.mol,
    "Hartree": units.Hartree,
}

#: length unit name → factor that turns a value in that unit into Å
LENGTH_UNITS: dict[str, float] = {
    "Å": 1.0,
    "A": 1.0,
    "Angstrom": 1.0,
    "Ang": 1.0,
    "Bohr": units.Bohr,
}


def energy_factor(unit: str) -> float:
    """Factor that converts an energy in ``unit`` to eV (multiply).

    Raises:
        ValueError: ``unit`` is not one of ``ENERGY_UNITS`` (the message lists them).
    """
    try:
        return float(ENERGY_UNITS[unit])
    except (KeyError, TypeError):
        raise ValueError(f"unknown energy unit {unit!r}; allowed: {', '.join(ENERGY_UNITS)}") from None


def length_factor(unit: str) -> float:
    """Factor that converts a length in ``unit`` to Å (multiply).

    Raises:
        ValueError: ``unit`` is not one of ``LENGTH_UNITS`` (the message lists them).
    """
    try:
        return float(LENGTH_UNITS[unit])
    except (KeyError, TypeError):
        raise ValueError(f"unknown length unit {unit!r}; allowed: {', '.join(LENGTH_UNITS)}") from None
