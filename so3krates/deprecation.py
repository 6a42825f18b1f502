"""Old public names kept for one release: a module-level ``__getattr__`` that warns and forwards."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def moved(old_module: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for names that moved: ``names`` maps an old name to ``"new.module:new_name"``
    (or ``"new.module"`` for the same name, or ``"new.module:*"`` for every other name). Each access warns
    with a ``DeprecationWarning`` naming the new place."""

    def __getattr__(name: str) -> Any:
        target = names.get(name, None if name.startswith("__") else names.get("*"))
        if target is None:  # dunder lookups (import machinery, copy, pickle) are never forwarded
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        module_name, _, new_name = target.partition(":")
        new_name = name if new_name in ("", "*") else new_name
        module = importlib.import_module(module_name)
        if not hasattr(module, new_name):  # a misspelt name: no deprecation warning, the plain error
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        warnings.warn(
            f"{old_module}.{name} is deprecated and goes in the next release: use {module_name}.{new_name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(module, new_name)

    return __getattr__
