"""MD output written as it runs: an extended-XYZ trajectory and a plain-text energy log.

Every write is flushed, so a run that is killed keeps every frame and log line it had written. Files are
opened with their first write: a run that fails before it (a bad structure, a model that does not load)
leaves no empty file behind, and an existing file given with ``--overwrite`` is kept until then.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO

import ase.io
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator


class TrajectoryWriter:
    """Writes frames (positions, momenta, energy, forces, and stress where the frame's calculator has it)
    to an extended-XYZ file, flushing each one; ``append=True`` adds them to an existing file."""

    def __init__(self, path: str | Path, append: bool = False) -> None:
        self.path = Path(path)
        self.append = append
        self._file: IO[str] | None = None  # opened with the first frame: a run that fails before it leaves no file
        self.frames = 0

    def write(self, atoms: Atoms, step: int | None = None, time_ps: float | None = None) -> None:
        frame = atoms.copy()  # a snapshot: the caller's atoms and calculator stay untouched
        if atoms.calc is not None:
            results = {k: atoms.calc.results[k] for k in ("energy", "forces", "stress") if k in atoms.calc.results}
            frame.calc = SinglePointCalculator(frame, **results)
        if step is not None:
            frame.info["step"] = int(step)
        if time_ps is not None:
            frame.info["time_ps"] = float(time_ps)
        # Render first, then one write: a kill lands between frames, not inside one.
        text = io.StringIO()
        ase.io.write(text, frame, format="extxyz")
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a" if self.append else "w")  # noqa: SIM115 (closed in close())
        self._file.write(text.getvalue())
        self._file.flush()
        self.frames += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EnergyLog:
    """Columns: step, time (ps), potential, kinetic and total energy (eV), temperature (K); flushed per line."""

    HEADER = f"# {'step':>10} {'time_ps':>12} {'epot_eV':>16} {'ekin_eV':>16} {'etot_eV':>16} {'temperature_K':>14}\n"

    def __init__(self, path: str | Path, append: bool = False) -> None:
        self.path = Path(path)
        self.append = append
        self._file: IO[str] | None = None  # opened with the first line, as the trajectory

    def _open(self) -> IO[str]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.append or not self.path.exists() or self.path.stat().st_size == 0
        file = open(self.path, "a" if self.append else "w")  # noqa: SIM115 (closed in close())
        if fresh:  # a new file gets the header; appended lines go under the existing one
            file.write(self.HEADER)
        return file

    def write(self, step: int, time_ps: float, epot: float, ekin: float, n_atoms: int) -> None:
        temperature = 2.0 * ekin / (3 * n_atoms * units.kB)
        if self._file is None:
            self._file = self._open()
        self._file.write(
            f"  {step:>10d} {time_ps:>12.6f} {epot:>16.8f} {ekin:>16.8f} {epot + ekin:>16.8f} {temperature:>14.3f}\n"
        )
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> EnergyLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_log(path: str | Path) -> dict[str, list[float]]:
    """The columns of an :class:`EnergyLog` file as lists, keyed by the header names."""
    names = EnergyLog.HEADER.lstrip("#").split()
    columns: dict[str, list[float]] = {name: [] for name in names}
    for line in Path(path).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        for name, value in zip(names, line.split(), strict=True):
            columns[name].append(float(value))
    return columns
