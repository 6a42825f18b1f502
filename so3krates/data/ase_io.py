"""Read every format ``ase.io.read`` knows (extxyz, also gzipped, ASE db, traj, ...) into raw frames.

Labels come from the attached calculator results, or, when a key is named, from ``atoms.info`` /
``atoms.arrays`` (for an ASE db also its key-value pairs and data); with no key and no calculator result
the common names in ``FALLBACK_KEYS`` are tried.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from so3krates.data.frames import stress_3x3
from so3krates.data.raw import LABELS, RawFrames, parse_index, select_frames
from so3krates.data.xyz_scan import locate_failure, scan_file

XYZ_FORMATS = ("extxyz", "xyz")  # scanned for the frame and line of a problem (so3krates.data.xyz_scan)

FALLBACK_KEYS = {
    "energy": ("energy", "Energy", "REF_energy"),
    "forces": ("forces", "force", "REF_forces"),
    "stress": ("stress", "REF_stress"),
}


def read_ase(path: Path, keys: dict[str, str | None], index: str | int | slice) -> RawFrames:
    """Frames of any file ``ase.io.read`` reads, with their labels (see the module docstring)."""
    images, ids, lines = _read_images(path, index)
    raw = RawFrames(frame_ids=ids, lines=lines)
    used = {q: keys[q] or q for q in LABELS}
    for k, atoms in zip(raw.frame_labels(), images, strict=True):
        values = _frame_labels(atoms, keys, used, raw, path, k)
        raw.positions.append(np.asarray(atoms.positions, dtype=np.float64))
        raw.numbers.append(np.asarray(atoms.numbers, dtype=np.int64))
        raw.cell.append(np.asarray(atoms.cell[:], dtype=np.float64))
        raw.pbc.append(np.asarray(atoms.pbc, dtype=bool))
        raw.energy.append(_energy(values["energy"], path, used["energy"], k))
        f = values["forces"]
        raw.forces.append(None if f is None else np.asarray(f, dtype=np.float64))
        s = values["stress"]
        raw.stress.append(None if s is None else _stress(s, path, used["stress"], k))
    raw.keys = {"positions": "positions", "numbers": "numbers", "cell": "cell", **used}
    return raw


def _read_images(path: Path, index: str | int | slice) -> tuple[list, list[int], dict[int, int]]:
    """(atoms, file frame numbers, line of each frame's header in a text file) of the selected frames; any
    read failure is a ValueError naming the file (and for XYZ files the frame and line)."""
    import ase.io
    from ase.io.formats import UnknownFileTypeError, filetype

    try:
        fmt = filetype(str(path))
    except Exception:  # noqa: BLE001 - let ase.io.read produce the error below
        fmt = None
    as_fmt = f" as {fmt}" if fmt else ""
    try:
        if fmt in ("db", "json"):
            return (*_read_ase_db(path, index), {})
        images = ase.io.read(str(path), index=parse_index(index, path))
    except UnknownFileTypeError as err:
        if str(err).startswith("Empty file"):  # also a gzip file that decompresses to nothing
            raise ValueError(f"{path}: empty dataset (the file is empty)") from None
        raise ValueError(
            f"{path}: unsupported format ({err}); use .npz (keys R/z/E/F or positions/atomic_numbers/energy/forces) "
            "or a format ase.io.read knows (extxyz, .xyz.gz, ASE .db, .traj, ...)"
        ) from None
    except StopIteration:
        return [], [], {}
    except Exception as err:  # noqa: BLE001 - any parse failure means a bad file
        if isinstance(err, ValueError) and str(err).startswith(f"{path}: "):  # ours (bad frame index), clear
            raise
        where = locate_failure(path) if fmt in XYZ_FORMATS else None
        if where is not None:
            raise ValueError(f"{path}: {where}") from None
        raise ValueError(f"{path}: cannot read{as_fmt} ({type(err).__name__}: {err})") from None
    images = images if isinstance(images, list) else [images]
    ids = _ase_ids(index, len(images), path)
    if fmt not in XYZ_FORMATS:
        return images, ids, {}
    found = scan_file(path)  # ASE stops at a blank line without a word: frames after it would be lost
    if found.problem is not None:
        raise ValueError(f"{path}: {found.problem}")
    exact = _exact_ids(index, path)
    return images, ids, {i: found.headers[i] for i in ids if exact and i < len(found.headers)}


def _frame_labels(
    atoms: Any, keys: dict[str, str | None], used: dict[str, str], raw: RawFrames, path: Path, k: int
) -> dict[str, object]:
    """Energy, forces and stress of one frame as found (None where absent); ``used`` records fallback names.

    A frame lacking a label gets the keys it has recorded in ``raw.found`` (for later messages); a label
    named by the user must exist.
    """
    results = dict(getattr(atoms.calc, "results", None) or {})
    info = dict(atoms.info)
    kvp, extra = info.pop("key_value_pairs", None) or {}, info.pop("data", None) or {}  # ASE db rows
    values: dict[str, object] = {}
    for q in LABELS:
        store = {**extra, **kvp, **info} if q != "forces" else {**extra, **atoms.arrays}
        value = None
        if keys[q] is not None:
            value = store.get(keys[q], results.get(keys[q]))
        else:
            value = results.get(q)
            if value is None and q == "energy":
                value = results.get("free_energy")
            for name in FALLBACK_KEYS[q]:
                if value is not None:
                    break
                if name in store:
                    value, used[q] = store[name], name
        values[q] = value
    if any(v is None for v in values.values()):
        raw.found[k] = (
            f"info keys: {sorted({**kvp, **info})}, array keys: {sorted(atoms.arrays)}, "
            f"calculator results: {sorted(results)}" + (f", db data keys: {sorted(extra)}" if extra else "")
        )
        for q in LABELS:
            if keys[q] is not None and values[q] is None:
                raise ValueError(
                    f"{path}: key {keys[q]!r} ({q}, named by the user) missing in frame {k}; {raw.found[k]}"
                )
    return values


def _energy(e: object, path: Path, key: str, k: int) -> float | None:
    """A frame's energy as a float (None stays None); anything but one number raises."""
    if e is None:
        return None
    try:
        e_arr = np.asarray(e, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: key {key!r}: frame {k}: energy {e!r} is not a number") from None
    if e_arr.size != 1:
        raise ValueError(f"{path}: key {key!r}: frame {k}: energy has shape {e_arr.shape}, expected a scalar")
    return float(e_arr.reshape(()))


def _stress(value: object, path: Path, key: str, i: int) -> np.ndarray:
    try:
        return stress_3x3(value)
    except ValueError as err:
        raise ValueError(f"{path}: key {key!r}: frame {i}: {err}") from None


def _read_ase_db(path: Path, index: str | int | slice) -> tuple[list, list[int]]:
    """Atoms of an ASE database with key-value pairs and data in ``info`` (ase.io.read drops them)."""
    import ase.db

    db = ase.db.connect(str(path))
    rows = list(db.select())
    ids = select_frames(len(rows), index, path)
    return [rows[i].toatoms(add_additional_information=True) for i in ids], ids


def _exact_ids(index: str | int | slice, path: Path) -> bool:
    """Whether frames read with ``index`` can be numbered as in the file without knowing its length."""
    idx = parse_index(index, path)
    if isinstance(idx, int):
        return idx >= 0
    return (idx.start or 0) >= 0 and (idx.step or 1) > 0


def _ase_ids(index: str | int | slice, count: int, path: Path) -> list[int]:
    """File frame numbers of ``count`` frames read with ``index`` (else positions in the selection)."""
    idx = parse_index(index, path)
    if not _exact_ids(index, path):
        return list(range(count))
    if isinstance(idx, int):
        return [idx]
    return [
        (idx.start or 0) + k * (idx.step or 1) for k in range(count)
    ]  # negative indices: the file length is unknown without reading it twice
