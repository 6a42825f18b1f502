"""Read labelled structures from npz (two conventions) and every format ``ase.io.read`` knows.

Everything is converted once, on load, to eV and Å, and validated: a bad file raises a ``ValueError``
(``FileNotFoundError`` for a missing file) whose message names the file, the key and the frame.

npz conventions:

* sGDML / MD17: ``R`` (M, n, 3), ``z`` (n,) or (M, n), ``E`` (M,) or (M, 1), ``F`` (M, n, 3).
* generic: ``positions`` (M, n, 3), ``atomic_numbers`` (M, n) or (n,), ``energy`` (M,) or (M, 1),
  ``forces`` (M, n, 3), optional ``cell`` (M, 3, 3) or (3, 3), ``pbc`` (M, 3) or (3,), ``stress``
  (M, 3, 3) or Voigt (M, 6), and ``node_mask`` (M, n) bool for padded frames (padding atoms are dropped).
  Without ``pbc``, a direction is periodic where its cell vector is non-zero.

ASE formats (extxyz, also gzipped, ASE db, traj, ...): labels come from the calculator results, or,
when ``energy_key``/``forces_key``/``stress_key`` are given, from ``atoms.info`` / ``atoms.arrays``
under that name; with no key given and no calculator results, ``energy``/``REF_energy``,
``forces``/``REF_forces`` and ``stress``/``REF_stress`` are tried.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from so3krates.data.frames import Frames, stress_3x3
from so3krates.data.units import energy_factor, length_factor

_FALLBACK_KEYS = {
    "energy": ("energy", "REF_energy"),
    "forces": ("forces", "REF_forces"),
    "stress": ("stress", "REF_stress"),
}


@dataclass
class _Raw:
    """Frames as read, before validation and unit conversion; per-frame labels may be None."""

    positions: list[np.ndarray]
    numbers: list[np.ndarray]
    cell: list[np.ndarray]
    pbc: list[np.ndarray]
    energy: list[float | None]
    forces: list[np.ndarray | None]
    stress: list[np.ndarray | None]
    frame_ids: list[int]
    keys: dict[str, str] = field(default_factory=dict)  # quantity → key name in the file, for messages
    found: str = ""  # description of the keys found, for messages


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
        energy_unit: unit of energies in the file (see ``so3krates.data.units``); forces are in
            energy_unit/length_unit and stress in energy_unit/length_unit³.
        length_unit: unit of positions and cell in the file.
        energy_key, forces_key, stress_key: names of the labels in the file (npz key, or
            ``atoms.info``/``atoms.arrays`` key); None = the convention's default.
        require_energy, require_forces: raise if any frame lacks the label.
        index: frames to read, ASE syntax (``":"``, ``"-10:"``, ``3``, a ``slice``).
    Returns:
        Frames in eV and Å; ``energy``/``forces``/``stress`` are None when the file has none.
    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: unknown unit, unsupported format, missing or misshapen keys, non-finite values,
            empty selection, missing required labels, or a structure that fails
            ``so3krates.graph.check_structure`` (overlapping atoms, bad Z, zero-volume cell).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such data file")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, not a data file")
    ef, lf = energy_factor(energy_unit), length_factor(length_unit)
    keys = {"energy": energy_key, "forces": forces_key, "stress": stress_key}
    if path.suffix.lower() == ".npz":
        raw = _read_npz(path, keys, index, require_energy, require_forces)
    else:
        raw = _read_ase(path, keys, index)
    return _finish(raw, path, ef, lf, require_energy, require_forces)


# --------------------------------------------------------------------------------------------- npz


def _select(m: int, index: str | int | slice, path: Path) -> list[int]:
    """Frame indices selected by an ASE-style ``index`` among ``m`` frames."""
    if isinstance(index, str):
        from ase.io.formats import string2index

        try:
            index = string2index(index)
        except ValueError as err:
            raise ValueError(f"{path}: bad frame index {index!r}: {err}") from None
    ids = list(range(m))
    if isinstance(index, slice):
        return ids[index]
    try:
        return [ids[int(index)]]
    except IndexError:
        raise ValueError(f"{path}: frame index {index} out of range for {m} frames") from None


def _read_npz(
    path: Path, keys: dict[str, str | None], index: str | int | slice, require_energy: bool, require_forces: bool
) -> _Raw:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - any parse failure is a bad file
        raise ValueError(f"{path}: cannot read as npz: {err}") from None
    with data:
        files = list(data.files)
        found = f"keys found: {files}"
        if "R" in files:
            pos_key, z_key, defaults = "R", "z", {"energy": "E", "forces": "F", "stress": "stress"}
        elif "positions" in files:
            z_key = "atomic_numbers" if "atomic_numbers" in files else "numbers"
            pos_key, defaults = "positions", {"energy": "energy", "forces": "forces", "stress": "stress"}
        else:
            raise ValueError(
                f"{path}: missing required keys: need 'R' and 'z' (sGDML/MD17) or 'positions' and "
                f"'atomic_numbers'; {found}"
            )
        if z_key not in files:
            raise ValueError(f"{path}: missing required key {z_key!r} (atomic numbers); {found}")
        names = {q: keys[q] or defaults[q] for q in defaults}
        for q, required in (("energy", require_energy), ("forces", require_forces), ("stress", False)):
            if names[q] not in files and (keys[q] is not None or required):
                raise ValueError(f"{path}: missing required key {names[q]!r} ({q}); {found}")

        pos = np.asarray(data[pos_key])
        if pos.ndim == 2:
            pos = pos[None]
        if pos.ndim != 3 or pos.shape[2] != 3:
            raise ValueError(f"{path}: key {pos_key!r} must have shape (M, n, 3), got {pos.shape}")
        m, n = pos.shape[:2]
        if m == 0:
            raise ValueError(f"{path}: empty dataset (key {pos_key!r} has shape {pos.shape}); {found}")
        ids = _select(m, index, path)

        def per_frame(key: str, tail: tuple[int, ...], alt: tuple[tuple[int, ...], ...] = ()) -> np.ndarray:
            """data[key] as (M, *tail); a single (tail,) array is broadcast; ``alt`` are other accepted tails."""
            a = np.asarray(data[key])
            for t in (tail, *alt):
                if a.shape == (m, *t):
                    return a
            for t in (tail, *alt):
                if a.shape == t and m >= 1:
                    return np.broadcast_to(a, (m, *t))
            shapes = " or ".join(str((m, *t)) for t in (tail, *alt))
            raise ValueError(
                f"{path}: key {key!r} has shape {a.shape}, expected {shapes} to match {pos_key!r} {pos.shape}"
            )

        z = per_frame(z_key, (n,))
        if not np.issubdtype(z.dtype, np.integer):
            if not np.isfinite(z).all() or not np.all(np.asarray(z) == np.round(z)):
                raise ValueError(f"{path}: key {z_key!r} must hold integer atomic numbers")
        mask = per_frame("node_mask", (n,)).astype(bool) if "node_mask" in files else np.ones((m, n), dtype=bool)
        if "cell" in files:
            cell = per_frame("cell", (3, 3), ((9,),)).reshape(m, 3, 3)
        else:
            cell = np.zeros((m, 3, 3))
        if "pbc" in files:
            pbc = per_frame("pbc", (3,)).astype(bool) if np.ndim(data["pbc"]) else np.full((m, 3), bool(data["pbc"]))
        else:
            pbc = np.linalg.norm(cell, axis=2) > 0
        energy = forces = stress = None
        if names["energy"] in files:
            e = np.asarray(data[names["energy"]])
            if e.size != m or e.ndim > 2:
                raise ValueError(f"{path}: key {names['energy']!r} has shape {e.shape}, expected ({m},) or ({m}, 1)")
            energy = e.reshape(m).astype(np.float64)
        if names["forces"] in files:
            forces = per_frame(names["forces"], (n, 3))
            if forces.shape != pos.shape:
                raise ValueError(f"{path}: key {names['forces']!r} has shape {forces.shape}, expected {pos.shape}")
        if names["stress"] in files:
            stress = per_frame(names["stress"], (3, 3), ((6,), (9,)))

        raw = _Raw([], [], [], [], [], [], [], ids, keys={"positions": pos_key, "numbers": z_key, **names}, found=found)
        for i in ids:
            keep = mask[i]
            raw.positions.append(np.asarray(pos[i][keep], dtype=np.float64))
            raw.numbers.append(np.asarray(z[i][keep]).astype(np.int64))
            raw.cell.append(np.asarray(cell[i], dtype=np.float64))
            raw.pbc.append(np.asarray(pbc[i], dtype=bool))
            raw.energy.append(None if energy is None else float(energy[i]))
            raw.forces.append(None if forces is None else np.asarray(forces[i][keep], dtype=np.float64))
            raw.stress.append(None if stress is None else _stress(stress[i], path, names["stress"], i))
        return raw


def _stress(value: object, path: Path, key: str, i: int) -> np.ndarray:
    try:
        return stress_3x3(value)
    except ValueError as err:
        raise ValueError(f"{path}: key {key!r}: frame {i}: {err}") from None


# --------------------------------------------------------------------------------------------- ASE


def _read_ase(path: Path, keys: dict[str, str | None], index: str | int | slice) -> _Raw:
    import ase.io
    from ase.io.formats import UnknownFileTypeError

    try:
        images = ase.io.read(str(path), index=index)
    except UnknownFileTypeError as err:
        raise ValueError(f"{path}: unsupported format ({err}); use .npz or a format ase.io.read knows") from None
    except StopIteration:
        images = []
    except Exception as err:  # noqa: BLE001 - any parse failure is a bad file
        raise ValueError(f"{path}: cannot read ({type(err).__name__}: {err})") from None
    if not isinstance(images, list):
        images = [images]
    ids = _ase_ids(index, len(images))
    raw = _Raw([], [], [], [], [], [], [], ids)
    used = {q: keys[q] or q for q in ("energy", "forces", "stress")}
    for k, atoms in zip(ids, images, strict=True):
        results = dict(getattr(atoms.calc, "results", None) or {})
        found = (
            f"info keys: {sorted(atoms.info)}, array keys: {sorted(atoms.arrays)}, "
            f"calculator results: {sorted(results)}"
        )
        values = {}
        for q in ("energy", "forces", "stress"):
            store = atoms.arrays if q == "forces" else atoms.info
            value = None
            if keys[q] is not None:
                name = keys[q]
                value = store.get(name, results.get(name))
                if value is None:
                    raise ValueError(f"{path}: key {name!r} ({q}) missing in frame {k}; {found}")
            else:
                value = results.get(q)
                if value is None and q == "energy":
                    value = results.get("free_energy")
                if value is None:
                    for name in _FALLBACK_KEYS[q]:
                        if name in store:
                            value, used[q] = store[name], name
                            break
            values[q] = value
        raw.found = found
        raw.positions.append(np.asarray(atoms.positions, dtype=np.float64))
        raw.numbers.append(np.asarray(atoms.numbers, dtype=np.int64))
        raw.cell.append(np.asarray(atoms.cell[:], dtype=np.float64))
        raw.pbc.append(np.asarray(atoms.pbc, dtype=bool))
        e = values["energy"]
        if e is not None:
            e_arr = np.asarray(e, dtype=np.float64)
            if e_arr.size != 1:
                raise ValueError(
                    f"{path}: key {used['energy']!r}: frame {k}: energy has shape {e_arr.shape}, expected a scalar"
                )
            e = float(e_arr.reshape(()))
        raw.energy.append(e)
        raw.forces.append(None if values["forces"] is None else np.asarray(values["forces"], dtype=np.float64))
        raw.stress.append(None if values["stress"] is None else _stress(values["stress"], path, used["stress"], k))
    raw.keys = {"positions": "positions", "numbers": "numbers", **used}
    return raw


def _ase_ids(index: str | int | slice, count: int) -> list[int]:
    """File frame numbers of ``count`` frames read with ``index`` (else positions in the selection)."""
    from ase.io.formats import string2index

    try:
        idx = string2index(index) if isinstance(index, str) else index
    except ValueError:
        return list(range(count))
    if isinstance(idx, int) and idx >= 0:
        return [idx]
    if isinstance(idx, slice) and (idx.start or 0) >= 0 and (idx.step or 1) > 0:
        return [(idx.start or 0) + k * (idx.step or 1) for k in range(count)]
    return list(range(count))


# ------------------------------------------------------------------------------------- validation


def _finish(raw: _Raw, path: Path, ef: float, lf: float, require_energy: bool, require_forces: bool) -> Frames:
    """Validate, convert to eV/Å and build Frames."""
    m = len(raw.positions)
    if m == 0:
        raise ValueError(f"{path}: empty dataset (no frames selected); {raw.found}".rstrip("; "))
    kp, kz = raw.keys.get("positions", "positions"), raw.keys.get("numbers", "numbers")
    for k, i in enumerate(raw.frame_ids):
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
                f"{path}: key {raw.keys['forces']!r}: frame {i}: forces have shape {f.shape}, expected {p.shape}"
            )

    labels: dict[str, list | None] = {}
    for q, required in (("energy", require_energy), ("forces", require_forces)):
        have = [v is not None for v in getattr(raw, q)]
        if required and not all(have):
            first = raw.frame_ids[have.index(False)]
            raise ValueError(f"{path}: key {raw.keys.get(q, q)!r}: frame {first} has no {q} (required); {raw.found}")
    for q in ("energy", "forces", "stress"):
        values = getattr(raw, q)
        have = [v is not None for v in values]
        key = raw.keys.get(q, q)
        if not all(have):
            first = raw.frame_ids[have.index(False)]
            if any(have):
                other = raw.frame_ids[have.index(True)]
                raise ValueError(
                    f"{path}: key {key!r}: frame {first} has no {q} but frame {other} has: "
                    "labels must be in all frames or in none"
                )
        labels[q] = values if all(have) else None

    checks = [("positions", kp, raw.positions), ("cell", "cell", raw.cell)]
    checks += [(q, raw.keys.get(q, q), labels[q]) for q in ("energy", "forces", "stress") if labels[q] is not None]
    for what, key, values in checks:
        for k, v in enumerate(values):
            if not np.isfinite(v).all():
                raise ValueError(f"{path}: key {key!r}: frame {raw.frame_ids[k]} has NaN or infinite {what}")

    from so3krates.graph import check_structure

    positions = [p * lf for p in raw.positions]
    cell = np.array(raw.cell, dtype=np.float64).reshape(m, 3, 3) * lf
    pbc = np.array(raw.pbc, dtype=bool).reshape(m, 3)
    suspect = _suspect_frames(positions, raw.numbers, pbc)
    for k, i in enumerate(raw.frame_ids):
        if suspect[k]:
            check_structure(positions[k], raw.numbers[k], cell[k], pbc[k], where=f"{path}: frame {i}")
    return Frames(
        positions=positions,
        numbers=raw.numbers,
        energy=None if labels["energy"] is None else np.array(labels["energy"], dtype=np.float64) * ef,
        forces=None if labels["forces"] is None else [f * (ef / lf) for f in labels["forces"]],
        cell=cell,
        pbc=pbc,
        stress=None if labels["stress"] is None else np.array(labels["stress"]).reshape(m, 3, 3) * (ef / lf**3),
        source=str(path),
    )


_MAX_DENSE_ATOMS = 2000  # molecules up to this size are pre-checked with dense distance matrices


def _suspect_frames(positions: list[np.ndarray], numbers: list[np.ndarray], pbc: np.ndarray) -> np.ndarray:
    """(M,) bool: frames that ``check_structure`` must look at (vectorised pre-check, same criteria).

    Periodic and very large frames are always suspect; molecules are suspect only if some atomic
    number is outside 1..118 or two atoms are closer than ``MIN_DISTANCE`` (then ``check_structure``
    raises with its message). Saves one neighbour-list call per frame on large molecular datasets.
    """
    from so3krates.graph import MAX_ATOMIC_NUMBER, MIN_DISTANCE

    m = len(positions)
    suspect = np.ones(m, dtype=bool)
    sizes = np.array([len(z) for z in numbers])
    molecular = ~pbc.any(axis=1) & (sizes <= _MAX_DENSE_ATOMS)
    for n in np.unique(sizes[molecular]):
        idx = np.flatnonzero(molecular & (sizes == n))
        chunk = max(1, 2_000_000 // max(1, int(n) * int(n)))
        for start in range(0, len(idx), chunk):
            sel = idx[start : start + chunk]
            z = np.stack([numbers[k] for k in sel])
            p = np.stack([positions[k] for k in sel])
            d2 = np.sum((p[:, :, None, :] - p[:, None, :, :]) ** 2, axis=-1)
            d2[:, np.arange(n), np.arange(n)] = np.inf
            close = d2.reshape(len(sel), -1).min(axis=1) < MIN_DISTANCE**2 if n > 1 else np.zeros(len(sel), bool)
            bad_z = ((z < 1) | (z > MAX_ATOMIC_NUMBER)).any(axis=1)
            suspect[sel] = close | bad_z
    return suspect
