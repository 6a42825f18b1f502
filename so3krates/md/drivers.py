"""ASE's side of MD: initial velocities, ASE's integrators for an ensemble, energy drift.

Example::

    initial_velocities(atoms, 300.0, seed=0)
    atoms.calc = So3kratesCalculator("runs/ethanol")
    ase_dynamics(atoms, "langevin", timestep_fs=0.5, temperature_K=300.0).run(1000)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ase import Atoms, units

ENSEMBLES = ("nve", "langevin", "nvt")


def initial_velocities(atoms: Atoms, temperature_K: float, seed: int = 0) -> None:
    """Maxwell–Boltzmann momenta at ``temperature_K`` with zero total momentum (in place, via ASE)."""
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    if len(atoms) < 2 and temperature_K > 0:
        raise ValueError(
            f"thermal velocities with zero total momentum need at least 2 atoms, the structure has {len(atoms)}"
        )
    if temperature_K <= 0:
        atoms.set_momenta(np.zeros((len(atoms), 3)))
        return
    thermalize_momenta(atoms, temperature_K, rng=np.random.default_rng(seed))
    Stationary(atoms)


def ase_dynamics(
    atoms: Atoms,
    ensemble: str = "nve",
    timestep_fs: float = 0.5,
    temperature_K: float = 300.0,
    friction_per_ps: float = 10.0,
    taut_fs: float = 100.0,
    seed: int = 0,
) -> Any:
    """The ASE integrator of an ensemble: VelocityVerlet (nve), Langevin (langevin) or Bussi (nvt).

    ``atoms`` must already carry a calculator (e.g. :class:`so3krates.calculator.So3kratesCalculator`).
    """
    from ase.md.bussi import Bussi
    from ase.md.langevin import Langevin
    from ase.md.verlet import VelocityVerlet

    dt = timestep_fs * units.fs
    rng = np.random.default_rng(seed)
    if ensemble == "nve":
        return VelocityVerlet(atoms, dt)
    if ensemble == "langevin":
        # fixcm=False: ASE's fixcm=True does not sample NVT exactly (ASE ≥ 3.28 warns about it).
        return Langevin(
            atoms, dt, temperature_K=temperature_K, friction=friction_per_ps / (1000.0 * units.fs), fixcm=False, rng=rng
        )
    if ensemble == "nvt":
        return Bussi(atoms, dt, temperature_K=temperature_K, taut=taut_fs * units.fs, rng=rng)
    raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")


def drift_per_atom_per_ps(times_ps: np.ndarray, total_energies: np.ndarray, n_atoms: int) -> float:
    """Slope of a least-squares line through the total energy, per atom (eV / atom / ps)."""
    times_ps = np.asarray(times_ps, np.float64)
    if len(times_ps) < 2 or math.isclose(float(np.ptp(times_ps)), 0.0):
        return 0.0
    slope = np.polyfit(times_ps, np.asarray(total_energies, np.float64), 1)[0]
    return float(slope) / n_atoms
