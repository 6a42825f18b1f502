"""Data layer: read labelled structures (npz, extxyz, ASE db, ...) into :class:`Frames` (eV, Å), split them.

Depends on numpy, ase and vesin only, never on the model or training code (no jax import), so data
can be read and checked without the ML stack.
"""

from so3krates.data.frames import Frames
from so3krates.data.npz import declared_units
from so3krates.data.plausibility import UnitsWarning, check_units
from so3krates.data.readers import read_frames
from so3krates.data.splits import load_split, make_split, save_split
from so3krates.data.units import (
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
    resolve_units,
    stress_factor,
    stress_from_ev,
)

__all__ = [
    "Frames",
    "read_frames",
    "UnitsWarning",
    "check_units",
    "declared_units",
    "resolve_units",
    "make_split",
    "save_split",
    "load_split",
    "ENERGY_UNIT_NAMES",
    "LENGTH_UNIT_NAMES",
    "energy_factor",
    "length_factor",
    "force_factor",
    "stress_factor",
    "energy_from_ev",
    "length_from_angstrom",
    "forces_from_ev",
    "stress_from_ev",
    "energy_unit_name",
    "length_unit_name",
    "force_unit_label",
]
