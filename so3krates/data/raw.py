"""Frames as a reader found them, before validation and unit conversion, and ASE-style frame selection."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LABELS = ("energy", "forces", "stress")


@dataclass
class RawFrames:
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
    zero_hint: str = ""  # said after "atomic number 0" (npz: how padding is marked)
    finite_checked: bool = False  # NaN/inf already checked on whole arrays (npz), skip the per-frame pass
    lines: dict[int, int] = field(default_factory=dict)  # frame number → line of its header (text formats)
    declared_units: dict[str, tuple[str, str]] = field(default_factory=dict)  # "energy" → (key, unit as written)

    def found_at(self, frame: int) -> str:
        """Description of the keys found (in ``frame`` where known), for messages."""
        return self.found.get(frame, self.found.get(-1, ""))

    def frame_labels(self) -> list[int]:
        """``frame_ids`` for messages: in a text file each prints as ``K (line L)``, its header line."""
        if not self.lines:
            return self.frame_ids
        return [FrameNumber(i, self.lines[i]) if i in self.lines else i for i in self.frame_ids]


class FrameNumber(int):
    """A frame number that prints with the line where the frame starts: ``3 (line 12)``."""

    line: int

    def __new__(cls, frame: int, line: int) -> FrameNumber:
        number = super().__new__(cls, frame)
        number.line = line
        return number

    def __str__(self) -> str:
        return f"{int(self)} (line {self.line})"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def parse_index(index: str | int | slice, path: Path) -> int | slice:
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


def select_frames(m: int, index: str | int | slice, path: Path) -> list[int]:
    """Frame numbers selected by an ASE-style ``index`` among ``m`` frames."""
    idx = parse_index(index, path)
    if isinstance(idx, slice):
        return list(range(m))[idx]
    if not -m <= idx < m:
        raise ValueError(f"{path}: frame index {idx} out of range: the file has {m} frames")
    return [idx % m]
