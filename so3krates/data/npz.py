"""Read npz data files: sGDML/MD17 (``R z E F``), the So3krates authors' mlff files (``R z E F unit_cell
pbc node_mask idx_i idx_j Q q``) and the generic ``positions atomic_numbers energy forces cell pbc stress``.

Every key of the file must be understood (:data:`KNOWN_KEYS`, or a label named by the user): a key this
reader does not know is refused, naming it, rather than dropped in silence. Arrays are checked and
selected as whole arrays (fast for 10⁵ frames), then split into per-frame views; units are converted and
physics checked afterwards, by :mod:`so3krates.data.readers`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from so3krates.data.raw import LABELS, RawFrames, select_frames
from so3krates.validation import check_finite

#: each quantity's key names, any one of them (two in one file are refused as ambiguous)
SYNONYMS: dict[str, tuple[str, ...]] = {
    "positions": ("R", "positions"),
    "atomic numbers": ("z", "atomic_numbers", "numbers"),
    "cell": ("cell", "lattice", "unit_cell"),
    "energy": ("E", "energy"),
    "forces": ("F", "forces"),
    "stress": ("stress",),
}
#: keys of the file's units (sGDML): free text such as 'kcal/mol', 'eV', 'Ang', 'bohr', 'au'
UNIT_KEYS: dict[str, str] = {"energy": "e_unit", "length": "r_unit"}
#: keys that are understood and deliberately not used, and why
IGNORED_KEYS: dict[str, str] = {
    "idx_i": "neighbour lists (mlff): rebuilt from the positions with the model's cutoff",
    "idx_j": "neighbour lists (mlff): rebuilt from the positions with the model's cutoff",
    "Q": "total charge per frame (mlff): no charge model, not used",
    "q": "partial charges (mlff): no charge model, not used",
    **dict.fromkeys(
        ("type", "code_version", "name", "theory", "md5", "perms", "F_min", "F_max", "F_mean", "F_var")
        + ("E_min", "E_max", "E_mean", "E_var"),
        "sGDML metadata, not used",
    ),
}
#: every key a file may hold without naming it as a label
KNOWN_KEYS: frozenset[str] = frozenset(
    {k for names in SYNONYMS.values() for k in names}
    | {"pbc", "node_mask"}
    | set(UNIT_KEYS.values())
    | set(IGNORED_KEYS)
)


@dataclass
class _Layout:
    """Key names of one npz file, and the shape (M, n, 3) of its positions."""

    files: list[str]
    pos_key: str
    z_key: str
    names: dict[str, str]  # label → key
    cell_key: str | None
    m: int = 0
    n: int = 0
    shape: tuple[int, ...] = ()

    @property
    def found(self) -> str:
        return f"keys found: {self.files}"


def read_npz(
    path: Path, keys: dict[str, str | None], index: str | int | slice, require_energy: bool, require_forces: bool
) -> RawFrames:
    """Frames of an npz file (see :func:`so3krates.data.read_frames` for the conventions)."""
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - any parse failure means a bad file
        raise ValueError(f"{path}: cannot read as npz ({type(err).__name__}: {err})") from None
    if not hasattr(data, "files"):  # np.load of a plain .npy renamed .npz gives an array
        raise ValueError(f"{path}: not an npz archive (a single array); expected named arrays such as 'R', 'z'")
    with data:
        try:
            raw = _parse_npz(data, path, keys, index, require_energy, require_forces)
            raw.declared_units = _declared_units(data, path)
            return raw
        except (OSError, EOFError) as err:  # a truncated archive fails only when a member is read
            raise ValueError(f"{path}: cannot read as npz ({type(err).__name__}: {err})") from None


def declared_units(path: str | Path) -> dict[str, tuple[str, str]]:
    """The units an npz file states (sGDML's ``e_unit``/``r_unit``): ``{"energy": ("e_unit", "kcal/mol")}``;
    empty for other files, and for files that cannot be read (reading them then says why)."""
    path = Path(path)
    if path.suffix.lower() != ".npz" or not path.is_file():
        return {}
    try:
        data = np.load(path, allow_pickle=False)
        files = data.files
    except Exception:  # noqa: BLE001 - a broken file is reported by the reader
        return {}
    with data:
        try:
            units = {kind: data[key] for kind, key in UNIT_KEYS.items() if key in files}
        except Exception:  # noqa: BLE001 - a truncated member too
            return {}
    return _unit_strings(units, path)


def _declared_units(data: np.lib.npyio.NpzFile, path: Path) -> dict[str, tuple[str, str]]:
    return _unit_strings({kind: data[key] for kind, key in UNIT_KEYS.items() if key in data.files}, path)


def _unit_strings(arrays: dict[str, np.ndarray], path: Path) -> dict[str, tuple[str, str]]:
    """``{"energy": ("e_unit", "kcal/mol")}`` from the unit keys' arrays; anything but one string raises."""
    out = {}
    for kind, array in arrays.items():
        key, value = UNIT_KEYS[kind], np.asarray(array)
        if value.size != 1 or value.dtype.kind not in "US":
            raise ValueError(f"{path}: key {key!r} ({kind} unit) must be one string such as 'eV', got {value!r}")
        text = value.reshape(()).item()
        out[kind] = (key, text.decode() if isinstance(text, bytes) else str(text))
    return out


def _understood() -> str:
    """The keys this reader understands, for the message refusing others."""
    roles = "; ".join(f"{what}: {', '.join(names)}" for what, names in SYNONYMS.items())
    ignored = ", ".join(sorted(IGNORED_KEYS, key=str.lower))
    return (
        f"understood keys: {roles}; pbc; node_mask; units: {', '.join(UNIT_KEYS.values())}; "
        f"read but not used: {ignored}"
    )


def _pick(files: list[str], path: Path, what: str, names: tuple[str, ...], hint: str = "") -> str | None:
    """The one key of ``names`` in the file (None if none); two of them are ambiguous."""
    present = [k for k in names if k in files]
    if len(present) > 1:
        raise ValueError(f"{path}: keys {present} all hold the {what}: keep one{hint}; keys found: {files}")
    return present[0] if present else None


def _layout(
    files: list[str], path: Path, keys: dict[str, str | None], require_energy: bool, require_forces: bool
) -> _Layout:
    """The key of every quantity; missing required keys, ambiguous and unknown keys raise."""
    found = f"keys found: {files}"
    pos_key = _pick(files, path, "positions", SYNONYMS["positions"])
    if pos_key is None:
        raise ValueError(
            f"{path}: missing required keys: expected 'R' and 'z' (sGDML/MD17 convention) or 'positions' and "
            f"'atomic_numbers'; {found}"
        )
    sgdml = pos_key == "R"
    z_key = _pick(files, path, "atomic numbers", SYNONYMS["atomic numbers"])
    if z_key is None:
        z_key = "z" if sgdml else "atomic_numbers"
        raise ValueError(f"{path}: missing required key {z_key!r} (atomic numbers, next to {pos_key!r}); {found}")
    names = {}
    for q in LABELS:
        flag = f" (or name the one to use with --{q}-key)"
        chosen = keys[q] or _pick(files, path, q, SYNONYMS[q], flag)
        names[q] = chosen or SYNONYMS[q][0 if sgdml else -1]
    for q, required in (("energy", require_energy), ("forces", require_forces), ("stress", False)):
        if names[q] not in files and (keys[q] is not None or required):
            why = "named by the user" if keys[q] is not None else "required"
            raise ValueError(f"{path}: missing key {names[q]!r} ({q}, {why}); {found}")
    unknown = sorted(k for k in files if k not in KNOWN_KEYS and k not in names.values())
    if unknown:
        raise ValueError(
            f"{path}: {'key' if len(unknown) == 1 else 'keys'} {unknown} not understood; a key that is not "
            f"understood is refused rather than dropped in silence ({_understood()}). A label under another "
            "name is read with --energy-key/--forces-key/--stress-key; otherwise remove the key from the file"
        )
    cell_key = _pick(files, path, "cell", SYNONYMS["cell"])
    return _Layout(files, pos_key, z_key, names, cell_key)


def _positions(data: np.lib.npyio.NpzFile, path: Path, layout: _Layout) -> np.ndarray:
    """The positions array as (M, n, 3) (a single (n, 3) structure gets M = 1); sets the layout's shape."""
    key = layout.pos_key
    pos = np.asarray(data[key])
    if pos.ndim == 2:  # a single structure
        pos = pos[None]
    if pos.ndim != 3 or pos.shape[2] != 3:
        raise ValueError(f"{path}: key {key!r} (positions) must have shape (M, n, 3), got {pos.shape}")
    if not np.issubdtype(pos.dtype, np.number):
        raise ValueError(f"{path}: key {key!r} (positions) must be numeric, got dtype {pos.dtype}")
    layout.m, layout.n = pos.shape[:2]
    layout.shape = pos.shape
    if layout.m == 0 or layout.n == 0:
        raise ValueError(f"{path}: empty dataset: key {key!r} has shape {pos.shape}; {layout.found}")
    return pos


def _per_frame(
    data: np.lib.npyio.NpzFile,
    path: Path,
    layout: _Layout,
    key: str,
    what: str,
    tails: tuple[tuple[int, ...], ...],
    broadcast: bool = True,
) -> np.ndarray:
    """data[key] as (M, *tail) for an accepted tail; a single (*tail) is broadcast if allowed."""
    m, n, pos_key = layout.m, layout.n, layout.pos_key
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
        f"to match {pos_key!r} {layout.shape}"
    )


