"""What several subcommands share: the --dtype flag, reading the one structure --structure names."""

from __future__ import annotations

import argparse
from pathlib import Path

import ase.io
from ase import Atoms

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


def read_structure(path: str, index: str) -> Atoms:
    """The one structure ``--structure path --index index`` names (any format ASE reads)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"structure file {path} does not exist")
    atoms = ase.io.read(path, index=index)
    if isinstance(atoms, list):
        raise ValueError(f"--index {index} selects several frames; give one")
    return atoms
