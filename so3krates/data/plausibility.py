"""Do the labels look like the units they were read in? Cheap checks that warn (:class:`UnitsWarning`).

A wrong unit is silent: every number is still finite and a model trains on it. Three signals tell:

* **Forces against energy differences.** Along a trajectory, consecutive frames k, k+1 with a small step
  obey E_{k+1} − E_k ≈ −½ (F_k + F_{k+1}) · (R_{k+1} − R_k) (the trapezoid rule of the work of the
  forces). The ratio of the two sides, fitted over sampled pairs of frames, is 1 when energies, forces and
  positions are in consistent units, and otherwise a ratio of unit factors (1/27.2: energies in eV and
  forces in Hartree/Å; 1.89: forces per Bohr read as per Å; −1: gradients instead of forces), which
  names the mismatch. It applies only where frames are consecutive steps (the fit must be good), and it
  cannot see a unit that is wrong for energies and forces alike.
* **Energies larger than atoms can hold.** No total energy exceeds, per atom, the Thomas–Fermi energy
  0.7687 Z^(7/3) Hartree of its element (an upper bound of the true atomic energy in magnitude, heavy
  atoms' relativistic energies included, with margin). kcal/mol or kJ/mol totals read as eV break it.
* **Forces larger than structures have.** Typical force components are ≲ 3 eV/Å; a median per-frame RMS
  force above 10 eV/Å means forces in a smaller unit (kcal/mol/Å, kJ/mol/Å) read as eV/Å.

Frames are sampled (a few hundred at most), so the checks cost milliseconds whatever the file's size.
Too-small values are not flagged (relative energies and near-equilibrium forces are small by nature).
"""

from __future__ import annotations

import warnings

import numpy as np
from ase import units as ase_units

from so3krates.data.frames import Frames
from so3krates.data.units import ENERGY_UNITS, LENGTH_UNITS

SAMPLES = 256  # frames (and pairs of frames) looked at
MAX_STEP = 0.2  # Å: largest displacement of an atom between two frames taken as consecutive steps
MIN_PAIRS = 16  # consecutive pairs needed for the force/energy fit
MIN_CORRELATION = 0.8  # the fit must explain the energy differences this well to mean anything
RATIO_BAND = (0.7, 1.4)  # a consistent file gives ≈ 1 (0.9–1.0 for coarsely sampled trajectories)
MAX_RMS_FORCE = 10.0  # eV/Å: median over frames of the per-frame RMS force component
_ATOM_SLACK = 10.0  # eV per atom above the Thomas–Fermi bound (binding energies, margin)
_TF = 1.2 * 0.7687 * ase_units.Hartree * np.arange(119, dtype=np.float64) ** (7.0 / 3.0) + _ATOM_SLACK


class UnitsWarning(UserWarning):
    """The labels' magnitudes or their consistency suggest they are not in the units they were read in."""


def check_units(frames: Frames, energy_unit: str, length_unit: str) -> list[str]:
    """Warn (:class:`UnitsWarning`) where the labels do not look like ``energy_unit``/``length_unit``.

    Args:
        frames: in eV and Å, read from a file in the named units.
        energy_unit, length_unit: the units the file was read in (canonical names), for the messages.
    Returns:
        The warnings' messages (empty when nothing looks wrong).
    """
    read_as = f"read as {energy_unit} and {energy_unit}/{length_unit}"
    problems = [
        p
        for p in (
            _force_energy_ratio(frames, energy_unit, length_unit, read_as),
            _energy_magnitude(frames, energy_unit, read_as),
            _force_magnitude(frames, energy_unit, length_unit, read_as),
        )
        if p
    ]
    for p in problems:
        warnings.warn(f"{frames.source}: {p}", UnitsWarning, stacklevel=3)
    return problems


def _sample(m: int, count: int = SAMPLES) -> np.ndarray:
    """Up to ``count`` evenly spread indices in 0..m−1."""
    return np.unique(np.linspace(0, m - 1, min(m, count)).astype(np.int64)) if m > 0 else np.zeros(0, np.int64)


def _pairs(frames: Frames) -> tuple[np.ndarray, np.ndarray]:
    """(ΔE, work of the forces) of sampled consecutive pairs that look like one small MD step."""
    d_energy, work = [], []
    for k in _sample(len(frames) - 1):
        z0, z1 = frames.numbers[k], frames.numbers[k + 1]
        if len(z0) != len(z1) or not np.array_equal(z0, z1) or not np.array_equal(frames.cell[k], frames.cell[k + 1]):
            continue
        step = frames.positions[k + 1] - frames.positions[k]
        if np.abs(step).max() > MAX_STEP:
            continue
        d_energy.append(frames.energy[k + 1] - frames.energy[k])
        work.append(-0.5 * float(np.sum((frames.forces[k] + frames.forces[k + 1]) * step)))
    return np.asarray(d_energy), np.asarray(work)