def _structure(
    data: np.lib.npyio.NpzFile, path: Path, layout: _Layout
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(atomic numbers (M, n), padding mask (M, n), cell (M, 3, 3), pbc (M, 3)) of every frame."""
    m, n, files = layout.m, layout.n, layout.files
    z = _per_frame(data, path, layout, layout.z_key, "atomic numbers", ((n,),))
    if not np.issubdtype(z.dtype, np.integer):
        zf = np.asarray(z, dtype=np.float64)
        bad = ~np.isfinite(zf) | (zf != np.round(zf))
        if bad.any():
            k = int(np.argmax(bad.reshape(m, -1).any(axis=1)))
            raise ValueError(f"{path}: key {layout.z_key!r}: frame {k}: atomic numbers must be integers, got {z[k]}")
    if "node_mask" in files:
        mask = _per_frame(data, path, layout, "node_mask", "padding mask", ((n,),)).astype(bool)
    else:  # Z = 0 after a frame's last real atom is padding (mlff's files of molecules of several sizes)
        real = np.asarray(z) != 0
        mask = np.logical_or.accumulate(real[:, ::-1], axis=1)[:, ::-1]
    if layout.cell_key is not None:
        cell = _per_frame(data, path, layout, layout.cell_key, "lattice vectors", ((3, 3), (9,))).reshape(m, 3, 3)
    else:
        cell = np.zeros((m, 3, 3))
    if "pbc" in files:
        raw_pbc = np.asarray(data["pbc"])
        if raw_pbc.ndim == 0:
            pbc = np.full((m, 3), bool(raw_pbc))
        else:
            pbc = _per_frame(data, path, layout, "pbc", "periodic directions", ((3,),))
        pbc = pbc.astype(bool)
    else:
        pbc = np.linalg.norm(cell, axis=2) > 0
    return z, mask, cell, pbc


def _labels(data: np.lib.npyio.NpzFile, path: Path, layout: _Layout) -> dict[str, np.ndarray | None]:
    """Energy (M,), forces (M, n, 3) and stress (M, 3, 3) / (M, 9) / (M, 6) where the file has them."""
    m, names, files = layout.m, layout.names, layout.files
    out: dict[str, np.ndarray | None] = dict.fromkeys(LABELS)
    if names["energy"] in files:
        e = np.asarray(data[names["energy"]])
        if not (e.shape == (m,) or e.shape == (m, 1)):
            detail = ""
            if e.ndim in (1, 2) and len(e) != m:
                detail = f": {e.shape[0]} frames, but {layout.pos_key!r} has {m}"
            raise ValueError(
                f"{path}: key {names['energy']!r} (energy) has shape {e.shape}{detail}; expected ({m},) or ({m}, 1)"
            )
        out["energy"] = e.reshape(m).astype(np.float64)
    if names["forces"] in files:
        out["forces"] = _per_frame(data, path, layout, names["forces"], "forces", ((layout.n, 3),), broadcast=False)
    if names["stress"] in files:
        out["stress"] = _per_frame(data, path, layout, names["stress"], "stress", ((3, 3), (6,), (9,)), False)
    return out


def _parse_npz(
    data: np.lib.npyio.NpzFile,
    path: Path,
    keys: dict[str, str | None],
    index: str | int | slice,
    require_energy: bool,
    require_forces: bool,
) -> RawFrames:
    layout = _layout(list(data.files), path, keys, require_energy, require_forces)
    pos = _positions(data, path, layout)
    ids = select_frames(layout.m, index, path)
    if not ids:
        raise ValueError(f"{path}: empty dataset: frame index {index!r} selects none of the {layout.m} frames")
    z, mask, cell, pbc = _structure(data, path, layout)
    labels = _labels(data, path, layout)
    names = layout.names
    raw = RawFrames(
        frame_ids=ids,
        keys={"positions": layout.pos_key, "numbers": layout.z_key, "cell": layout.cell_key or "cell", **names},
        found={-1: layout.found},
    )
    # select, check, convert once for all frames, then split into per-frame views (fast for 10⁵ frames)
    sel = np.asarray(ids, dtype=np.int64)
    keep = mask[sel]
    arrays = [("positions", layout.pos_key, pos, True), ("cell", layout.cell_key or "cell", cell, False)]
    arrays += [(q, names[q], labels[q], q == "forces") for q in LABELS]
    for what, key, a, per_atom in arrays:
        if a is None:
            continue
        finite = np.isfinite(a[sel])
        if per_atom:  # padding atoms may hold anything
            finite |= ~keep[:, :, None]
        ok = finite.reshape(len(sel), -1).all(axis=1)
        check_finite(np.where(ok, 0.0, np.nan), what, f"{path}: key {key!r}", ids)  # names the first bad frame
    split = (lambda a: list(a)) if keep.all() else (lambda a: [x[k] for x, k in zip(a, keep, strict=True)])
    energy, forces, stress = (labels[q] for q in LABELS)
    raw.positions = split(np.asarray(pos[sel], dtype=np.float64))
    raw.numbers = split(np.asarray(z[sel]).astype(np.int64))
    raw.cell = list(np.asarray(cell[sel], dtype=np.float64))
    raw.pbc = list(np.asarray(pbc[sel], dtype=bool))
    raw.energy = [None] * len(sel) if energy is None else energy[sel].tolist()
    raw.forces = [None] * len(sel) if forces is None else split(np.asarray(forces[sel], dtype=np.float64))
    raw.stress = [None] * len(sel) if stress is None else list(_stress_batch(np.asarray(stress[sel], np.float64)))
    raw.zero_hint = (
        " (node_mask marks it as a real atom)"
        if "node_mask" in layout.files
        else " (Z = 0 marks padding only after a frame's last real atom; or add a boolean 'node_mask' (M, n) "
        "key that is False for padding atoms)"
    )
    raw.finite_checked = True
    return raw


def _stress_batch(stress: np.ndarray) -> np.ndarray:
    """(K, 3, 3) from stresses (K, 3, 3), (K, 9) or Voigt (K, 6) (xx, yy, zz, yz, xz, xy)."""
    if stress.shape[1:] == (6,):
        xx, yy, zz, yz, xz, xy = stress.T
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]]).transpose(2, 0, 1)
    return stress.reshape(-1, 3, 3)
