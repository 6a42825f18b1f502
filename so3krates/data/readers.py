"""Read labelled structures from npz (three conventions) and every format ``ase.io.read`` knows.

Everything is converted once, on load, to eV and Å, and validated: a bad file raises a ``ValueError``
(``FileNotFoundError`` for a missing file) whose message names the file, the key and the frame (in a
text file also the line: ``FILE: frame K (line L): ...``).

npz conventions (:mod:`so3krates.data.npz`); each quantity may come under any of its names, but only one:

* sGDML / MD17: ``R`` (M, n, 3), ``z`` (n,) or (M, n), ``E`` (M,) or (M, 1), ``F`` (M, n, 3),
  optional ``lattice`` or ``cell`` (3, 3) / (M, 3, 3), lattice vectors as rows (as sGDML's extxyz
  converter writes them; for the usual orthorhombic boxes rows and columns are the same), and the units
  ``e_unit`` / ``r_unit`` (strings such as 'kcal/mol', 'eV', 'Ang', 'bohr', 'au'). sGDML's metadata
  (``type``, ``code_version``, ``name``, ``theory``, ``md5``, ``perms``, ``E_min`` … ``F_var``) is
  accepted and not used.
* the So3krates authors' mlff files: ``R``, ``z`` (M, n) with 0 as padding after a frame's last atom,
  ``E``, ``F``, ``unit_cell`` (M, 3, 3) or (3, 3), ``pbc``, ``node_mask``; their neighbour lists
  ``idx_i``/``idx_j`` are accepted and not used (neighbour lists are built from the positions with the
  model's cutoff), and so are the charges ``Q`` (total, per frame) and ``q`` (partial): there is no
  charge model.
* generic: ``positions`` (M, n, 3), ``atomic_numbers`` or ``numbers`` (M, n) or (n,), ``energy`` (M,)
  or (M, 1), ``forces`` (M, n, 3), optional ``cell`` (M, 3, 3) or (3, 3), ``pbc`` (M, 3) or (3,),
  ``stress`` (M, 3, 3) or Voigt (M, 6) (xx, yy, zz, yz, xz, xy), and ``node_mask`` (M, n) bool for
  padded frames (padding atoms are dropped, each frame keeps only its real atoms).

Without ``node_mask``, atomic number 0 after a frame's last real atom is padding (a 0 before a real atom
is an error); with it, the mask decides and a real atom with Z = 0 is an error. Without a ``pbc`` key, a
direction is periodic where its cell vector is non-zero. A key none of these names (and not named by
``energy_key``/``forces_key``/``stress_key``) is refused, naming it: nothing is dropped in silence.

Units: ``energy_unit``/``length_unit`` None means the file's own (an sGDML ``e_unit``/``r_unit``),
else eV and Å; a given unit that contradicts the file's is an error naming both. After reading,
:func:`so3krates.data.plausibility.check_units` warns (``UnitsWarning``) when forces disagree with the
energy differences of consecutive frames, or energies or forces are too large for the units.

ASE formats (extxyz, also gzipped, ASE db, traj, ...): labels come from the attached calculator
results (ase's extxyz reader puts ``energy=``, ``forces`` and ``stress=`` there), or, when
``energy_key``/``forces_key``/``stress_key`` are given, from ``atoms.info`` / ``atoms.arrays`` (for
an ASE db also its key-value pairs and data) under that name. With no key given and no calculator
result, the common names ``energy``/``Energy``/``REF_energy``, ``forces``/``force``/``REF_forces``
and ``stress``/``REF_stress`` are tried. An extended XYZ file that ASE cannot parse, or parses only in
part (it stops at a blank line), is an error naming the frame and line (:mod:`so3krates.data.xyz_scan`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from so3krates.data.ase_io import read_ase
from so3krates.data.frames import Frames
from so3krates.data.npz import read_npz
from so3krates.data.plausibility import check_units
from so3krates.data.raw import LABELS, RawFrames
from so3krates.data.units import energy_factor, energy_unit_name, length_factor, length_unit_name, resolve_units
from so3krates.validation import check_atomic_numbers, check_cell, check_finite, check_no_overlap, check_shapes

log = logging.getLogger(__name__)


def read_frames(
    path: str | os.PathLike,
    *,
    energy_unit: str | None = None,
    length_unit: str | None = None,
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
    require_energy: bool = False,
    require_forces: bool = False,
    index: str | int | slice = ":",
) -> Frames:
    """Read, convert (to eV, Å) and validate a data file.

    Args:
        path: ``.npz`` file or anything ``ase.io.read`` reads (extxyz, ``.gz``, ASE db, traj, ...).
        energy_unit: unit of energies in the file (eV, kcal/mol, kJ/mol, Hartree); forces are in
            energy_unit/length_unit and stress in energy_unit/length_unit³. None: the file's own
            (sGDML ``e_unit``), else eV; the unit used is logged (``so3krates.data.readers``).
        length_unit: unit of positions and cell in the file (Å or Bohr); None: the file's own
            (sGDML ``r_unit``), else Å.
        energy_key, forces_key, stress_key: names of the labels in the file (npz key, or
            ``atoms.info``/``atoms.arrays`` key); None = the convention's default. A named key
            must exist.
        require_energy, require_forces: raise if any frame lacks the label.
        index: frames to read, ASE syntax (``":"``, ``"-10:"``, ``"::2"``, ``3``, a ``slice``).
    Returns:
        Frames of M structures in eV and Å: positions M × (n_i, 3), energy (M,), forces
        M × (n_i, 3) eV/Å, cell (M, 3, 3), pbc (M, 3), stress (M, 3, 3) eV/Å³;
        ``energy``/``forces``/``stress`` are None when the file has none.
    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: unknown unit, a unit that contradicts the file's, unsupported format, a text file
            ASE cannot parse (or parses only in part), an npz key that is not understood, missing or
            misshapen keys, NaN/infinite values, an empty selection, missing required labels, labels
            present in some frames only, atomic numbers outside 1..118, a periodic cell of zero volume,
            or two atoms closer than 0.1 Å (minimum image in periodic frames).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such data file")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, not a data file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty dataset (the file is empty)")
    # fail on a misspelt unit before spending time on a large file
    for unit, name in ((energy_unit, energy_unit_name), (length_unit, length_unit_name)):
        if unit is not None:
            name(unit)
    keys = {"energy": energy_key, "forces": forces_key, "stress": stress_key}
    if path.suffix.lower() == ".npz":
        raw = read_npz(path, keys, index, require_energy, require_forces)
    else:
        raw = read_ase(path, keys, index)
    energy_unit, length_unit, notes = resolve_units(energy_unit, length_unit, raw.declared_units, str(path))
    for note in notes:
        log.info("%s: %s", path, note)
    ef, lf = energy_factor(energy_unit), length_factor(length_unit)
    frames = _finish(raw, path, ef, lf, length_unit, require_energy, require_forces)
    check_units(frames, energy_unit, length_unit)
    return frames


