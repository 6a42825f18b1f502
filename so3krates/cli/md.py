"""Molecular dynamics with a trained model.

Runs NVE (velocity Verlet), Langevin (BAOAB) or NVT (Bussi velocity rescaling) from a structure file,
in ASE units (eV, Å, amu, fs). The default JAX engine runs many steps per compiled call; ``--engine
ase`` uses ASE's integrators with the So3krates calculator. The trajectory (extended XYZ with
momenta, energies and forces) and the energy log (step, time in ps, potential, kinetic and total
energy in eV, temperature in K) are written every ``--interval`` steps and flushed, so a killed run
keeps what it had written.

Example::

    so3krates md --model runs/ethanol --structure ethanol.xyz --ensemble langevin --temperature 300 \\
        --timestep 0.5 --steps 20000 --interval 100 --out md.extxyz --log md.log
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import ase.io
from tqdm import tqdm

from so3krates.cli.shared import add_dtype_argument, read_structure
from so3krates.inference import load_force_field
from so3krates.md import engine as md_engine
from so3krates.md.output import EnergyLog, TrajectoryWriter
from so3krates.run_dir import dtype_for_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="trained run directory")
    parser.add_argument("--structure", required=True, help="initial structure (any format ASE reads)")
    parser.add_argument("--index", default="-1", help="frame of --structure to start from (default: last)")
    parser.add_argument("--ensemble", choices=md_engine.ENSEMBLES, default="nve")
    parser.add_argument(
        "--temperature", type=float, default=300.0, help="K: initial velocities and bath temperature (default 300)"
    )
    parser.add_argument("--timestep", type=float, default=0.5, help="fs (default 0.5)")
    parser.add_argument("--steps", type=int, required=True, help="number of MD steps")
    parser.add_argument("--out", default="md.extxyz", help="trajectory file (extended XYZ)")
    parser.add_argument("--log", default=None, help="energy log (default: OUT with suffix .log)")
    parser.add_argument("--interval", type=int, default=10, help="write a frame and a log line every N steps")
    parser.add_argument("--engine", choices=("jax", "ase"), default="jax")
    parser.add_argument("--friction", type=float, default=10.0, help="Langevin friction, 1/ps (default 10)")
    parser.add_argument("--taut", type=float, default=100.0, help="Bussi (nvt) coupling time, fs (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of initial velocities and thermostat noise")
    parser.add_argument("--skin", type=float, default=0.5, help="neighbour-list skin, Å (default 0.5)")
    parser.add_argument(
        "--keep-velocities", action="store_true", help="start from the momenta stored in --structure instead"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dtype_argument(parser)


def run(args: argparse.Namespace) -> int:
    if args.steps < 0:
        raise ValueError(f"--steps must be ≥ 0, got {args.steps}")
    if args.interval < 1:
        raise ValueError(f"--interval must be ≥ 1, got {args.interval}")
    if args.timestep <= 0:
        raise ValueError(f"--timestep must be positive, got {args.timestep}")
    atoms = read_structure(args.structure, args.index)
    model = load_force_field(args.model, dtype_for_run(args.model, args.dtype))
    if not args.keep_velocities:
        md_engine.initial_velocities(atoms, args.temperature, seed=args.seed)
    settings = {
        "ensemble": args.ensemble,
        "timestep_fs": args.timestep,
        "temperature_K": args.temperature,
        "friction_per_ps": args.friction,
        "taut_fs": args.taut,
        "seed": args.seed,
    }
    log_path = args.log or str(Path(args.out).with_suffix(".log"))
    n_atoms = len(atoms)
    bar = tqdm(total=args.steps, unit="step", disable=args.no_progress, dynamic_ncols=True)
    start = time.perf_counter()
    with TrajectoryWriter(args.out) as trajectory, EnergyLog(log_path) as log:

        def record(step: int, frame: ase.Atoms, epot: float, ekin: float) -> None:
            time_ps = step * args.timestep / 1000.0
            trajectory.write(frame, step=step, time_ps=time_ps)
            log.write(step, time_ps, epot, ekin, n_atoms)
            temperature = 2.0 * ekin / (3 * n_atoms * ase.units.kB)
            bar.set_postfix_str(f"T={temperature:.0f} K E={epot + ekin:.4f} eV", refresh=False)
            bar.update(step - bar.n)

        if args.engine == "jax":
            md = md_engine.JaxMD(model, atoms, skin=args.skin, **settings)
            record(0, md.atoms(), md.potential_energy(), md.kinetic_energy())
            md.run(
                args.steps,
                interval=args.interval,
                callback=lambda m: record(m.step, m.atoms(), m.potential_energy(), m.kinetic_energy()),
            )
            extra = f"; {md.stats.neighbour_builds} neighbour-list rebuilds"
        else:
            from so3krates.calculator import So3kratesCalculator

            atoms.calc = So3kratesCalculator(model=model, skin=args.skin)
            dynamics = md_engine.ase_dynamics(atoms, **settings)

            def ase_record() -> None:
                record(dynamics.nsteps, atoms, atoms.get_potential_energy(), float(atoms.get_kinetic_energy()))

            dynamics.attach(ase_record, interval=args.interval)  # also called at step 0
            dynamics.run(args.steps)
            extra = f"; {atoms.calc.neighbour_list.builds} neighbour-list builds"
        bar.close()
    elapsed = time.perf_counter() - start
    rate = args.steps / elapsed if elapsed > 0 else float("nan")
    ns_per_day = rate * args.timestep * 86400 * 1e-6
    print(
        f"{args.steps} steps of {args.ensemble} MD ({n_atoms} atoms, {args.engine} engine) in {elapsed:.1f} s: "
        f"{rate:.1f} steps/s, {ns_per_day:.3g} ns/day{extra}"
    )
    print(f"trajectory: {args.out} ({trajectory.frames} frames); log: {log_path}")
    return 0
