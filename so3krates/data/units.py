"""Energy and length units of data files; everything is converted once, on load, to eV and Å.

Factors come from ``ase.units`` (CODATA 2014 in ase 3.29), so numbers agree with ASE-based tools.
``*_factor`` functions give the factor that turns a value *in the named unit* into eV / Å / eV/Å /
eV/Å³ (multiply); ``*_from_ev`` / ``length_from_angstrom`` go back, for reporting errors and
predictions in the unit the user's data came in.

Names are matched case-insensitively ("ev", "KCAL/MOL", "bohr" all work); ``Å`` may also be written
``A``, ``Angstrom`` or ``Ang``, and ``Hartree`` as ``Ha``; ``au`` is Hartree for energies and Bohr for
lengths (as sGDML files write it). :func:`resolve_units` decides the units of a file from the user's and
the file's own (sGDML's ``e_unit``/``r_unit``).
"""

from __future__ import annotations

import numpy as np
from ase import units

#: canonical energy unit name → factor that turns a value in that unit into eV
ENERGY_UNITS: dict[str, float] = {
    "eV": 1.0,
    "kcal/mol": units.kcal / units.mol,
    "kJ/mol": units.kJ / units.mol,
    "Hartree": units.Hartree,
}

#: canonical length unit name → factor that turns a value in that unit into Å
LENGTH_UNITS: dict[str, float] = {
    "Å": 1.0,
    "Bohr": units.Bohr,
}

# other spellings (lower case) → canonical name; "A" is the usual ASCII stand-in for Å
_ENERGY_ALIASES = {name.lower(): name for name in ENERGY_UNITS} | {"ha": "Hartree", "au": "Hartree", "a.u.": "Hartree"}
_LENGTH_ALIASES = {name.lower(): name for name in LENGTH_UNITS} | {
    "a": "Å",
    "angstrom": "Å",
    "ang": "Å",
    "ångström": "Å",
    "angstroem": "Å",
    "au": "Bohr",
    "a.u.": "Bohr",
}

#: every accepted spelling, for messages and CLI help
ENERGY_UNIT_NAMES: tuple[str, ...] = ("eV", "kcal/mol", "kJ/mol", "Hartree", "Ha")
LENGTH_UNIT_NAMES: tuple[str, ...] = ("Å", "A", "Angstrom", "Ang", "Bohr")
_FLAGS = {"energy": "--energy-unit", "length": "--length-unit"}


def _canonical(unit: object, aliases: dict[str, str], allowed: tuple[str, ...], kind: str) -> str:
    if isinstance(unit, str):
        name = aliases.get(unit.strip().lower())
        if name is not None:
            return name
    raise ValueError(f"unknown {kind} unit {unit!r}; allowed: {', '.join(allowed)} (case does not matter)")


def energy_unit_name(unit: str) -> str:
    """Canonical spelling of an energy unit ("kcal/mol", "eV", ...), e.g. for labels in reports.

    Raises:
        ValueError: unknown unit; the message lists the allowed names.
    """
    return _canonical(unit, _ENERGY_ALIASES, ENERGY_UNIT_NAMES, "energy")


def length_unit_name(unit: str) -> str:
    """Canonical spelling of a length unit ("Å" or "Bohr").

    Raises:
        ValueError: unknown unit; the message lists the allowed names.
    """
    return _canonical(unit, _LENGTH_ALIASES, LENGTH_UNIT_NAMES, "length")


def energy_factor(unit: str) -> float:
    """Factor that converts an energy in ``unit`` to eV (multiply).

    Raises:
        ValueError: unknown unit; the message lists the allowed names.
    """
    return float(ENERGY_UNITS[energy_unit_name(unit)])


def length_factor(unit: str) -> float:
    """Factor that converts a length in ``unit`` to Å (multiply).

    Raises:
        ValueError: unknown unit; the message lists the allowed names.
    """
    return float(LENGTH_UNITS[length_unit_name(unit)])


