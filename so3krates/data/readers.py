"""Read labelled structures from npz (two conventions) and every format ``ase.io.read`` knows.

Everything is converted once, on load, to eV and Å, and validated: a bad file raises a ``ValueError``
(``FileNotFoundError`` for a missing file) whose message names the file, the key and the frame.

npz conventions:

* sGDML / MD17: ``R`` (M, n, 3), ``z`` (n,) or (M, n), ``E`` (M,) or (M, 1), ``F`` (M, n, 3),
  optional ``lattice`` or ``cell`` (3, 3) / (M, 3, 3), lattice vectors as rows (as sGDML's extxyz
  converter writes them; for the usual orthorhombic boxes rows and columns are the same).
* generic: ``positions`` (M, n, 3), ``atomic_numbers`` (M, n) or (n,), ``energy`` (M,) or (M, 1),
  ``forces`` (M, n, 3), optional ``cell`` (M, 3, 3) or (3, 3), ``pbc`` (M, 3) or (3,), ``stress``
  (M, 3, 3) or Voigt (M, 6) (xx, yy, zz, yz, xz, xy), and ``node_mask`` (M, n) bool for padded
  frames (padding atoms are dropped, each frame keeps only its real atoms).

Without a ``pbc`` key, a direction is periodic where its cell vector is non-zero.

ASE formats (extxyz, also gzipped, ASE db, traj, ...): labels come from the attached calculator
results (ase's extxyz reader puts ``energy=``, ``forces`` and ``stress=`` there), or, when
``energy_key``/``forces_key``/``stress_key`` are given, from ``atoms.info`` / ``atoms.arrays`` (for
an ASE db also its key-value pairs and data) under that name. With no key given and no calculator
result, the common names ``energy``/``Energy``/``REF_energy``, ``forces``/``force``/``REF_forces``
and ``stress``/``REF_stress`` are tried.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from so3krates.data import checks
from so3krates.data.frames import Frames, stress_3x3
from so3krates.data.units import energy_factor, length_factor, length_unit_name

_FALLBACK_KEYS = {
    "energy": ("energy", "Energy", "REF_energy"),
    "forces": ("forces", "force", "REF_forces"),
    "stress": ("stress", "REF_stress"),
}
_LABELS = ("energy", "forces", "stress")


@dataclass
class _Raw:
    """Frames as read, before validation and unit conversion; per-frame labels may be None."""

    positions: list[np.ndarray] = field(default_factory=list)
    numbers: list[np.ndarray] = field(default_factory=list)
    cell: list[np.ndarray] = field(default_factory=list)
    pbc: list[np.ndarray] = field(default_factory=list)
    energy: list[float | None] = field(default_factory=list)
    forces: list[np.ndarray | None] = field(default_factory=list)
    stress: list[np.ndarray | None] = field(default_factory=list)
    frame_ids: list[int] = field(default_factory=list)  # frame number in the file, for messages
    keys: dict[str, str] = field(default_factory=dict)  # quantity → key name in the file, for messages
    found: dict[int, str] = field(default_factory=dict)  # frame number → keys it has (or -1: whole file)
    unmasked_npz: bool = False  # npz without node_mask: Z = 0 is then likely unmarked padding
    finite_checked: bool = False  # NaN/inf already checked on whole arrays (npz), skip the per-frame pass

    def found_at(self, frame: int) -> str:
        """Description of the keys found (in ``frame`` where known), for messages."""
        return self.found.get(frame, self.found.get(-1, ""))


def read_frames(
    path: str | os.PathLike,
    *,
    energy_unit: str = "eV",
    length_unit: str = "Å",
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
            energy_unit/length_unit and stress in energy_unit/length_unit³.
        length_unit: unit of positions and cell in the file (Å or Bohr).
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
        ValueError: unknown unit, unsupported format, missing or misshapen keys, NaN/infinite
            values, an empty selection, missing required labels, labels present in some frames only,
            atomic numbers outside 1..118, a periodic cell of zero volume, or two atoms closer
            than 0.1 Å (minimum image in periodic frames).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such data file")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, not a data file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty dataset (the file is empty)")
    # fail on a misspelt unit before spending time on a large file
    ef, lf = energy_factor(energy_unit), length_factor(length_unit)
    keys = {"energy": energy_key, "forces": forces_key, "stress": stress_key}
    if path.suffix.lower() == ".npz":
        raw = _read_npz(path, keys, index, require_energy, require_forces)
    else:
        raw = _read_ase(path, keys, index)
    return _finish(raw, path, ef, lf, length_unit_name(length_unit), require_energy, require_forces)


def _parse_index(index: str | int | slice, path: Path) -> int | slice:
    """An ASE-style frame index (``":"``, ``"-10:"``, ``"::2"``, ``"3"``, an int or a slice) as int or slice."""
    if isinstance(index, slice):
        return index
    if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
        return int(index)
    if isinstance(index, str):
        parts = index.strip().split(":")
        try:
            if len(parts) == 1:
                return int(parts[0])
            if len(parts) <= 3:
                return slice(*(int(x) if x.strip() else None for x in parts))
        except ValueError:
            pass
    raise ValueError(
        f"{path}: bad frame index {index!r}: expected an integer or a slice such as ':', '10:', '-100:', '::2'"
    )


def _select(m: int, index: str | int | slice, path: Path) -> list[int]:
    """Frame numbers selected by an ASE-style ``index`` among ``m`` frames."""
    idx = _parse_index(index, path)
    if isinstance(idx, slice):
        return list(range(m))[idx]
    if not -m <= idx < m:
        raise ValueError(f"{path}: frame index {idx} out of range: the file has {m} frames")
    return [idx % m]


# --------------------------------------------------------------------------------------------- npz


def _read_npz(
    path: Path, keys: dict[str, str | None], index: str | int | slice, require_energy: bool, require_forces: bool
) -> _Raw:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - any parse failure means a bad file
        raise ValueError(f"{path}: cannot read as npz ({type(err).__name__}: {err})") from None
    if not hasattr(data, "files"):  # np.load of a plain .npy renamed .npz gives an array
        raise ValueError(f"{path}: not an npz archive (a single array); expected named arrays such as 'R', 'z'")
    with data:
        try:
            return _parse_npz(data, path, keys, index, require_energy, require_forces)
        except (OSError, EOFError) as err:  # a truncated archive fails only when a member is read
            raise ValueError(f"{path}: cannot read as npz ({type(err).__name__}: {err})") from None


def _parse_npz(
    data: np.lib.npyio.NpzFile,
    path: Path,
    keys: dict[str, str | None],
    index: str | int | slice,
    require_energy: bool,
    require_forces: bool,
) -> _Raw:
    files = list(data.files)
    found = f"keys found: {files}"
    if "R" in files:
        pos_key, z_key = "R", "z"
        defaults = {"energy": "E", "forces": "F", "stress": "stress"}
    elif "positions" in files:
        pos_key, z_key = "positions", "atomic_numbers" if "atomic_numbers" in files else "numbers"
        defaults = {"energy": "energy", "forces": "forces", "stress": "stress"}
    else:
        raise ValueError(
            f"{path}: missing required keys: expected 'R' and 'z' (sGDML/MD17 convention) or 'positions' and "
            f"'atomic_numbers'; {found}"
        )
    if z_key not in files:
        raise ValueError(f"{path}: missing required key {z_key!r} (atomic numbers, next to {pos_key!r}); {found}")
    names = {q: keys[q] or defaults[q] for q in _LABELS}
    for q, required in (("energy", require_energy), ("forces", require_forces), ("stress", False)):
        if names[q] not in files and (keys[q] is not None or required):
            why = "named by the user" if keys[q] is not None else "required"
            raise ValueError(f"{path}: missing key {names[q]!r} ({q}, {why}); {found}")
    cell_key = "cell" if "cell" in files else "lattice" if "lattice" in files else None

    pos = np.asarray(data[pos_key])
    if pos.ndim == 2:  # a single structure
        pos = pos[None]
    if pos.ndim != 3 or pos.shape[2] != 3:
        raise ValueError(f"{path}: key {pos_key!r} (positions) must have shape (M, n, 3), got {pos.shape}")
    if not np.issubdtype(pos.dtype, np.number):
        raise ValueError(f"{path}: key {pos_key!r} (positions) must be numeric, got dtype {pos.dtype}")
    m, n = pos.shape[:2]
    if m == 0 or n == 0:
        raise ValueError(f"{path}: empty dataset: key {pos_key!r} has shape {pos.shape}; {found}")
    ids = _select(m, index, path)
    if not ids:
        raise ValueError(f"{path}: empty dataset: frame index {index!r} selects none of the {m} frames")

    def per_frame(key: str, what: str, tails: tuple[tuple[int, ...], ...], broadcast: bool = True) -> np.ndarray:
        """data[key] as (M, *tail) for an accepted tail; a single (*tail) is broadcast if allowed."""
        a = np.asarray(data[key])
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise ValueError(f"{path}: key {key!r} ({what}) must be numeric, got dtype {a.dtype}")
        for t in tails:
            if a.shape == (m, *t):
                return a
        if broadcast:
            for t in tails:
                if a.shape == t:
                    return np.broadcast_to(a, (m, *t))
        shapes = [(m, *t) for t in tails] + (list(tails) if broadcast else [])
        expected = " or ".join(str(t) for t in shapes)
        detail = ""
        if a.ndim == 1 + len(tails[0]) and a.shape[0] != m:
            detail = f": {a.shape[0]} frames, but {pos_key!r} has {m}"
        elif a.ndim >= 2 and tails[0][:1] == (n,) and a.shape[0] == m and a.shape[1] != n:
            detail = f": {a.shape[1]} atoms per frame, but {pos_key!r} has {n}"
        raise ValueError(
            f"{path}: key {key!r} ({what}) has shape {a.shape}{detail}; expected {expected} "
            f"to match {pos_key!r} {pos.shape}"
        )

    z = per_frame(z_key, "atomic numbers", ((n,),))
    if not np.issubdtype(z.dtype, np.integer):
        zf = np.asarray(z, dtype=np.float64)
        bad = ~np.isfinite(zf) | (zf != np.round(zf))
        if bad.any():
            k = int(np.argmax(bad.reshape(m, -1).any(axis=1)))
            raise ValueError(f"{path}: key {z_key!r}: frame {k}: atomic numbers must be integers, got {z[k]}")
    mask = (
        per_frame("node_mask", "padding mask", ((n,),)).astype(bool)
        if "node_mask" in files
        else np.ones((m, n), dtype=bool)
    )
    if cell_key is not None:
        cell = per_frame(cell_key, "lattice vectors", ((3, 3), (9,))).reshape(m, 3, 3)
    else:
        cell = np.zeros((m, 3, 3))
    if "pbc" in files:
        raw_pbc = np.asarray(data["pbc"])
        pbc = np.full((m, 3), bool(raw_pbc)) if raw_pbc.ndim == 0 else per_frame("pbc", "periodic directions", ((3,),))
        pbc = pbc.astype(bool)
    else:
        pbc = np.linalg.norm(cell, axis=2) > 0
    energy = forces = stress = None
    if names["energy"] in files:
        e = np.asarray(data[names["energy"]])
        if not (e.shape == (m,) or e.shape == (m, 1)):
            detail = f": {e.shape[0]} frames, but {pos_key!r} has {m}" if e.ndim in (1, 2) and len(e) != m else ""
            raise ValueError(
                f"{path}: key {names['energy']!r} (energy) has shape {e.shape}{detail}; expected ({m},) or ({m}, 1)"
            )
        energy = e.reshape(m).astype(np.float64)
    if names["forces"] in files:
        forces = per_frame(names["forces"], "forces", ((n, 3),), broadcast=False)
    if names["stress"] in files:
        stress = per_frame(names["stress"], "stress", ((3, 3), (6,), (9,)), broadcast=False)

    raw = _Raw(
        frame_ids=ids,
        keys={"positions": pos_key, "numbers": z_key, "cell": cell_key or "cell", **names},
        found={-1: found},
    )
    # select, check, convert once for all frames, then split into per-frame views (fast for 10⁵ frames)
    sel = np.asarray(ids, dtype=np.int64)
    keep = mask[sel]
    arrays = [("positions", pos_key, pos, True), ("cell", cell_key or "cell", cell, False)]
    arrays += [(q, names[q], a, q == "forces") for q, a in zip(_LABELS, (energy, forces, stress), strict=True)]
    for what, key, a, per_atom in arrays:
        if a is None:
            continue
        finite = np.isfinite(a[sel])
        if per_atom:  # padding atoms may hold anything
            finite |= ~keep[:, :, None]
        ok = finite.reshape(len(sel), -1).all(axis=1)
        if not ok.all():
            raise ValueError(f"{path}: key {key!r}: frame {ids[int(np.argmin(ok))]} has NaN or infinite {what}")
    split = (lambda a: list(a)) if keep.all() else (lambda a: [x[k] for x, k in zip(a, keep, strict=True)])
    raw.positions = split(np.asarray(pos[sel], dtype=np.float64))
    raw.numbers = split(np.asarray(z[sel]).astype(np.int64))
    raw.cell = list(np.asarray(cell[sel], dtype=np.float64))
    raw.pbc = list(np.asarray(pbc[sel], dtype=bool))
    raw.energy = [None] * len(sel) if energy is None else energy[sel].tolist()
    raw.forces = [None] * len(sel) if forces is None else split(np.asarray(forces[sel], dtype=np.float64))
    raw.stress = [None] * len(sel) if stress is None else list(_stress_batch(np.asarray(stress[sel], np.float64)))
    raw.unmasked_npz = "node_mask" not in files
    raw.finite_checked = True
    return raw


def _stress_batch(stress: np.ndarray) -> np.ndarray:
    """(K, 3, 3) from stresses (K, 3, 3), (K, 9) or Voigt (K, 6) (xx, yy, zz, yz, xz, xy)."""
    if stress.shape[1:] == (6,):
        xx, yy, zz, yz, xz, xy = stress.T
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]]).transpose(2, 0, 1)
    return stress.reshape(-1, 3, 3)


def _stress(value: object, path: Path, key: str, i: int) -> np.ndarray:
    try:
        return stress_3x3(value)
    except ValueError as err:
        raise ValueError(f"{path}: key {key!r}: frame {i}: {err}") from None


# --------------------------------------------------------------------------------------------- ASE


def _read_ase(path: Path, keys: dict[str, str | None], index: str | int | slice) -> _Raw:
    import ase.io
    from ase.io.formats import UnknownFileTypeError, filetype

    try:
        fmt = filetype(str(path))
    except Exception:  # noqa: BLE001 - let ase.io.read produce the error below
        fmt = None
    try:
        if fmt in ("db", "json"):
            images, ids = _read_ase_db(path, index)
        else:
            images = ase.io.read(str(path), index=_parse_index(index, path))
            images = images if isinstance(images, list) else [images]
            ids = _ase_ids(index, len(images), path)
    except UnknownFileTypeError as err:
        if str(err).startswith("Empty file"):  # also a gzip file that decompresses to nothing
            raise ValueError(f"{path}: empty dataset (the file is empty)") from None
        raise ValueError(
            f"{path}: unsupported format ({err}); use .npz (keys R/z/E/F or positions/atomic_numbers/energy/forces) "
            "or a format ase.io.read knows (extxyz, .xyz.gz, ASE .db, .traj, ...)"
        ) from None
    except StopIteration:
        images, ids = [], []
    except ValueError as err:
        if str(err).startswith(f"{path}: "):  # ours (bad frame index), already clear
            raise
        raise ValueError(f"{path}: cannot read{f' as {fmt}' if fmt else ''} (ValueError: {err})") from None
    except Exception as err:  # noqa: BLE001 - any parse failure means a bad file
        as_fmt = f" as {fmt}" if fmt else ""
        raise ValueError(f"{path}: cannot read{as_fmt} ({type(err).__name__}: {err})") from None

    raw = _Raw(frame_ids=ids)
    used = {q: keys[q] or q for q in _LABELS}
    for k, atoms in zip(ids, images, strict=True):
        results = dict(getattr(atoms.calc, "results", None) or {})
        info = dict(atoms.info)
        kvp, extra = info.pop("key_value_pairs", None) or {}, info.pop("data", None) or {}  # ASE db rows
        values: dict[str, object] = {}
        for q in _LABELS:
            store = {**extra, **kvp, **info} if q != "forces" else {**extra, **atoms.arrays}
            value = None
            if keys[q] is not None:
                value = store.get(keys[q], results.get(keys[q]))
            else:
                value = results.get(q)
                if value is None and q == "energy":
                    value = results.get("free_energy")
                for name in _FALLBACK_KEYS[q]:
                    if value is not None:
                        break
                    if name in store:
                        value, used[q] = store[name], name
            values[q] = value
        if any(v is None for v in values.values()):
            # remember what this frame has, so a "missing key" message can list it
            raw.found[k] = (
                f"info keys: {sorted({**kvp, **info})}, array keys: {sorted(atoms.arrays)}, "
                f"calculator results: {sorted(results)}" + (f", db data keys: {sorted(extra)}" if extra else "")
            )
            for q in _LABELS:
                if keys[q] is not None and values[q] is None:
                    raise ValueError(
                        f"{path}: key {keys[q]!r} ({q}, named by the user) missing in frame {k}; {raw.found[k]}"
                    )
        raw.positions.append(np.asarray(atoms.positions, dtype=np.float64))
        raw.numbers.append(np.asarray(atoms.numbers, dtype=np.int64))
        raw.cell.append(np.asarray(atoms.cell[:], dtype=np.float64))
        raw.pbc.append(np.asarray(atoms.pbc, dtype=bool))
        e = values["energy"]
        if e is not None:
            try:
                e_arr = np.asarray(e, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"{path}: key {used['energy']!r}: frame {k}: energy {e!r} is not a number") from None
            if e_arr.size != 1:
                raise ValueError(
                    f"{path}: key {used['energy']!r}: frame {k}: energy has shape {e_arr.shape}, expected a scalar"
                )
            e = float(e_arr.reshape(()))
        raw.energy.append(e)
        f = values["forces"]
        raw.forces.append(None if f is None else np.asarray(f, dtype=np.float64))
        s = values["stress"]
        raw.stress.append(None if s is None else _stress(s, path, used["stress"], k))
    raw.keys = {"positions": "positions", "numbers": "numbers", "cell": "cell", **used}
    return raw


def _read_ase_db(path: Path, index: str | int | slice) -> tuple[list, list[int]]:
    """Atoms of an ASE database with key-value pairs and data in ``info`` (ase.io.read drops them)."""
    import ase.db

    db = ase.db.connect(str(path))
    rows = list(db.select())
    ids = _select(len(rows), index, path)
    return [rows[i].toatoms(add_additional_information=True) for i in ids], ids


def _ase_ids(index: str | int | slice, count: int, path: Path) -> list[int]:
    """File frame numbers of ``count`` frames read with ``index`` (else positions in the selection)."""
    idx = _parse_index(index, path)
    if isinstance(idx, int) and idx >= 0:
        return [idx]
    if isinstance(idx, slice) and (idx.start or 0) >= 0 and (idx.step or 1) > 0:
        return [(idx.start or 0) + k * (idx.step or 1) for k in range(count)]
    return list(range(count))  # negative indices: the file length is unknown without reading it twice


# ------------------------------------------------------------------------------------- validation


def _finish(
    raw: _Raw, path: Path, ef: float, lf: float, length_unit: str, require_energy: bool, require_forces: bool
) -> Frames:
    """Validate, convert to eV/Å and build Frames."""
    m = len(raw.positions)
    if m == 0:
        raise ValueError(f"{path}: empty dataset (no frames in the file or in the selected index)")
    kp, kz = raw.keys["positions"], raw.keys["numbers"]
    ids = raw.frame_ids
    for k, i in enumerate(ids):
        p, z = raw.positions[k], raw.numbers[k]
        if p.ndim != 2 or p.shape[1] != 3 or z.shape != (len(p),):
            raise ValueError(
                f"{path}: keys {kp!r}/{kz!r}: frame {i}: positions {p.shape} do not match numbers {z.shape}"
            )
        if len(z) == 0:
            raise ValueError(f"{path}: key {kp!r}: frame {i} has no atoms")
        f = raw.forces[k]
        if f is not None and f.shape != p.shape:
            raise ValueError(
                f"{path}: key {raw.keys['forces']!r}: frame {i}: forces have shape {f.shape}, expected {p.shape} "
                "(one 3-vector per atom)"
            )

    for q, required in (("energy", require_energy), ("forces", require_forces)):
        have = [v is not None for v in getattr(raw, q)]
        if required and not all(have):
            first = ids[have.index(False)]
            raise ValueError(
                f"{path}: key {raw.keys[q]!r}: frame {first} has no {q} ({q} required in every frame); "
                f"{raw.found_at(first)}"
            )
    labels: dict[str, list | None] = {}
    for q in _LABELS:
        have = [v is not None for v in getattr(raw, q)]
        if any(have) and not all(have):
            first, other = ids[have.index(False)], ids[have.index(True)]
            raise ValueError(
                f"{path}: key {raw.keys[q]!r}: frame {first} has no {q} but frame {other} has: "
                f"a label must be in all frames or in none; {raw.found_at(first)}"
            )
        labels[q] = getattr(raw, q) if all(have) else None

    checks_nan = [("positions", kp, raw.positions), ("cell", raw.keys["cell"], raw.cell)]
    checks_nan += [(q, raw.keys[q], labels[q]) for q in _LABELS if labels[q] is not None]
    for what, key, values in checks_nan if not raw.finite_checked else []:
        k = _first_non_finite(values)
        if k is not None:
            raise ValueError(f"{path}: key {key!r}: frame {ids[k]} has NaN or infinite {what}")

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


def _first_non_finite(values: list) -> int | None:
    """Index of the first entry (float or array) holding NaN or ±inf, or None; one pass over all frames."""
    sizes = np.array([np.size(v) for v in values])
    flat = np.concatenate([np.ravel(v) for v in values]) if len(values) else np.zeros(0)
    bad = ~np.isfinite(flat)
    if not bad.any():
        return None
    return int(np.searchsorted(np.cumsum(sizes), int(np.argmax(bad)), side="right"))


def _scaled(arrays: list[np.ndarray], factor: float) -> list[np.ndarray]:
    return arrays if factor == 1.0 else [a * factor for a in arrays]


def _check_structures(
    path: Path, raw: _Raw, positions: list[np.ndarray], cell: np.ndarray, pbc: np.ndarray, length_unit: str
) -> None:
    """Atomic numbers in 1..118, non-degenerate periodic cells, no two atoms closer than 0.1 Å."""
    ids = raw.frame_ids
    bad_z = checks.first_bad_atomic_number(raw.numbers)
    if bad_z is not None:
        k, a, z = bad_z
        hint = ""
        if z == 0 and raw.unmasked_npz:
            hint = " (0 usually marks padding: add a boolean 'node_mask' (M, n) key that is False for padding atoms)"
        raise ValueError(
            f"{path}: key {raw.keys['numbers']!r}: frame {ids[k]}: atom {a} has atomic number {z}, "
            f"outside 1..{checks.MAX_ATOMIC_NUMBER}{hint}"
        )
    bad_cell = checks.first_degenerate_cell(cell, pbc)
    if bad_cell is not None:
        k, vol = bad_cell
        flags = "".join("T" if x else "F" for x in pbc[k])
        raise ValueError(
            f"{path}: key {raw.keys['cell']!r}: frame {ids[k]}: the frame is periodic (pbc={flags}) but its cell "
            f"has zero volume (|det| = {vol:.3g} Å³); give three linearly independent lattice vectors "
            "(for a slab or wire, a vacuum vector along each non-periodic direction), or mark the frame "
            "non-periodic"
        )
    close = checks.first_close_pair(positions, cell, pbc)
    if close is not None:
        k, i, j, d, shift = close
        z = raw.numbers[k]
        if i == j or shift.any():
            pair = f"atom {i} ({checks.symbol(z[i])}) and the periodic image of atom {j} ({checks.symbol(z[j])}) " + (
                f"in cell {shift.tolist()}"
            )
        else:
            pair = f"atoms {i} ({checks.symbol(z[i])}) and {j} ({checks.symbol(z[j])})"
        raise ValueError(
            f"{path}: key {raw.keys['positions']!r}: frame {ids[k]}: {pair} are {d:.3g} Å apart, closer than "
            f"{checks.MIN_DISTANCE} Å: overlapping atoms (a duplicated atom or corrupted structure? positions were "
            f"read as {length_unit}: is that the file's length unit?)"
        )
