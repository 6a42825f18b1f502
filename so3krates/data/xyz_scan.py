"""Where an (extended) XYZ file goes wrong: the frame and line of a bad count line, a truncated frame, a
wrong number of columns, a value that is not a number, or a blank line after which ASE stops reading.

ASE's reader says only what failed ("could not convert string to float: '1.2.3'"), or, at a blank line
between frames, stops without a word and returns the frames before it. :func:`scan` walks the file the
way the format is laid out (a count line, a comment line, that many atom lines, per frame) and names
the first problem as ``frame K (line L): ...`` (K from 0, L from 1). Reading a valid file costs one pass
over its lines, small beside ASE's own parse.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

_PROPERTIES = re.compile(r"""Properties=["']?([^\s"']+)""", re.IGNORECASE)
_LOGICAL = {"t", "f", "true", "false"}


@dataclass
class Scan:
    """What a pass over an XYZ file found: the line of each frame's count line, and the first problem."""

    headers: list[int] = field(default_factory=list)
    problem: str | None = None


def _columns(comment: str) -> list[tuple[str, str]] | None:
    """(name, type) of every column from the comment's ``Properties=``; None when there is none (or it is
    malformed: ASE's own message is then the better one)."""
    match = _PROPERTIES.search(comment)
    if match is None:
        return None
    parts = match.group(1).split(":")
    if len(parts) % 3:
        return None
    out = []
    for name, kind, count in zip(parts[::3], parts[1::3], parts[2::3], strict=True):
        if not count.isdigit() or kind.upper() not in "SRIL":
            return None
        out += [(name, kind.upper())] * int(count)
    return out


def _value_problem(value: str, kind: str) -> bool:
    try:
        if kind == "R":
            float(value)
        elif kind == "I":
            int(value)
        elif kind == "L":
            return value.lower() not in _LOGICAL
    except ValueError:
        return True
    return False


def _atom_problem(line: str, columns: list[tuple[str, str]] | None, a: int, n: int) -> str | None:
    """What is wrong with atom line ``a`` of a frame of ``n`` atoms (None: nothing found)."""
    values = line.split()
    if columns is None:
        if len(values) < 4:
            return f"atom {a} has {len(values)} columns, expected at least 4 (symbol x y z)"
        columns = [("species", "S")] + [("pos", "R")] * 3 + [("", "S")] * (len(values) - 4)
    if len(values) != len(columns):
        short = f" (fewer atom lines than the count line's {n}?)" if len(values) <= 2 else ""
        return f"atom {a} has {len(values)} columns, but Properties= describes {len(columns)}{short}"
    for c, (value, (name, kind)) in enumerate(zip(values, columns, strict=True)):
        if _value_problem(value, kind):
            what = {"R": "a number", "I": "an integer", "L": "T or F"}[kind]
            return f"atom {a}: column {c + 1} ({name}) is {value!r}, not {what}"
    return None


def scan(lines: io.TextIOBase | list[str], detailed: bool = False) -> Scan:
    """Walk the frames of an XYZ text; ``detailed`` also checks every atom line's columns and numbers."""
    result, it, lineno = Scan(), iter(lines), 0
    while True:
        line = next(it, None)
        lineno += 1
        if line is None:
            return result
        k = len(result.headers)
        if not line.strip():
            for rest in it:  # a blank line: only blank lines may follow
                lineno += 1
                if rest.strip():
                    result.problem = (
                        f"frame {k} (line {lineno}): frame {k} follows a blank line; ASE stops reading at a blank "
                        f"line, so this frame and every one after it would be lost: remove the blank line"
                    )
                    return result
            return result
        try:
            n = int(line)
        except ValueError:
            result.problem = f"frame {k} (line {lineno}): expected the number of atoms, got {line.strip()[:60]!r}"
            return result
        if n < 0:
            result.problem = f"frame {k} (line {lineno}): negative number of atoms {n}"
            return result
        result.headers.append(lineno)
        header, comment = lineno, next(it, None)
        lineno += 1
        columns = _columns(comment or "") if detailed else None
        for a in range(n + (comment is None)):
            atom = None if comment is None else next(it, None)
            if atom is None:
                got = 0 if comment is None else a
                result.problem = (
                    f"frame {k} (line {header}): the count line says {n} atoms but the file ends after {got} atom "
                    "lines (a truncated file?)"
                )
                return result
            lineno += 1
            if detailed and (problem := _atom_problem(atom, columns, a, n)):
                result.problem = f"frame {k} (line {lineno}): {problem}"
                return result


def open_text(path: Path) -> io.TextIOBase:
    """The file as text, decompressed by its suffix (.gz, .bz2, .xz) as ASE does."""
    from ase.io.formats import open_with_compression

    return open_with_compression(str(path), "r")


def scan_file(path: Path, detailed: bool = False) -> Scan:
    """:func:`scan` of a file; an unreadable file gives an empty scan (the caller reports ASE's error)."""
    try:
        with open_text(path) as f:
            return scan(f, detailed)
    except (OSError, UnicodeDecodeError, EOFError):
        return Scan()


def locate_failure(path: Path) -> str | None:
    """``frame K (line L): ...`` for a file ASE failed to read: a structural problem, else the first frame
    ASE cannot parse on its own (with ASE's message); None if neither is found."""
    found = scan_file(path, detailed=True)
    if found.problem is not None:
        return found.problem
    import ase.io

    try:
        with open_text(path) as f:
            lines = f.readlines()
    except (OSError, UnicodeDecodeError, EOFError):
        return None
    starts = [h - 1 for h in found.headers] + [len(lines)]
    for k in range(len(found.headers)):
        text = "".join(lines[starts[k] : starts[k + 1]])
        try:
            ase.io.read(io.StringIO(text), format="extxyz")
        except Exception as err:  # noqa: BLE001 - any failure of this frame is the one to report
            return f"frame {k} (line {found.headers[k]}): {type(err).__name__}: {err}"
    return None