def force_factor(energy_unit: str, length_unit: str) -> float:
    """Factor that converts a force in energy_unit/length_unit to eV/Å (multiply)."""
    return energy_factor(energy_unit) / length_factor(length_unit)


def stress_factor(energy_unit: str, length_unit: str) -> float:
    """Factor that converts a stress in energy_unit/length_unit³ to eV/Å³ (multiply)."""
    return energy_factor(energy_unit) / length_factor(length_unit) ** 3


def energy_from_ev(value: float | np.ndarray, unit: str) -> float | np.ndarray:
    """Energies (any shape) given in eV, expressed in ``unit`` (the inverse of :func:`energy_factor`)."""
    return value / energy_factor(unit)


def length_from_angstrom(value: float | np.ndarray, unit: str) -> float | np.ndarray:
    """Lengths (any shape) given in Å, expressed in ``unit``."""
    return value / length_factor(unit)


def forces_from_ev(value: float | np.ndarray, energy_unit: str, length_unit: str) -> float | np.ndarray:
    """Forces (any shape, e.g. (n, 3)) given in eV/Å, expressed in energy_unit/length_unit."""
    return value / force_factor(energy_unit, length_unit)


def stress_from_ev(value: float | np.ndarray, energy_unit: str, length_unit: str) -> float | np.ndarray:
    """Stresses (any shape, e.g. (3, 3)) given in eV/Å³, expressed in energy_unit/length_unit³."""
    return value / stress_factor(energy_unit, length_unit)


def force_unit_label(energy_unit: str, length_unit: str) -> str:
    """Printable force unit, e.g. ``"kcal/mol/Å"`` or ``"Hartree/Bohr"``."""
    return f"{energy_unit_name(energy_unit)}/{length_unit_name(length_unit)}"


def resolve_units(
    energy_unit: str | None,
    length_unit: str | None,
    declared: dict[str, tuple[str, str]],
    where: str,
    default: tuple[str, str] = ("eV", "Å"),
) -> tuple[str, str, list[str]]:
    """The (energy, length) units to read a file in, and notes saying where a unit came from.

    Args:
        energy_unit, length_unit: the user's units; None: not given.
        declared: the file's own units, ``{"energy": (key, unit as written)}`` (e.g. sGDML's ``e_unit``).
        where: the file, for messages.
        default: units when neither the user nor the file gives one.
    Raises:
        ValueError: an unknown unit; a given unit that contradicts the file's (naming both); a file
            unit this module does not know when the user gave none.
    """
    given = {"energy": energy_unit, "length": length_unit}
    canonical = {"energy": energy_unit_name, "length": length_unit_name}
    out, notes = dict(zip(("energy", "length"), default, strict=True)), []
    for kind in ("energy", "length"):
        name = canonical[kind]
        user = None if given[kind] is None else name(given[kind])
        if kind not in declared:
            out[kind] = user or name(out[kind])
            continue
        key, text = declared[kind]
        try:
            stated = name(text)
        except ValueError:
            if user is None:
                raise ValueError(
                    f"{where}: key {key!r} gives the {kind} unit {text!r}, which so3krates does not know; "
                    f"give the unit with {_FLAGS[kind]} ({kind}_unit)"
                ) from None
            out[kind] = user
            notes.append(f"{kind} unit {user} as given ({_FLAGS[kind]}); the file's {key!r} says {text!r}")
            continue
        if user is not None and user != stated:
            raise ValueError(
                f"{where}: {kind} unit {user} was given ({_FLAGS[kind]} / {kind}_unit), but the file's key "
                f"{key!r} says {text!r} ({stated}): one of them is wrong; leave {_FLAGS[kind]} out to use the file's"
            )
        out[kind] = stated
        if user is None:
            notes.append(f"{kind} unit {stated} from the file's key {key!r} ({text!r})")
    return out["energy"], out["length"], notes
