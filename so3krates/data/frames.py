"""A set of labelled structures of possibly different sizes, in eV and Å."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress


@dataclass
class Frames:
    """M structures (frames) with optional labels, all in eV and Å.

    Attributes:
        positions: M arrays (n_i, 3) float64, Å.
        numbers: M arrays (n_i,) int64 atomic numbers.
        energy: (M,) float64 total energies, eV, or None.
        forces: M arrays (n_i, 3) float64, eV/Å, or None.
        cell: (M, 3, 3) float64 lattice vectors as rows, Å; zeros for molecules.
        pbc: (M, 3) bool periodic directions.
        stress: (M, 3, 3) float64, eV/Å³ with the ASE sign convention, or None.
        source: where the frames came from (a path), for messages.
    """

    positions: list[np.ndarray]
    numbers: list[np.ndarray]
    energy: np.ndarray | None
    forces: list[np.ndarray] | None
    cell: np.ndarray
    pbc: np.ndarray
    stress: np.ndarray | None = None
    source: str = ""

    def __post_init__(self) -> None:
        """Normalise dtypes and check that shapes agree (not physics: :func:`read_frames` does that)."""
        m = len(self.positions)
        where = f"{self.source}: " if self.source else ""
        self.positions = [np.asarray(p, dtype=np.float64) for p in self.positions]
        self.numbers = [np.asarray(z, dtype=np.int64).reshape(-1) for z in self.numbers]
        if self.forces is not None:
            self.forces = [np.asarray(f, dtype=np.float64) for f in self.forces]
        if self.energy is not None:
            self.energy = np.asarray(self.energy, dtype=np.float64).reshape(-1)
        for name, value, shape in (
            ("cell", self.cell, (3, 3)),
            ("pbc", self.pbc, (3,)),
            ("stress", self.stress, (3, 3)),
        ):
            if value is not None and np.size(value) != m * int(np.prod(shape)):
                raise ValueError(f"{where}{m} frames but {name} has shape {np.shape(value)}, expected {(m, *shape)}")
        self.cell = np.asarray(self.cell, dtype=np.float64).reshape(m, 3, 3)
        self.pbc = np.asarray(self.pbc, dtype=bool).reshape(m, 3)
        if self.stress is not None:
            self.stress = np.asarray(self.stress, dtype=np.float64).reshape(m, 3, 3)
        for name, value in (("atomic-number", self.numbers), ("energy", self.energy), ("forces", self.forces)):
            if value is not None and len(value) != m:
                raise ValueError(f"{where}{m} frames but {len(value)} {name} entries")
        for i in range(m):
            p = self.positions[i]
            if p.ndim != 2 or p.shape[1] != 3:
                raise ValueError(f"{where}frame {i}: positions have shape {p.shape}, expected (n_atoms, 3)")
            n = len(p)
            if len(self.numbers[i]) != n:
                raise ValueError(f"{where}frame {i}: {n} positions but {len(self.numbers[i])} atomic numbers")
            if self.forces is not None and self.forces[i].shape != (n, 3):
                raise ValueError(f"{where}frame {i}: forces have shape {self.forces[i].shape}, expected {(n, 3)}")

    def __len__(self) -> int:
        """Number of frames M."""
        return len(self.positions)

    @property
    def n_atoms(self) -> np.ndarray:
        """(M,) int64 atoms per frame."""
        return np.array([len(z) for z in self.numbers], dtype=np.int64)

    @property
    def elements(self) -> list[int]:
        """Sorted unique atomic numbers over all frames."""
        if not self.numbers:
            return []
        return [int(z) for z in np.unique(np.concatenate(self.numbers))]

    def subset(self, indices: Sequence[int] | np.ndarray) -> Frames:
        """The frames at ``indices`` (any int sequence, order kept, repeats allowed), as new Frames."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        m = len(self)
        if len(idx) and (idx.min() < -m or idx.max() >= m):
            raise IndexError(f"{self.source}: frame indices must be in [-{m}, {m}), got {idx.min()}..{idx.max()}")
        return Frames(
            positions=[self.positions[i].copy() for i in idx],
            numbers=[self.numbers[i].copy() for i in idx],
            energy=None if self.energy is None else self.energy[idx].copy(),
            forces=None if self.forces is None else [self.forces[i].copy() for i in idx],
            cell=self.cell[idx].copy(),
            pbc=self.pbc[idx].copy(),
            stress=None if self.stress is None else self.stress[idx].copy(),
            source=self.source,
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Frames], source: str | None = None) -> Frames:
        """All frames of ``parts``, in order, as one Frames.

        A label (energy, forces, stress) is kept if every part has it; a part without a label
        that another part has is an error (silently dropping labels would change the training
        target). ``source`` defaults to the parts' sources joined with " + ".
        """
        parts = list(parts)
        if not parts:
            raise ValueError("concatenate needs at least one Frames")
        if source is None:
            source = " + ".join(dict.fromkeys(p.source for p in parts if p.source))
        kept: dict[str, bool] = {}
        for key in ("energy", "forces", "stress"):
            have = [getattr(p, key) is not None for p in parts]
            if any(have) and not all(have):
                k = have.index(False)
                raise ValueError(
                    f"cannot concatenate: part {k} ({parts[k].source or 'no source'}) has no {key} "
                    f"but part {have.index(True)} ({parts[have.index(True)].source or 'no source'}) has"
                )
            kept[key] = all(have)
        return cls(
            positions=[x for p in parts for x in p.positions],
            numbers=[x for p in parts for x in p.numbers],
            energy=np.concatenate([p.energy for p in parts]) if kept["energy"] else None,
            forces=[x for p in parts for x in p.forces] if kept["forces"] else None,
            cell=np.concatenate([p.cell for p in parts]),
            pbc=np.concatenate([p.pbc for p in parts]),
            stress=np.concatenate([p.stress for p in parts]) if kept["stress"] else None,
            source=source,
        )

    def to_atoms(self, i: int) -> Atoms:
        """Frame ``i`` as ``ase.Atoms`` with a SinglePointCalculator holding its energy/forces/stress."""
        atoms = Atoms(
            numbers=self.numbers[i].copy(),
            positions=self.positions[i].copy(),
            cell=self.cell[i].copy(),
            pbc=self.pbc[i],
        )
        results: dict[str, object] = {}
        if self.energy is not None:
            results["energy"] = float(self.energy[i])
        if self.forces is not None:
            results["forces"] = self.forces[i].copy()
        if self.stress is not None:
            results["stress"] = full_3x3_to_voigt_6_stress(self.stress[i])
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms

    @classmethod
    def from_atoms(cls, atoms_list: Sequence[Atoms], source: str = "") -> Frames:
        """Frames from ``ase.Atoms`` (eV, Å); labels from each calculator's results.

        A label (energy, forces, stress) is kept only when every frame has it; if some frames have it
        and others do not, a ValueError names the first frame without it.
        """
        labels = [_calc_labels(a) for a in atoms_list]
        return _frames_from_labelled(list(atoms_list), labels, source)


