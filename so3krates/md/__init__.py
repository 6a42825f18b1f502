"""Molecular dynamics with So3krates models: a JAX-native engine (jax-md style) and ASE drivers.

* :mod:`so3krates.md.integrators`: ``velocity_verlet``, ``baoab_langevin``, ``bussi`` →
  ``(init_fn, step_fn)`` pure functions on an :class:`MDState`.
* :mod:`so3krates.md.engine`: :class:`JaxMD`, chunks of steps in one compiled ``lax.while_loop`` with
  host-side Verlet neighbour lists; :func:`ase_dynamics` for ASE's integrators.
* :mod:`so3krates.md.limits`: :class:`Limits` (temperature, force, closest pair) that stop a run that
  blows up with :class:`DynamicsBlewUp`.
* :mod:`so3krates.md.drivers`: initial velocities, :func:`ase_dynamics` (ASE's integrators), energy drift.
* :mod:`so3krates.md.output`: trajectory and energy log, flushed per write.

Force fields are loaded with :func:`so3krates.inference.load_force_field` (also importable from here).
Units are ASE's throughout: eV, Å, amu, and ``ase.units.fs`` for time.
"""

from so3krates.deprecation import moved
from so3krates.inference import ForceField, Neighbours, SkinNeighbourList, load_force_field
from so3krates.md.engine import ENSEMBLES, EngineStats, JaxMD, ase_dynamics, drift_per_atom_per_ps, initial_velocities
from so3krates.md.integrators import (
    MDState,
    baoab_langevin,
    bussi,
    kinetic_energy,
    maxwell_boltzmann,
    temperature,
    velocity_verlet,
)
from so3krates.md.limits import DynamicsBlewUp, Limits
from so3krates.md.output import EnergyLog, TrajectoryWriter, read_log

__all__ = [
    "DynamicsBlewUp",
    "ENSEMBLES",
    "EnergyLog",
    "EngineStats",
    "JaxMD",
    "Limits",
    "MDState",
    "ForceField",
    "Neighbours",
    "SkinNeighbourList",
    "TrajectoryWriter",
    "ase_dynamics",
    "baoab_langevin",
    "bussi",
    "drift_per_atom_per_ps",
    "initial_velocities",
    "kinetic_energy",
    "load_force_field",
    "maxwell_boltzmann",
    "read_log",
    "temperature",
    "velocity_verlet",
]

__getattr__ = moved(
    "so3krates.md",
    {
        "Model": "so3krates.inference:ForceField",
        "load_model": "so3krates.inference:load_force_field",
        "check_elements": "so3krates.inference",
    },
)
