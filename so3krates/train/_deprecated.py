"""Old import paths of names that moved, kept for one release as warning aliases."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def moved_names(module: str, moved: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that resolves each old name in ``moved`` (name → new module) with a
    ``DeprecationWarning`` naming the new path."""

    def __getattr__(name: str) -> Any:
        if name not in moved:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new_module, _, new_name = moved[name].partition(":")
        new_name = new_name or name
        warnings.warn(
            f"{module}.{name} moved to {new_module}.{new_name}; the old path goes away in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(new_module), new_name)

    return __getattr__
