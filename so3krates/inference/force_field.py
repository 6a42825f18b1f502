"""A trained force field as the calculator, ``evaluate`` and the MD engine use it.

:class:`ForceField` is a :class:`~so3krates.potential.Potential` with its variables (weights and
normalisation) and the elements it was trained on; :func:`load_force_field` reads one from a run
directory (written by ``so3krates train``) and keeps it, so that a second calculator or MD run in one
process reuses its compiled functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from ase.data import chemical_symbols

from so3krates.potential import Potential, Variables
from so3krates.run_dir import load_run
from so3krates.validation import check_known_elements

Array = jax.Array


@dataclass
class ForceField:
    """A potential with its variables, the atomic numbers it was trained on (None: not known) and the
    metadata of its run (``metadata.json``: units, data source, split sizes, …; empty if not from a run)."""

    potential: Potential
    variables: Variables
    elements: tuple[int, ...] | None = None
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def r_cut(self) -> float:
        return float(self.potential.config.r_cut)

    def with_dtype(self, dtype: str) -> ForceField:
        """The same force field evaluated in ``dtype`` ("float32" or "float64"; float64 needs JAX's 64-bit mode)."""
        from so3krates.precision import check_dtype

        check_dtype(dtype, "ForceField.with_dtype")
        potential = Potential(dataclasses.replace(self.potential.config, dtype=dtype))
        normalization = self.variables["normalization"]
        variables = {
            "params": jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), self.variables["params"]),
            "normalization": {**normalization, "scale": jnp.asarray(normalization["scale"], dtype)},
        }
        return ForceField(potential, variables, self.elements, self.metadata)

    def check_elements(self, numbers: Iterable[int], where: str = "structure") -> None:
        """Refuse elements the force field never saw (its predictions for them would be meaningless)."""
        check_known_elements(numbers, self.elements, self.potential.config.max_atomic_number, where)


def check_elements(numbers: Iterable[int], elements: Sequence[int] | None, where: str = "structure") -> None:
    """Raise ``ValueError`` naming the elements of ``numbers`` that are not in ``elements`` (None: all known)."""
    check_known_elements(numbers, elements, None, where)


def _elements_from_metadata(metadata: dict[str, Any]) -> tuple[int, ...] | None:
    """Atomic numbers from run metadata: accepts atomic numbers or symbols under a few likely keys."""
    for key in ("elements", "atomic_numbers", "species", "element_numbers", "numbers"):
        value = metadata.get(key)
        if value is None:
            continue
        if isinstance(value, dict):  # e.g. {symbol: count} or {z: ...}
            value = list(value)
        out = []
        for v in value:
            out.append(chemical_symbols.index(v) if isinstance(v, str) and not v.isdigit() else int(v))
        return tuple(sorted(set(out)))
    return None


_LOADED: dict[tuple, ForceField] = {}


def load_force_field(model_dir: str | Path, dtype: str | None = None) -> ForceField:
    """Load a trained run directory (written by ``so3krates train``); its elements come from the metadata.

    ``dtype``: "float32" or "float64" to run the model in, None: as trained (see
    :func:`so3krates.run_dir.load_run`). Loading the same unchanged directory in the same dtype again
    returns the same :class:`ForceField`, so its compiled functions are reused (a second calculator or
    MD run in one process does not recompile).
    """
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    stamp = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(model_dir.iterdir()) if p.is_file())
    key = (str(model_dir.resolve()), stamp, dtype)
    if key not in _LOADED:
        potential, variables, metadata = load_run(model_dir, dtype)
        metadata = dict(metadata or {})
        _LOADED[key] = ForceField(potential, variables, _elements_from_metadata(metadata), metadata)
    return _LOADED[key]
