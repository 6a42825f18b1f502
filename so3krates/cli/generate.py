"""Generate reference data with GFN2-xTB (tblite): MD sampling, labelling of given structures, cumulene torsion scans.

Modes (exactly one):
  --structure FILE | --smiles SMILES   Langevin MD at --temperature, --frames frames every --stride steps
  --label FILE                         energies and forces for every frame of FILE
  --torsion-scan N_CARBONS             [n]cumulene rotor torsions over --angles START:STOP:STEP (degrees)

Frames are appended to --out (extended XYZ; energy eV, forces eV/Å) as they are produced, so a killed
run keeps them. With --out NAME.gz they go to NAME while running and are compressed at the end.

Examples:
  so3krates generate --smiles CCO --temperature 500 --frames 2000 --stride 10 --out ethanol.extxyz
  so3krates generate --label frames.xyz --out labelled.extxyz
  so3krates generate --torsion-scan 5 --angles 0:180:10 --noise 0.02 --samples-per-angle 4 --out c5.extxyz
"""

from __future__ import annotations

import argparse
import gzip
import io
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from ase import Atoms

# Decimals kept by --compact: 1e-5 Å, 1e-6 eV, 1e-4 eV/Å (well below xTB's own accuracy).
COMPACT_DECIMALS = {"positions": 5, "energy": 6, "forces": 4}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--structure", metavar="FILE", help="starting structure for MD (any ASE-readable file; first frame)"
    )
    mode.add_argument("--smiles", metavar="SMILES", help="starting structure for MD from SMILES (needs RDKit)")
    mode.add_argument("--label", metavar="FILE", help="label every frame of FILE with xTB energies and forces")
    mode.add_argument(
        "--torsion-scan",
        metavar="N_CARBONS",
        type=int,
        help="torsion scan of the [n]cumulene H2C=(C=)CH2 with N_CARBONS = 3..9 carbons",
    )
    parser.add_argument(
        "--out", required=True, metavar="FILE", help="output extended XYZ file (.gz: compressed at the end)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    xtb = parser.add_argument_group("xTB")
    xtb.add_argument("--method", default="gfn2", help="gfn2 (GFN2-xTB, default) or gfn1")
    xtb.add_argument(
        "--electronic-temperature",
        type=float,
        default=None,
        metavar="K",
        help="Fermi smearing temperature (default 300 K; cumulene scans use the module's tested value)",
    )
    xtb.add_argument("--max-iterations", type=int, default=None, help="SCF iteration limit (default 250)")
    xtb.add_argument(
        "--accuracy", type=float, default=1.0, help="tblite SCF convergence scale, smaller is tighter (default 1.0)"
    )
    xtb.add_argument("--charge", type=int, default=0, help="total charge (default 0)")
    xtb.add_argument("--uhf", type=int, default=0, help="number of unpaired electrons (default 0)")
    md = parser.add_argument_group("MD sampling (--structure / --smiles)")
    md.add_argument("--temperature", type=float, metavar="K", help="Langevin thermostat temperature")
    md.add_argument("--frames", type=int, metavar="N", help="number of frames to write")
    md.add_argument("--stride", type=int, default=10, metavar="S", help="MD steps between frames (default 10)")
    md.add_argument("--timestep", type=float, default=0.5, metavar="FS", help="time step in fs (default 0.5)")
    md.add_argument(
        "--equilibration",
        type=int,
        default=1000,
        metavar="STEPS",
        help="MD steps discarded before sampling (default 1000: 500 fs, five thermostat times at 0.01/fs)",
    )
    md.add_argument(
        "--friction", type=float, default=0.01, metavar="PER_FS", help="Langevin friction, 1/fs (default 0.01 = 10/ps)"
    )
    md.add_argument("--seed", type=int, default=0, help="seed of velocities, thermostat noise, embedding, scan noise")
    scan = parser.add_argument_group("torsion scan (--torsion-scan)")
    scan.add_argument(
        "--angles",
        default="0:180:10",
        metavar="START:STOP:STEP",
        help="torsions in degrees, STOP included when on the grid (default 0:180:10)",
    )
    scan.add_argument("--noise", type=float, default=0.0, metavar="Å", help="Gaussian displacement of all atoms")
    scan.add_argument("--samples-per-angle", type=int, default=1, metavar="K", help="structures per angle")
    parser.add_argument(
        "--compact",
        action="store_true",
        help="round positions to 1e-5 Å, energies to 1e-6 eV, forces to 1e-4 eV/Å (smaller files)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_angles(text: str) -> list[float]:
    """``START:STOP:STEP`` (degrees, STOP included when on the grid) or a comma list ``0,45,90``."""
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3:
                raise ValueError
            start, stop, step = parts
            if step <= 0 or stop < start:
                raise ValueError
            n = int(np.floor((stop - start) / step + 1e-9)) + 1
            return [float(start + i * step) for i in range(n)]
        return [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ValueError(
            f"--angles {text!r}: expected START:STOP:STEP with STEP > 0 and STOP >= START, or a comma-separated list"
        ) from None


def _compact(frame: Atoms) -> Atoms:
    from ase.calculators.singlepoint import SinglePointCalculator

    energy = round(float(frame.get_potential_energy()), COMPACT_DECIMALS["energy"])
    forces = np.round(frame.get_forces(), COMPACT_DECIMALS["forces"])
    out = frame.copy()
    out.positions = np.round(frame.positions, COMPACT_DECIMALS["positions"])
    out.calc = SinglePointCalculator(out, energy=energy, forces=forces)
    return out


class _Appender:
    """Append frames to an extended XYZ file, flushed after each frame."""

    def __init__(self, out: Path, overwrite: bool, compact: bool):
        self.final = out
        self.path = out.with_suffix("") if out.suffix == ".gz" else out
        for p in {self.final, self.path}:
            if p.exists():
                if not overwrite:
                    raise ValueError(f"{p} exists (pass --overwrite to replace it)")
                p.unlink()
        if not self.path.parent.exists():
            raise FileNotFoundError(f"{self.path.parent}: no such directory for --out")
        self.compact = compact
        self.count = 0
        self.path.touch()

    def __call__(self, frame: Atoms) -> None:
        from ase.io import write

        if self.compact:
            frame = _compact(frame)
        with open(self.path, "a") as f:
            write(f, frame, format="extxyz")
            f.flush()
        self.count += 1

    def finish(self) -> None:
        if self.final != self.path:
            with open(self.path, "rb") as src, gzip.open(self.final, "wb", compresslevel=9) as dst:
                shutil.copyfileobj(src, dst)
            self.path.unlink()


def _read(path: str, index: str | int) -> list[Atoms]:
    from ase.io import read

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such structure file")
    try:
        if p.suffix == ".gz":
            # ASE's extxyz reader seeks backwards once per frame, which re-decompresses a gzip stream
            # from the start (quadratic time): decompress into memory first.
            from ase.io.formats import filetype

            fmt = filetype(str(p.with_suffix("")), read=False)
            with gzip.open(p, "rt") as f:
                frames = read(io.StringIO(f.read()), index=index, format=fmt)
        else:
            frames = read(p, index=index)
    except Exception as err:  # ASE raises many kinds for unreadable files
        raise ValueError(f"{p}: cannot read structures ({type(err).__name__}: {err})") from err
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise ValueError(f"{p}: no structures in file")
    return frames


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from so3krates.reference import structures, xtb
    from so3krates.reference.sampling import sample_md

    method = xtb.canonical_method(args.method)
    progress = not args.no_progress
    t0 = time.perf_counter()
    xtb_kw = {"method": method, "charge": args.charge, "uhf": args.uhf}

    if args.torsion_scan is not None:
        angles = parse_angles(args.angles)
        frames = structures.torsion_scan(
            args.torsion_scan, angles, noise=args.noise, samples_per_angle=args.samples_per_angle, seed=args.seed
        )
        el_t = structures.CUMULENE_ELECTRONIC_TEMPERATURE
        max_it = structures.CUMULENE_MAX_ITERATIONS
        what = f"[{args.torsion_scan}]cumulene torsion scan, {len(angles)} angles"
    elif args.label is not None:
        frames = _read(args.label, ":")
        el_t, max_it = 300.0, 250
        what = f"labels for {args.label}"
    else:
        if args.temperature is None or args.frames is None:
            raise ValueError("MD sampling needs --temperature K and --frames N")
        if args.smiles is not None:
            try:
                start = structures.from_smiles(args.smiles, seed=args.seed)
            except ImportError as err:
                raise ValueError(str(err)) from None
        else:
            start = _read(args.structure, 0)[0]
        frames = None
        el_t, max_it = 300.0, 250
        what = f"{args.frames} MD frames at {args.temperature:g} K"
    if args.electronic_temperature is not None:
        el_t = args.electronic_temperature
    if args.max_iterations is not None:
        max_it = args.max_iterations

    # Check elements before creating (or clobbering) the output file.
    for i, atoms in enumerate(frames if frames is not None else [start]):
        xtb.check_elements(atoms, method, where=f"structure {i}")
    out = _Appender(Path(args.out), args.overwrite, args.compact)
    xtb_kw.update(electronic_temperature=el_t, max_iterations=max_it, accuracy=args.accuracy)

    if frames is None:
        sample_md(
            start,
            args.temperature,
            args.frames,
            args.stride,
            timestep_fs=args.timestep,
            equilibration_steps=args.equilibration,
            friction=args.friction,
            seed=args.seed,
            progress=progress,
            callback=out,
            **xtb_kw,
        )
    else:
        bar = tqdm(total=len(frames), unit="frame", desc="xTB", disable=not progress, dynamic_ncols=True)

        def write_and_tick(frame: Atoms) -> None:
            out(frame)
            bar.update(1)

        try:
            xtb.label(frames, callback=write_and_tick, **xtb_kw)
        finally:
            bar.close()
    out.finish()
    print(
        f"{what} ({method}, electronic temperature {el_t:g} K): {out.count} frames -> {out.final} "
        f"in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    return 0
