"""Command-line options shared by several subcommands."""

from __future__ import annotations

import argparse

from so3krates.precision import DTYPES


def add_dtype_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--dtype`` flag of the commands that run a trained model."""
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default=None,
        help="run the model in float32 or float64 (default: the dtype it was trained in); energies are "
        "float64 sums either way",
    )
