"""Error figures of a trained model on labelled data.

Prints energy MAE/RMSE (total and per atom), force MAE/RMSE per Cartesian component and the
per-structure averaged MAE (the paper's Table 4) in the units the model was trained in (or those of
--energy-unit/--length-unit), and writes metrics.json, predictions.npz and parity.png (not with
--no-plot) to --out (default RUN_DIR/evaluation_<split>). With the training file (the default --data),
--split test (the default) evaluates exactly the held-out frames saved in the run's split.npz; any other
file is evaluated whole. Data with elements the model never saw is refused. Example: so3krates evaluate
--model runs/ethanol --split test.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from so3krates.cli.shared import add_dtype_argument
from so3krates.data.units import ENERGY_UNIT_NAMES, LENGTH_UNIT_NAMES
from so3krates.run_dir import dtype_for_run
from so3krates.train.evaluate import SPLITS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="run directory written by so3krates train")
    parser.add_argument("--data", help="labelled data file (default: the file the model was trained on)")
    parser.add_argument(
        "--split",
        choices=SPLITS,
        help="frames of the training file to evaluate: its saved test/valid/train split, "
        "or all (default: test for the training file, all for any other file)",
    )
    parser.add_argument("--out", help="output directory (default: RUN_DIR/evaluation_<split or file name>)")
    parser.add_argument(
        "--energy-unit", help=f"energy unit of --data: {', '.join(ENERGY_UNIT_NAMES)} (default: the training units)"
    )
    parser.add_argument(
        "--length-unit", help=f"length unit of --data: {', '.join(LENGTH_UNIT_NAMES)} (default: the training units)"
    )
    parser.add_argument("--energy-key", help="name of the energy label in --data (default: as in training)")
    parser.add_argument("--forces-key", help="name of the forces label in --data (default: as in training)")
    parser.add_argument("--stress-key", help="name of the stress label in --data (default: as in training)")
    parser.add_argument("--batch-size", type=int, default=16, help="structures per evaluation batch (default 16)")
    parser.add_argument("--no-plot", action="store_true", help="do not draw the parity plot")
    add_dtype_argument(parser)


def run(args: argparse.Namespace) -> int:
    from so3krates.train.evaluate import evaluate_model, format_table

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be ≥ 1, got {args.batch_size}")
    result = evaluate_model(
        args.model,
        data=args.data,
        split=args.split,
        out_dir=args.out,
        energy_unit=args.energy_unit,
        length_unit=args.length_unit,
        energy_key=args.energy_key,
        forces_key=args.forces_key,
        stress_key=args.stress_key,
        batch_size=args.batch_size,
        plot=not args.no_plot,
        dtype=dtype_for_run(args.model, args.dtype),
    )
    print(format_table(result.metrics))
    print(written_message(result.out_dir, plotted=not args.no_plot))
    return 0


def written_message(out_dir: Path, plotted: bool) -> str:
    """What this evaluation wrote, by file name: the parity plot only where it was drawn."""
    if plotted:
        return f"metrics.json, predictions.npz and parity.png written to {out_dir}"
    stale = (Path(out_dir) / "parity.png").exists()
    note = "; the parity.png there is from an earlier evaluation" if stale else ""
    return f"metrics.json and predictions.npz written to {out_dir} (no parity plot: --no-plot){note}"
