"""Reference sampling: Langevin molecular dynamics on the GFN-xTB surface (ASE + tblite).

Frames are taken every ``stride`` steps after an equilibration period and carry the xTB energy
(eV) and forces (eV/Å) that drove the dynamics, as a SinglePointCalculator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import CalculationFailed
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation
from tqdm.auto import tqdm

try:  # ASE >= 3.29; same draws as the deprecated MaxwellBoltzmannDistribution
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # pragma: no cover - older ASE
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    def thermalize_momenta(atoms: Atoms, temperature_K: float, *, rng: np.random.Generator) -> None:
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)


from so3krates.reference.xtb import canonical_method, check_elements, make_calculator

__all__ = ["sample_md"]


def _snapshot(atoms: Atoms) -> Atoms:
    """Positions, numbers, cell and labels of the current MD state (no momenta: smaller files)."""
    energy = float(atoms.get_potential_energy())
    forces = np.array(atoms.get_forces(), dtype=np.float64)
    frame = Atoms(
        numbers=atoms.numbers.copy(), positions=atoms.positions.copy(), cell=atoms.cell.copy(), pbc=atoms.pbc.copy()
    )
    frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces)
    return frame


def sample_md(
    atoms: Atoms,
    temperature: float,
    n_frames: int,
    stride: int,
    timestep_fs: float = 0.5,
    equilibration_steps: int = 1000,
    friction: float = 0.01,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[Atoms], None] | None = None,
    *,
    method: str = "GFN2-xTB",
    electronic_temperature: float = 300.0,
    charge: int = 0,
    uhf: int = 0,
    max_iterations: int = 250,
    accuracy: float = 1.0,
) -> list[Atoms]:
    """Langevin MD with GFN-xTB forces; return ``n_frames`` labelled frames.

    Args:
        atoms: starting structure (not modified).
        temperature: thermostat temperature, K (initial velocities are Maxwell–Boltzmann at it).
        n_frames: number of frames to return.
        stride: MD steps between frames (the first frame is ``stride`` steps after equilibration).
        timestep_fs: time step, fs.
        equilibration_steps: steps run (and discarded) before sampling.
        friction: Langevin friction, fs⁻¹ (0.01 fs⁻¹ = 10 ps⁻¹: velocities decorrelate from their
            start in ~100 fs, so the default 1000 steps at 0.5 fs are five coupling times; at 1 ps⁻¹
            with 100 fs of equilibration, ethanol was still ~200 K below a 500 K target after 0.5 ps).
        seed: seeds the initial velocities and the Langevin noise.
        progress: show a tqdm bar over all MD steps.
        callback: called with each frame as it is produced (the CLI appends it to the output file,
            so a killed run keeps the frames made so far).
        method, electronic_temperature, charge, uhf, max_iterations, accuracy: xTB settings
            (see ``so3krates.reference.xtb.label``).
    Returns:
        Frames (positions, numbers, cell, pbc) with a SinglePointCalculator (energy eV, forces eV/Å).
    Raises:
        ValueError: bad arguments, an element beyond Rn, or an SCF failure (naming the MD step).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 K, got {temperature}")
    if n_frames < 1 or stride < 1:
        raise ValueError(f"need n_frames >= 1 and stride >= 1, got {n_frames} and {stride}")
    if timestep_fs <= 0 or equilibration_steps < 0 or friction <= 0:
        raise ValueError("need timestep_fs > 0, equilibration_steps >= 0 and friction > 0 (fs⁻¹)")
    method = canonical_method(method)
    check_elements(atoms, method)

    work = Atoms(
        numbers=atoms.numbers.copy(), positions=atoms.positions.copy(), cell=atoms.cell.copy(), pbc=atoms.pbc.copy()
    )
    work.calc = make_calculator(method, electronic_temperature, charge, uhf, max_iterations, accuracy)
    rng = np.random.default_rng(seed)
    dyn = _thermostat(work, temperature, timestep_fs, friction, rng)
    total = equilibration_steps + n_frames * stride
    bar = tqdm(total=total, unit="step", desc="xTB MD", disable=not progress, dynamic_ncols=True)
    advance = _runner(dyn, bar)
    frames: list[Atoms] = []
    try:
        advance(equilibration_steps)
        for _ in range(n_frames):
            advance(stride)
            frame = _snapshot(work)
            frames.append(frame)
            if callback is not None:
                callback(frame)
            bar.set_postfix(frames=len(frames), T=f"{work.get_temperature():.0f}K")
    finally:
        bar.close()
    return frames


def _thermostat(
    work: Atoms, temperature: float, timestep_fs: float, friction: float, rng: np.random.Generator
) -> Langevin:
    """Maxwell–Boltzmann velocities at ``temperature`` without drift (or rotation, where defined), and
    ASE's Langevin integrator on ``work``."""
    thermalize_momenta(work, temperature, rng=rng)
    Stationary(work)
    if not work.pbc.any() and len(work) > 2:
        moments = work.get_moments_of_inertia()
        # Linear molecules (e.g. an ideal cumulene) have one vanishing moment; ASE then divides by a
        # round-off-sized number, so only remove rotation when all three moments are real.
        if moments.min() > 1e-6 * moments.max():
            ZeroRotation(work)
    # fixcm=False: with fixcm=True ASE runs small molecules visibly hotter than the target (ASE >= 3.28
    # deprecates it: it projects the centre-of-mass part out of the random forces with equal weights
    # for all atoms and rescales them by sqrt(N/(N-1)), which is not NVT for light-plus-heavy atoms).
    # Measured, GFN2-xTB, 500 K target, 0.5 fs, friction 0.01/fs: ethanol 683 K (1 ps blocks 481-890 K)
    # with fixcm=True, 514 +- 16 K over 5 ps with fixcm=False; H2O ~1300 K internal with fixcm=True.
    # Stationary() above removes the initial drift; the thermostat only lets the centre of mass
    # diffuse slowly, which does not affect the labels.
    return Langevin(
        work, timestep_fs * units.fs, temperature_K=temperature, friction=friction / units.fs, fixcm=False, rng=rng
    )


def _runner(dyn: Langevin, bar: Any) -> Callable[[int], None]:
    """``advance(n)``: n more MD steps in chunks of 10 (the bar moves), a failed SCF named by its steps."""
    step = 0

    def advance(n: int) -> None:
        nonlocal step
        chunk = 10
        while n > 0:
            k = min(chunk, n)
            try:
                dyn.run(k)
            except CalculationFailed as err:
                raise ValueError(
                    f"MD step {step + 1}..{step + k}: xTB calculation failed: {err} "
                    "(SCF not converged? try a higher electronic temperature)"
                ) from err
            step += k
            n -= k
            bar.update(k)

    return advance