# ------------------------------------------------------------------------------------- validation


def _finish(
    raw: RawFrames, path: Path, ef: float, lf: float, length_unit: str, require_energy: bool, require_forces: bool
) -> Frames:
    """Validate, convert to eV/Å and build Frames."""
    m = len(raw.positions)
    if m == 0:
        raise ValueError(f"{path}: empty dataset (no frames in the file or in the selected index)")
    _check_shapes(raw, path)
    labels = _labels(raw, path, require_energy, require_forces)
    if not raw.finite_checked:
        values = {"positions": raw.positions, "cell": raw.cell, **labels}
        for what, v in values.items():
            if v is not None:
                check_finite(v, what, f"{path}: key {raw.keys[what]!r}", raw.frame_labels())
    # scale only when needed: one multiply per frame is most of the load time of 10⁵-frame files
    positions = raw.positions if lf == 1.0 else [p * lf for p in raw.positions]
    cell = np.array(raw.cell, dtype=np.float64).reshape(m, 3, 3) * lf
    pbc = np.array(raw.pbc, dtype=bool).reshape(m, 3)
    _check_structures(path, raw, positions, cell, pbc, length_unit)
    return Frames(
        positions=positions,
        numbers=raw.numbers,
        energy=None if labels["energy"] is None else np.array(labels["energy"], dtype=np.float64) * ef,
        forces=None if labels["forces"] is None else _scaled(labels["forces"], ef / lf),
        cell=cell,
        pbc=pbc,
        stress=None if labels["stress"] is None else np.array(labels["stress"]).reshape(m, 3, 3) * (ef / lf**3),
        source=str(path),
    )


def _check_shapes(raw: RawFrames, path: Path) -> None:
    """Per frame: positions (n, 3) matching n ≥ 1 atomic numbers, forces (n, 3)."""
    kp, kz = raw.keys["positions"], raw.keys["numbers"]
    for k, i in enumerate(raw.frame_labels()):
        p, z = raw.positions[k], raw.numbers[k]
        check_shapes(p, z, f"{path}: keys {kp!r}/{kz!r}: frame {i}")
        f = raw.forces[k]
        if f is not None and f.shape != p.shape:
            raise ValueError(
                f"{path}: key {raw.keys['forces']!r}: frame {i}: forces have shape {f.shape}, expected {p.shape} "
                "(one 3-vector per atom)"
            )


def _labels(raw: RawFrames, path: Path, require_energy: bool, require_forces: bool) -> dict[str, list | None]:
    """Each label's per-frame values, or None when no frame has it; a label in some frames only raises."""
    ids = raw.frame_labels()
    for q, required in (("energy", require_energy), ("forces", require_forces)):
        have = [v is not None for v in getattr(raw, q)]
        if required and not all(have):
            first = ids[have.index(False)]
            raise ValueError(
                f"{path}: key {raw.keys[q]!r}: frame {first} has no {q} ({q} required in every frame); "
                f"{raw.found_at(first)}"
            )
    labels: dict[str, list | None] = {}
    for q in LABELS:
        have = [v is not None for v in getattr(raw, q)]
        if any(have) and not all(have):
            first, other = ids[have.index(False)], ids[have.index(True)]
            raise ValueError(
                f"{path}: key {raw.keys[q]!r}: frame {first} has no {q} but frame {other} has: "
                f"a label must be in all frames or in none; {raw.found_at(first)}"
            )
        labels[q] = getattr(raw, q) if all(have) else None
    return labels


def _scaled(arrays: list[np.ndarray], factor: float) -> list[np.ndarray]:
    return arrays if factor == 1.0 else [a * factor for a in arrays]


def _check_structures(
    path: Path, raw: RawFrames, positions: list[np.ndarray], cell: np.ndarray, pbc: np.ndarray, length_unit: str
) -> None:
    """Atomic numbers in 1..118, non-degenerate periodic cells, no two atoms closer than 0.1 Å."""
    ids = raw.frame_labels()
    check_atomic_numbers(raw.numbers, f"{path}: key {raw.keys['numbers']!r}", ids, zero_hint=raw.zero_hint)
    check_cell(cell, pbc, f"{path}: key {raw.keys['cell']!r}", ids)
    check_no_overlap(
        positions,
        cell,
        pbc,
        f"{path}: key {raw.keys['positions']!r}",
        ids,
        numbers=raw.numbers,
        hint=(
            f" (a duplicated atom or corrupted structure? positions were read as {length_unit}: "
            "is that the file's length unit?)"
        ),
    )