def _calc_labels(atoms: Atoms) -> dict[str, np.ndarray | float]:
    """energy / forces / stress (3, 3) from the calculator results of ``atoms`` (those present)."""
    out: dict[str, np.ndarray | float] = {}
    results = getattr(atoms.calc, "results", None) or {}
    if results.get("energy") is not None:
        out["energy"] = float(np.asarray(results["energy"]).reshape(-1)[0])
    elif results.get("free_energy") is not None:
        out["energy"] = float(np.asarray(results["free_energy"]).reshape(-1)[0])
    if results.get("forces") is not None:
        out["forces"] = np.asarray(results["forces"], dtype=np.float64)
    if results.get("stress") is not None:
        out["stress"] = stress_3x3(results["stress"])
    return out


def stress_3x3(stress: object) -> np.ndarray:
    """A stress as (3, 3): accepts (3, 3), (9,) or Voigt (6,) (xx, yy, zz, yz, xz, xy)."""
    s = np.asarray(stress, dtype=np.float64)
    if s.shape == (6,):
        return voigt_6_to_full_3x3_stress(s)
    if s.size == 9:
        return s.reshape(3, 3)
    raise ValueError(f"stress must have shape (3, 3), (9,) or Voigt (6,), got {s.shape}")


def _frames_from_labelled(atoms_list: list[Atoms], labels: list[dict[str, np.ndarray | float]], source: str) -> Frames:
    """Frames from atoms plus per-frame label dicts; a label is kept only if all frames have it."""
    where = f"{source}: " if source else ""
    kept: dict[str, list | None] = {}
    for key in ("energy", "forces", "stress"):
        have = [key in lab for lab in labels]
        if all(have) and have:
            kept[key] = [lab[key] for lab in labels]
        elif any(have):
            first = have.index(False)
            raise ValueError(
                f"{where}frame {first} has no {key!r} while frame {have.index(True)} has one: "
                "labels must be present in all frames or in none"
            )
        else:
            kept[key] = None
    m = len(atoms_list)
    return Frames(
        positions=[np.asarray(a.positions, dtype=np.float64) for a in atoms_list],
        numbers=[np.asarray(a.numbers, dtype=np.int64) for a in atoms_list],
        energy=None if kept["energy"] is None else np.asarray(kept["energy"], dtype=np.float64),
        forces=kept["forces"],
        cell=np.array([np.asarray(a.cell[:], dtype=np.float64) for a in atoms_list]).reshape(m, 3, 3),
        pbc=np.array([np.asarray(a.pbc, dtype=bool) for a in atoms_list]).reshape(m, 3),
        stress=None if kept["stress"] is None else np.asarray(kept["stress"], dtype=np.float64).reshape(m, 3, 3),
        source=source,
    )
