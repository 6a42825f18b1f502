"""Convert data files to the on-disk streaming format (memory-mapped .npy arrays, eV and Å).

Every format ``so3krates train --data`` reads (npz, extxyz, ASE db, ...) is accepted; units and label
keys are converted once, here. Several --data files are read one after the other and appended, so the
output may be larger than memory. Train on the result with ``so3krates train --data DIR``.

Example::

    so3krates prepare --data part1.extxyz part2.extxyz --energy-unit kcal/mol --out data.stream
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from so3krates.data import Frames, read_frames
from so3krates.data.npz import declared_units
from so3krates.data.stream import StreamDataset, write_stream


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, nargs="+", metavar="FILE", help="input file(s), appended in order")
    parser.add_argument("--out", required=True, metavar="DIR", help="stream directory to create")
    parser.add_argument(
        "--energy-unit",
        default=None,
        help="energy unit of the input (default: the file's e_unit if it has one, else eV)",
    )
    parser.add_argument(
        "--length-unit",
        default=None,
        help="length unit of the input (default: the file's r_unit if it has one, else Å)",
    )
    parser.add_argument("--energy-key", default=None, help="name of the energy label in the input")
    parser.add_argument("--forces-key", default=None, help="name of the forces label in the input")
    parser.add_argument("--stress-key", default=None, help="name of the stress label in the input")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _chunks(args: argparse.Namespace) -> Iterator[Frames]:
    for path in args.data:
        given = {"energy": args.energy_unit, "length": args.length_unit}
        for kind, (key, text) in declared_units(path).items():
            if given[kind] is None:
                print(f"{path}: {kind} unit {text!r}, from the file's key {key!r}")
        yield read_frames(
            path,
            energy_unit=args.energy_unit,
            length_unit=args.length_unit,
            energy_key=args.energy_key,
            forces_key=args.forces_key,
            stress_key=args.stress_key,
        )


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    write_stream(_chunks(args), out, progress=not args.no_progress, source=" + ".join(map(str, args.data)))
    dataset = StreamDataset(out)
    labels = ", ".join(dataset.meta["labels"]) or "no labels"
    print(f"wrote {out}: {len(dataset)} frames, {dataset.meta['n_atoms']} atoms, {labels} (eV, Å)")
    return 0
