"""Values of configuration options: integers, booleans, frame counts, degree lists and durations.

The ``count``, ``duration``, ``degrees`` and ``layers`` functions are argparse types too (argparse names
them in its messages: "invalid count value: 'x'").
"""

from __future__ import annotations

import re
from typing import Any


def to_int(value: Any) -> int:
    """An integer from ``3``, ``3.0`` or ``"3"`` (not from True or 2.5)."""
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("expected an integer")
        return int(value)
    return int(str(value).strip())


def to_bool(value: Any) -> bool:
    """True/False from a bool, 0/1 or yes/no/true/false/on/off."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def parse_count(value: Any) -> int | float:
    """A frame count or a fraction, as the data layer's ``make_split`` takes them.

    ``"1000"`` → 1000 frames, ``"0.8"`` → fraction 0.8, ``"1.0"`` → fraction 1.0 (all frames);
    integral floats above 1 (``1e3`` in YAML) are counts.
    """
    if isinstance(value, bool):
        raise ValueError("expected a frame count or a fraction")
    if isinstance(value, int):
        return value
    if not isinstance(value, float):
        text = str(value).strip()
        value = int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
        if isinstance(value, int):
            return value
    if value > 1:
        if value.is_integer():
            return int(value)
        raise ValueError(f"{value} is neither a frame count (integer) nor a fraction (≤ 1)")
    return value


def parse_degrees(value: Any) -> tuple[int, ...]:
    """``"1,2,3"``, ``[1, 2, 3]`` or ``3`` → (1, 2, 3) / (3,)."""
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,\s]+", value.strip("[]() ")) if p]
        return tuple(int(p) for p in parts)
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


def parse_duration(value: Any) -> float:
    """Seconds from ``3600``, ``"90s"``, ``"40m"``, ``"40min"``, ``"2h"`` or ``"1h30m"``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip().lower().replace(" ", "")
    try:
        return float(text)
    except ValueError:
        pass
    units = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0, "d": 86400.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)([a-z]+)", text)
    if not parts or "".join(n + u for n, u in parts) != text or any(u not in units for _, u in parts):
        raise ValueError(f"cannot read the duration {value!r}; use seconds or e.g. 90s, 40m, 2h, 1h30m")
    return sum(float(n) * units[u] for n, u in parts)


def count(text: str) -> int | float:
    """Frame count or fraction."""
    return parse_count(text)


def duration(text: str) -> float:
    """Seconds or 40m / 2h / 1h30m."""
    return parse_duration(text)


def degrees(text: Any) -> tuple[int, ...]:
    """Comma-separated degrees."""
    return parse_degrees(text)


def layers(text: Any) -> tuple[int, ...]:
    """Comma-separated layer indices."""
    return parse_degrees(text)
