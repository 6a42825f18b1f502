"""What several subcommands share: the --dtype flag, reading the one structure --structure names (a clear
message for a missing or unreadable file and a frame that is not there)."""

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
    """The one structure ``--structure path --index index`` names (any format ASE reads).

    Raises:
        FileNotFoundError: no such file.
        ValueError: ``index`` is not one frame number, or past the end of the file; ASE cannot read the
            file (its format unknown from the name, or the content not what the format expects). Each
            message names the file (and the flag).
    """
    from ase.io.formats import UnknownFileTypeError

    if not Path(path).exists():
        raise FileNotFoundError(f"structure file {path} does not exist")
    if Path(path).is_dir():
        raise ValueError(f"--structure {path}: is a directory, not a structure file")
    if Path(path).stat().st_size == 0:
        raise ValueError(f"--structure {path}: the file is empty")
    frame = _frame_number(index)
    try:
        atoms = ase.io.read(path, index=frame)
    except (StopIteration, IndexError):
        n = _count_frames(path)
        if n == 0:
            raise ValueError(f"--structure {path}: the file holds no structure") from None
        raise ValueError(
            f"--index {index}: {path} has {n} frame{'s' if n != 1 else ''} (give {-n} … {n - 1}; -1 is the last)"
        ) from None
    except UnknownFileTypeError as err:
        raise ValueError(
            f"--structure {path}: ASE cannot tell its format from the file name ({err}); give the file a suffix "
            "ASE knows (.xyz, .extxyz, .traj, .cif, POSCAR, …)"
        ) from None
    except Exception as err:  # noqa: BLE001 (ASE's readers raise anything from KeyError to their own errors)
        reason = str(err).strip() or type(err).__name__
        raise ValueError(f"--structure {path}: ASE cannot read it as a structure: {reason}") from None
    if isinstance(atoms, list):
        raise ValueError(f"--index {index} selects several frames; give one")
    return atoms


def _frame_number(index: str) -> int:
    """``--index`` as one frame number (negative: from the end)."""
    try:
        return int(str(index).strip())
    except ValueError:
        if ":" in str(index):
            raise ValueError(f"--index {index} selects several frames; give one") from None
        raise ValueError(
            f"--index {index}: not a frame number; give an integer (0 the first frame, -1 the last)"
        ) from None


def _count_frames(path: str) -> int:
    """How many structures ASE finds in ``path`` (for a message; 0 if it cannot read any)."""
    try:
        return sum(1 for _ in ase.io.iread(path, index=":"))
    except Exception:  # noqa: BLE001 (only for the message)
        return 0
