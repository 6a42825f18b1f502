"""Molecular dynamics with a trained model.

Runs NVE (velocity Verlet), Langevin (BAOAB) or NVT (Bussi velocity rescaling) from a structure file,
in ASE units (eV, Å, amu, fs). The default JAX engine runs many steps per compiled call; ``--engine
ase`` uses ASE's integrators with the So3krates calculator. The trajectory (extended XYZ with
momenta, energies and forces, and the stress of periodic structures) and the energy log (step, time in
ps, potential, kinetic and total energy in eV, temperature in K) are written every ``--interval`` steps
and flushed, so a killed run keeps what it had written. Existing --out and --log files are never
replaced unless --overwrite is given; --append continues the run in them from the last frame of --out
(--structure OUT, with --keep-velocities for its momenta too): steps and times go on, and that frame,
already there, is not written again.

Every step is checked against limits that tell a run that blows up from one that is merely hot:
temperature (--max-temperature, default max(10 T, T + 5000 K)), the largest force on an atom
(--max-force, default 50 eV/Å) and the closest pair of atoms (--min-distance, default 0.5 Å); 0 switches
a limit off. A step that crosses one, or gives NaN, stops the run: the last good step is written to the
trajectory and log, and the message names the limit, the step and the value.

Exit status: 0 done; 2 bad input (a message naming the flag or file; nothing was run); 3 the dynamics
blew up (what was written up to the last good step stays); 130 interrupted.

Example::

    so3krates md --model runs/ethanol --structure ethanol.xyz --ensemble langevin --temperature 300 \\
        --timestep 0.5 --steps 20000 --interval 100 --out md.extxyz --log md.log
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import ase.io
import jax
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from tqdm import tqdm

from so3krates.cli.shared import add_dtype_argument, read_structure
from so3krates.files import check_new_output, check_writable_dir
from so3krates.inference import load_force_field
from so3krates.md import engine as md_engine
from so3krates.md.limits import (
    DEFAULT_MAX_FORCE,
    DEFAULT_MIN_DISTANCE,
    DynamicsBlewUp,
    Limits,
    check_frame,
    default_max_temperature,
)
from so3krates.md.output import EnergyLog, TrajectoryWriter
from so3krates.run_dir import dtype_for_run

EXIT_BLEW_UP = 3  # the dynamics crossed a limit or gave NaN; the trajectory up to the last good step stays


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="trained run directory")
    parser.add_argument("--structure", required=True, help="initial structure (any format ASE reads)")
    parser.add_argument("--index", default="-1", help="frame of --structure to start from (default: -1, the last)")
    parser.add_argument("--ensemble", choices=md_engine.ENSEMBLES, default="nve")
    parser.add_argument(
        "--temperature", type=float, default=300.0, help="K: initial velocities and bath temperature (default 300)"
    )
    parser.add_argument("--timestep", type=float, default=0.5, help="fs (default 0.5)")
    parser.add_argument("--steps", type=int, required=True, help="number of MD steps")
    parser.add_argument("--out", default="md.extxyz", help="trajectory file (extended XYZ)")
    parser.add_argument("--log", default=None, help="energy log (default: OUT with suffix .log)")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace an existing --out and --log")
    existing.add_argument(
        "--append",
        action="store_true",
        help="continue the run in --out and --log from the last frame of --out (--structure OUT); steps and "
        "times go on",
    )
    parser.add_argument("--interval", type=int, default=10, help="write a frame and a log line every N steps")
    parser.add_argument("--engine", choices=("jax", "ase"), default="jax")
    parser.add_argument("--friction", type=float, default=10.0, help="Langevin friction, 1/ps (default 10)")
    parser.add_argument("--taut", type=float, default=100.0, help="Bussi (nvt) coupling time, fs (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of initial velocities and thermostat noise")
    parser.add_argument("--skin", type=float, default=0.5, help="neighbour-list skin, Å (default 0.5)")
    parser.add_argument(
        "--keep-velocities", action="store_true", help="start from the momenta stored in --structure instead"
    )
    parser.add_argument(
        "--max-temperature",
        type=float,
        default=None,
        help="K: stop (exit 3) above this temperature (default max(10 T, T + 5000 K); 0: no limit)",
    )
    parser.add_argument(
        "--max-force",
        type=float,
        default=DEFAULT_MAX_FORCE,
        help=f"eV/Å: stop (exit 3) when a force on one atom exceeds this (default {DEFAULT_MAX_FORCE:g}; 0: no limit)",
    )
    parser.add_argument(
        "--min-distance",
        type=float,
        default=DEFAULT_MIN_DISTANCE,
        help=f"Å: stop (exit 3) when two atoms come closer (default {DEFAULT_MIN_DISTANCE:g}; 0: no limit)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dtype_argument(parser)


def check_arguments(args: argparse.Namespace) -> Limits:
    """Refuse numbers no run can use, naming the flag; the limits the flags ask for."""
    if args.steps < 0:
        raise ValueError(f"--steps must be ≥ 0, got {args.steps}")
    if args.interval < 1:
        raise ValueError(f"--interval must be ≥ 1, got {args.interval}")
    if not args.timestep > 0:
        raise ValueError(f"--timestep must be positive, got {args.timestep}")
    if not args.temperature >= 0:
        raise ValueError(f"--temperature must be ≥ 0 K, got {args.temperature}")
    if args.ensemble != "nve" and args.temperature == 0:
        raise ValueError(f"--ensemble {args.ensemble} needs a positive --temperature (the bath's), got 0 K")
    values = {"--max-temperature": args.max_temperature, "--max-force": args.max_force}
    values["--min-distance"] = args.min_distance
    for flag, value in values.items():
        if value is not None and not value >= 0:
            raise ValueError(f"{flag} must be ≥ 0 (0: no limit), got {value}")
    max_temperature = args.max_temperature
    if max_temperature is None:
        max_temperature = default_max_temperature(args.temperature)
    return Limits(max_temperature or math.inf, args.max_force or math.inf, args.min_distance)


def check_structure(atoms: Atoms, args: argparse.Namespace) -> None:
    """What MD needs of the starting structure beyond what the model checks (elements, overlaps)."""
    if len(atoms) < 2:
        raise ValueError(
            f"--structure {args.structure}: {len(atoms)} atom{'s' if len(atoms) != 1 else ''}; MD needs at least 2 "
            "(one atom feels no force, and with the centre-of-mass motion removed it has no temperature)"
        )
    if args.keep_velocities and not atoms.has("momenta"):
        raise ValueError(
            f"--keep-velocities: --structure {args.structure} (frame {args.index}) stores no momenta or velocities; "
            "drop --keep-velocities to draw them at --temperature"
        )


def check_outputs(args: argparse.Namespace, log_path: str) -> None:
    """Before the model is loaded: --out and --log are new (or --overwrite / --append) and can be written."""
    if Path(args.out).resolve() == Path(log_path).resolve():
        raise ValueError(f"--out and --log name the same file, {args.out}")
    for flag, path, what in (("--out", args.out, "trajectory"), ("--log", log_path, "energy log")):
        intended = args.overwrite or args.append
        check_new_output(path, flag, overwrite=intended, what=what, other_ways="--append to add to it")
        check_writable_dir(Path(path).parent, flag)


def continuation(args: argparse.Namespace, log_path: str) -> tuple[int, float, bool]:
    """With --append: (step, time in ps) of the last frame of --out, which the run starts from (--structure
    is --out, --index -1; anything else is refused) and so does not write again."""
    out = Path(args.out)
    if not args.append:
        return 0, 0.0, False
    if not out.exists() or out.stat().st_size == 0:
        if Path(log_path).exists() and Path(log_path).stat().st_size > 0:
            raise ValueError(
                f"--append: --log {log_path} has steps but --out {out} has no frame to continue from; "
                "append to both or to neither"
            )
        return 0, 0.0, False
    if Path(args.structure).resolve() != out.resolve() or int(args.index) != -1:
        raise ValueError(
            f"--append continues the run in --out {out} from its last frame: give --structure {out} (--index -1), "
            "optionally with --keep-velocities; a different starting structure would repeat the last step number"
        )
    try:
        last = ase.io.read(out, index=-1)
    except Exception as err:  # noqa: BLE001 (ASE's readers raise anything)
        raise ValueError(f"--append: cannot read the last frame of --out {out} to continue from: {err}") from None
    step = int(last.info.get("step", 0))
    time_ps = float(last.info.get("time_ps", step * args.timestep / 1000.0))
    return step, time_ps, True


class Recorder:
    """Writes a frame and a log line (steps and times after ``first_step``/``first_time_ps``), with the stress
    of periodic frames from ``stress_calculator``; ``skip_step``: a step not to write (already in the file)."""

    def __init__(self, trajectory: TrajectoryWriter, log: EnergyLog, bar: tqdm, args: argparse.Namespace, **kw: Any):
        self.trajectory, self.log, self.bar, self.timestep = trajectory, log, bar, args.timestep
        self.first_step, self.first_time_ps = kw["first_step"], kw["first_time_ps"]
        self.stress_calculator, self.last_step = kw["stress_calculator"], kw.get("skip_step")

    def __call__(self, step: int, frame: Atoms, epot: float, ekin: float) -> None:
        temperature = 2.0 * ekin / (3 * len(frame) * units.kB)
        self.bar.set_postfix_str(f"T={temperature:.0f} K E={epot + ekin:.4f} eV", refresh=False)
        self.bar.update(step - self.bar.n)
        if step == self.last_step:
            return
        if self.stress_calculator is not None:
            snapshot = frame.copy()
            stress = self.stress_calculator.get_stress(snapshot)
            snapshot.calc = SinglePointCalculator(snapshot, energy=epot, forces=frame.get_forces(), stress=stress)
            frame = snapshot
        time_ps = self.first_time_ps + step * self.timestep / 1000.0
        self.trajectory.write(frame, step=self.first_step + step, time_ps=time_ps)
        self.log.write(self.first_step + step, time_ps, epot, ekin, len(frame))
        self.last_step = step


def run(args: argparse.Namespace) -> int:
    limits = check_arguments(args)
    atoms = read_structure(args.structure, args.index)
    check_structure(atoms, args)
    log_path = args.log or str(Path(args.out).with_suffix(".log"))
    check_outputs(args, log_path)
    first_step, first_time_ps, continuing = continuation(args, log_path)
    model = load_force_field(args.model, dtype_for_run(args.model, args.dtype))
    if not args.keep_velocities:
        md_engine.initial_velocities(atoms, args.temperature, seed=args.seed)
    stress_calculator = None
    if atoms.pbc.any():  # periodic frames carry the stress, computed for the written frames only
        from so3krates.calculator import So3kratesCalculator

        stress_calculator = So3kratesCalculator(model=model, skin=args.skin)
    bar = tqdm(total=args.steps, unit="step", disable=args.no_progress, dynamic_ncols=True)
    start = time.perf_counter()
    with (
        TrajectoryWriter(args.out, append=args.append) as trajectory,
        EnergyLog(log_path, append=args.append) as log,
    ):
        record = Recorder(
            trajectory,
            log,
            bar,
            args,
            first_step=first_step,
            first_time_ps=first_time_ps,
            stress_calculator=stress_calculator,
            skip_step=0 if continuing else None,
        )
        try:
            extra = (run_jax if args.engine == "jax" else run_ase)(model, atoms, args, limits, record)
        except DynamicsBlewUp as err:
            bar.close()
            return report_blow_up(err, args, record, log_path)
        bar.close()
    elapsed = time.perf_counter() - start
    rate = args.steps / elapsed if elapsed > 0 else float("nan")
    ns_per_day = rate * args.timestep * 86400 * 1e-6
    print(
        f"{args.steps} steps of {args.ensemble} MD ({len(atoms)} atoms, {args.engine} engine) in {elapsed:.1f} s: "
        f"{rate:.1f} steps/s, {ns_per_day:.3g} ns/day{extra}"
    )
    print(f"trajectory: {args.out} ({trajectory.frames} frames{' appended' if args.append else ''}); log: {log_path}")
    return 0


def settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "ensemble": args.ensemble,
        "timestep_fs": args.timestep,
        "temperature_K": args.temperature,
        "friction_per_ps": args.friction,
        "taut_fs": args.taut,
        "seed": args.seed,
    }


def check_start(frame: Atoms, limits: Limits, args: argparse.Namespace, neighbours: Any) -> None:
    """The starting structure (and its velocities) within the limits, or a bad-input error naming it."""
    try:
        check_frame(frame, limits, 0, neighbours)
    except DynamicsBlewUp as err:
        if not err.flag:  # NaN before any step: the model, not the dynamics
            raise ValueError(
                f"--model {args.model} gives {err.what} for --structure {args.structure} before the first step: "
                "its weights are broken, or the structure is far from anything it was trained on"
            ) from None
        raise ValueError(
            f"--structure {args.structure}: the starting structure has {err.what}; fix the structure or raise "
            f"{err.flag} (0: no limit)"
        ) from None


def run_jax(model: Any, atoms: Atoms, args: argparse.Namespace, limits: Limits, record: Recorder) -> str:
    md = md_engine.JaxMD(model, atoms, skin=args.skin, limits=limits, **settings(args))
    check_start(md.atoms(), limits, args, jax.device_get(md.neighbours))
    record(0, md.atoms(), md.potential_energy(), md.kinetic_energy())
    try:
        md.run(
            args.steps,
            interval=args.interval,
            callback=lambda m: record(m.step, m.atoms(), m.potential_energy(), m.kinetic_energy()),
        )
    except DynamicsBlewUp:
        # The engine's state is the last good step: keep it in the trajectory and log.
        record(md.step, md.atoms(), md.potential_energy(), md.kinetic_energy())
        raise
    return f"; {md.stats.neighbour_builds} neighbour-list rebuilds"


def run_ase(model: Any, atoms: Atoms, args: argparse.Namespace, limits: Limits, record: Recorder) -> str:
    from so3krates.calculator import So3kratesCalculator
    from so3krates.md.limits import AseWatch

    atoms.calc = So3kratesCalculator(model=model, skin=args.skin)
    atoms.get_forces()  # input errors (elements, overlapping atoms) before the run, as bad input
    check_start(atoms, limits, args, atoms.calc.neighbours)
    dynamics = md_engine.ase_dynamics(atoms, **settings(args))
    watch = AseWatch(atoms, dynamics, limits)
    dynamics.attach(watch, interval=1)  # before the writer: a step that crosses a limit is never written

    def ase_record() -> None:
        record(dynamics.nsteps, atoms, atoms.get_potential_energy(), float(atoms.get_kinetic_energy()))

    dynamics.attach(ase_record, interval=args.interval)  # also called at step 0
    try:
        try:
            dynamics.run(args.steps)
        except ValueError as err:  # the calculator refused the structure a step made (NaN, overlapping atoms)
            raise DynamicsBlewUp(dynamics.nsteps + 1, "invalid", detail=str(err)) from None
    except DynamicsBlewUp:
        if watch.last_good is not None:
            good = watch.last_good
            record(watch.last_good_step, good, good.get_potential_energy(), float(good.get_kinetic_energy()))
        raise
    return f"; {atoms.calc.neighbour_list.builds} neighbour-list builds"


def report_blow_up(err: DynamicsBlewUp, args: argparse.Namespace, record: Recorder, log_path: str) -> int:
    """The message of a run that blew up; the exit status :data:`EXIT_BLEW_UP`."""
    limit = f", or raise {err.flag} if the run is sound (0: no limit)" if err.flag else ""
    kept = record.trajectory.frames
    last = "" if record.last_step is None else f" up to step {record.first_step + record.last_step}"
    print(
        f"so3krates md: error: {err.message(record.first_step)}. Try a smaller --timestep (now {args.timestep:g} "
        f"fs), a structure closer to the training data, or another model{limit}. The trajectory{last} "
        f"({kept} frame{'s' if kept != 1 else ''}, the last good step included) is in {args.out}, the energy log "
        f"in {log_path}.",
        file=sys.stderr,
    )
    return EXIT_BLEW_UP
