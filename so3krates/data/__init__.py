"""Data layer: read labelled structures (npz, extxyz, ASE db, ...) into :class:`Frames` (eV, Å), split them.

Depends on numpy, ase and vesin only (and ``so3krates.graph.check_structure``), never on the model.
"""

from so3krates.data.frames import Frames
from so3krates.data.readers import read_frames
from so3krates.data.splits import load_split, make_split, save_split
from so3krates.data.units import energy_factor, length_factor

__all__ = ["Frames", "read_frames", "make_split", "save_split", "load_split", "energy_factor", "length_factor"]