def _force_energy_ratio(frames: Frames, energy_unit: str, length_unit: str, read_as: str) -> str | None:
    if frames.energy is None or frames.forces is None or len(frames) < MIN_PAIRS + 1:
        return None
    d_energy, work = _pairs(frames)
    if len(work) < MIN_PAIRS or not np.any(work) or np.std(d_energy) == 0 or np.std(work) == 0:
        return None
    ratio = float(d_energy @ work / (work @ work))
    if abs(np.corrcoef(d_energy, work)[0, 1]) < MIN_CORRELATION or RATIO_BAND[0] <= ratio <= RATIO_BAND[1]:
        return None
    if -RATIO_BAND[1] <= ratio <= -RATIO_BAND[0]:
        meaning = "the forces have the wrong sign (energy gradients stored as forces?)"
    else:
        meaning = _mismatches(abs(ratio), energy_unit, length_unit)
    return (
        f"energy differences between consecutive frames are {ratio:.4g} × the work of the forces "
        f"(−½ (F_k + F_k+1) · (R_k+1 − R_k), {len(work)} pairs of frames {read_as}; expected ≈ 1): {meaning}"
    )


def _mismatches(ratio: float, energy_unit: str, length_unit: str) -> str:
    """Which unit combinations give ``ratio`` = (force factor / assumed) / (energy factor / assumed)."""
    l0 = LENGTH_UNITS[length_unit]
    found = []
    for e_energy, fe in ENERGY_UNITS.items():
        for e_force, ff in ENERGY_UNITS.items():
            for l_force, fl in LENGTH_UNITS.items():
                if e_energy != energy_unit and (e_force, l_force) != (energy_unit, length_unit):
                    continue  # keep the explanations that change one thing
                if abs(ff * l0 / (fl * fe) / ratio - 1.0) < 0.08:
                    found.append(f"energies in {e_energy} with forces in {e_force}/{l_force}")
    if found:
        return "energies and forces are in inconsistent units; the ratio matches " + " or ".join(found[:3])
    return "energies and forces (or positions) are in inconsistent units, or the forces are not −dE/dR"


def _energy_magnitude(frames: Frames, energy_unit: str, read_as: str) -> str | None:
    if frames.energy is None:
        return None
    picked = _sample(len(frames))
    bound = np.array([_TF[np.clip(frames.numbers[k], 0, 118)].sum() for k in picked])
    excess = np.abs(frames.energy[picked]) / bound
    if np.median(excess) <= 1.0:
        return None
    k = int(picked[np.argmax(excess)])
    fits = [
        u
        for u, f in ENERGY_UNITS.items()
        if f < ENERGY_UNITS[energy_unit] and np.median(excess) * f / ENERGY_UNITS[energy_unit] <= 1.0
    ]
    guess = f" In {' or '.join(fits)} they would fit." if fits else ""
    return (
        f"energies are larger than any total energy of their atoms ({read_as}: frame {k} has "
        f"{frames.energy[k]:.6g} eV for {len(frames.numbers[k])} atoms, at most {bound[np.argmax(excess)]:.4g} eV in "
        f"magnitude). Are the energies really in {energy_unit}?{guess}"
    )


def _force_magnitude(frames: Frames, energy_unit: str, length_unit: str, read_as: str) -> str | None:
    if frames.forces is None:
        return None
    rms = np.array([np.sqrt(np.mean(np.square(frames.forces[k]))) for k in _sample(len(frames))])
    typical = float(np.median(rms))
    if typical <= MAX_RMS_FORCE:
        return None
    f0 = ENERGY_UNITS[energy_unit] / LENGTH_UNITS[length_unit]
    fl = LENGTH_UNITS[length_unit]  # the positions' length unit: forces per that length
    fits = [f"{e}/{length_unit}" for e, fe in ENERGY_UNITS.items() if typical * fe / fl / f0 <= 3.0]
    guess = f" In {' or '.join(fits)} they would be typical." if fits else ""
    return (
        f"forces are implausibly large ({read_as}: the median per-frame RMS force component is {typical:.3g} eV/Å; "
        f"real structures rarely exceed a few eV/Å). Are the forces really in {energy_unit}/{length_unit}?{guess}"
    )
