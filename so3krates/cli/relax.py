"""Geometry optimisation with a trained model (ASE optimisers).

Relaxes atomic positions — and with ``--cell`` the cell too (FrechetCellFilter: lattice vectors and
positions together, periodic structures only) — until the largest force is below ``--fmax`` eV/Å (for
``--cell`` the stress contributes to that criterion as ASE's filter defines it), then writes the
relaxed structure with its energy, forces (and stress) and reports the final maximum force. An existing
--out or --trajectory file is not replaced unless --overwrite is given (checked before the model is
loaded). A single atom is already relaxed (no force acts on it): 0 steps.

Exit status: 0 converged; 1 ``--steps`` ran out first (the structure reached is still written); 2 bad
input (a message naming the flag or file; nothing written); 130 interrupted.

Example::

    so3krates relax --model runs/ethanol --structure start.xyz --fmax 0.01 --out relaxed.extxyz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from so3krates.cli.shared import add_dtype_argument, read_structure
from so3krates.files import check_new_output, check_writable_dir
from so3krates.inference import load_force_field
from so3krates.run_dir import dtype_for_run

OPTIMIZERS = ("BFGS", "FIRE", "LBFGS")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="trained run directory")
    parser.add_argument("--structure", required=True, help="initial structure (any format ASE reads)")
    parser.add_argument("--index", default="-1", help="frame of --structure to relax (default: last)")
    parser.add_argument("--fmax", type=float, default=0.01, help="convergence: max force, eV/Å (default 0.01)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="BFGS", type=str.upper)
    parser.add_argument("--cell", action="store_true", help="relax the cell too (FrechetCellFilter)")
    parser.add_argument("--pressure", type=float, default=0.0, help="external pressure with --cell, GPa")
    parser.add_argument("--steps", type=int, default=1000, help="maximum optimiser steps (default 1000)")
    parser.add_argument("--out", default="relaxed.extxyz", help="relaxed structure (extended XYZ)")
    parser.add_argument("--trajectory", default=None, help="also write every optimiser step here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out or --trajectory")
    parser.add_argument("--log", default="-", help="optimiser log file ('-': stdout)")
    add_dtype_argument(parser)


def run(args: argparse.Namespace) -> int:
    from ase import optimize, units
    from ase.filters import FrechetCellFilter

    from so3krates.calculator import So3kratesCalculator
    from so3krates.md.output import TrajectoryWriter

    if args.fmax <= 0:
        raise ValueError(f"--fmax must be positive, got {args.fmax}")
    atoms = read_structure(args.structure, args.index)
    if args.cell and not atoms.pbc.any():
        raise ValueError("--cell needs a periodic structure (pbc is False in every direction)")
    outputs = [("--out", args.out, "relaxed structure")]
    if args.trajectory:
        outputs.append(("--trajectory", args.trajectory, "trajectory"))
        if Path(args.trajectory).resolve() == Path(args.out).resolve():
            raise ValueError(f"--out and --trajectory name the same file, {args.out}")
    for flag, path, what in outputs:
        check_new_output(path, flag, overwrite=args.overwrite, what=what)
        check_writable_dir(Path(path).parent, flag)
    atoms.calc = So3kratesCalculator(model=load_force_field(args.model, dtype_for_run(args.model, args.dtype)))
    target = FrechetCellFilter(atoms, scalar_pressure=args.pressure * units.GPa) if args.cell else atoms
    optimizer = getattr(optimize, args.optimizer)(target, logfile=args.log)
    trajectory = TrajectoryWriter(args.trajectory) if args.trajectory else None
    if trajectory is not None:
        optimizer.attach(lambda: trajectory.write(atoms, step=optimizer.nsteps))
    energy_start = atoms.get_potential_energy()
    try:
        converged = bool(optimizer.run(fmax=args.fmax, steps=args.steps))
    finally:
        if trajectory is not None:
            trajectory.close()

    energy = atoms.get_potential_energy()
    atoms.get_forces()
    if args.cell:
        atoms.get_stress()
    max_force = float(np.linalg.norm(atoms.get_forces(), axis=1).max())
    criterion = float(np.linalg.norm(target.get_forces(), axis=1).max())  # what the optimiser converged on
    with TrajectoryWriter(args.out) as out:
        out.write(atoms, step=optimizer.nsteps)
    status = "converged" if converged else f"NOT converged within {args.steps} steps"
    print(
        f"{status} after {optimizer.nsteps} {args.optimizer} steps: energy {energy_start:.6f} -> {energy:.6f} eV, "
        f"final max force {max_force:.5f} eV/Å" + (f" (with cell: {criterion:.5f})" if args.cell else "")
    )
    if args.cell:
        print(f"final cell volume {atoms.get_volume():.4f} Å³; cell lengths/angles {np.round(atoms.cell.cellpar(), 4)}")
    print(f"relaxed structure: {args.out}")
    return 0 if converged else 1
