"""A trained model as the calculator and the MD engine see it: potential, variables, known elements.

Also the batch plumbing they share: a one-structure :class:`~so3krates.graph.Batch` with fixed padded
sizes whose edges come from a :class:`~so3krates.md.neighbours.Neighbours`, and the JAX function
``(positions, neighbours, variables=..., template=...) -> (energy, forces)`` of the integrators.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ase.data import chemical_symbols

from so3krates.graph import Batch, Graph, PadSizes, bucket, collate
from so3krates.md.neighbours import Neighbours
from so3krates.potential import Potential, Variables

Array = jax.Array


@dataclass
class Model:
    """A potential with its variables and the atomic numbers it was trained on (None: not known)."""

    potential: Potential
    variables: Variables
    elements: tuple[int, ...] | None = None

    @property
    def r_cut(self) -> float:
        return float(self.potential.config.r_cut)

    def with_dtype(self, dtype: str) -> Model:
        """The same model evaluated in ``dtype`` ("float32" or "float64"; float64 needs JAX's 64-bit mode)."""
        import dataclasses

        from so3krates.precision import check_dtype

        check_dtype(dtype, "Model.with_dtype")
        potential = Potential(dataclasses.replace(self.potential.config, dtype=dtype))
        normalization = self.variables["normalization"]
        variables = {
            "params": jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), self.variables["params"]),
            "normalization": {**normalization, "scale": jnp.asarray(normalization["scale"], dtype)},
        }
        return Model(potential, variables, self.elements)

    def check_elements(self, numbers: Iterable[int], where: str = "structure") -> None:
        """Refuse elements the model never saw (its predictions for them would be meaningless)."""
        numbers = np.asarray(list(numbers), dtype=np.int64)
        check_elements(numbers, self.elements, where)
        z_max = self.potential.config.max_atomic_number
        if numbers.size and int(numbers.max()) > z_max:
            raise ValueError(f"{where}: atomic number {int(numbers.max())} is beyond the model's embedding (≤ {z_max})")


def check_elements(numbers: Iterable[int], elements: Sequence[int] | None, where: str = "structure") -> None:
    """Raise ``ValueError`` naming the elements of ``numbers`` that are not in ``elements``."""
    if elements is None:
        return
    unknown = sorted(set(int(z) for z in np.unique(np.asarray(list(numbers)))) - set(int(z) for z in elements))
    if unknown:
        names = ", ".join(f"{_symbol(z)} (Z={z})" for z in unknown)
        known = ", ".join(_symbol(z) for z in sorted(elements))
        raise ValueError(
            f"{where} contains element(s) {names} that the model was not trained on (it knows: {known}); "
            "its energies and forces would be meaningless"
        )


def _symbol(z: int) -> str:
    return chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z{z}"


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


_LOADED: dict[tuple, Model] = {}


def load_model(model_dir: str | Path, dtype: str | None = None) -> Model:
    """Load a trained run directory (written by ``so3krates train``); its elements come from the metadata.

    ``dtype``: "float32" or "float64" to run the model in, None: as trained (see
    :func:`so3krates.run_dir.load_model`). Loading the same unchanged directory in the same dtype again
    returns the same :class:`Model`, so its compiled functions are reused (a second calculator or MD run
    in one process does not recompile).
    """
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    from so3krates.run_dir import load_model as load_run

    stamp = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(model_dir.iterdir()) if p.is_file())
    key = (str(model_dir.resolve()), stamp, dtype)
    if key not in _LOADED:
        potential, variables, metadata = load_run(model_dir, dtype)
        _LOADED[key] = Model(potential, variables, _elements_from_metadata(dict(metadata or {})))
    return _LOADED[key]


# -- batches with a fixed shape ---------------------------------------------------------------------


def padded_atoms(n_atoms: int) -> int:
    """Padded atom count of a one-structure batch (at least one padding atom)."""
    return bucket(n_atoms + 1)


def template_batch(
    positions: np.ndarray,
    numbers: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    neighbours: Neighbours,
    all_pairs: bool = False,
) -> Batch:
    """A one-structure batch of fixed padded sizes with the edges of ``neighbours``.

    The atom padding is :func:`padded_atoms`; padding edges of ``neighbours`` must point at the last
    (padding) atom, as :class:`~so3krates.md.neighbours.SkinNeighbourList` does with ``pad_atom``.
    """
    n = len(numbers)
    graph = Graph(
        positions=np.asarray(positions, np.float64),
        numbers=np.asarray(numbers, np.int32),
        cell=np.asarray(cell, np.float64).reshape(3, 3),
        pbc=np.asarray(pbc, bool),
        edge_i=np.zeros(0, np.int32),
        edge_j=np.zeros(0, np.int32),
        edge_shift=np.zeros((0, 3), np.int32),
    )
    sizes = PadSizes(
        n_atoms=padded_atoms(n),
        n_edges=neighbours.capacity,
        n_graphs=2,
        n_pairs=bucket(n * (n - 1) + 1) if all_pairs else 0,
    )
    return with_neighbours(collate([graph], sizes, all_pairs=all_pairs), neighbours)


def with_neighbours(batch: Batch, neighbours: Neighbours) -> Batch:
    """``batch`` with the edges of ``neighbours`` (paired, as SkinNeighbourList builds them)."""
    return batch.replace(
        edge_i=neighbours.edge_i,
        edge_j=neighbours.edge_j,
        edge_shift=neighbours.edge_shift,
        edge_mask=neighbours.edge_mask,
        edges_paired=True,
    )


def energy_forces_fn(potential: Potential, n_atoms: int):  # noqa: ANN201 (a closure, typed in the docstring)
    """The model as the integrators want it: ``fn(positions, neighbours, *, variables, template, radial_table)``.

    ``positions`` (n_atoms, 3) are the real atoms; the padding atoms of ``template`` stay at the origin
    (their edges and masks are off, so they contribute nothing). ``radial_table`` (optional, from
    :func:`radial_table`) is the tabulated radial filters. Returns (interaction energy (), forces (n_atoms, 3)):
    the energy without the reference Σ_i shift[z_i] + c, which the engine adds on the host in float64.
    """

    def fn(
        positions: Array,
        neighbours: Neighbours,
        *,
        variables: Variables,
        template: Batch,
        radial_table: Any = None,
    ) -> tuple[Array, Array]:
        pad = template.positions.shape[0] - n_atoms
        full = jnp.concatenate([positions, jnp.zeros((pad, 3), positions.dtype)])
        batch = with_neighbours(template, neighbours).replace(positions=full)
        kwargs = {} if radial_table is None else {"radial_table": radial_table}
        out = potential.predict(variables, batch, **kwargs)
        return out["interaction_energy"][0], out["forces"][:n_atoms]

    return fn


def radial_table(potential: Potential, variables: Variables, tabulate: bool = True) -> Any:
    """The potential's interpolation table of its radial filters (None if off or not supported).

    Inference with fixed weights may replace the radial filter MLPs by a table (low-rank, cubic Hermite):
    the same forces to ~1e-6 relative in float32 (~1e-7 in float64), fewer FLOPs per edge, and forces
    stay exact gradients of the (interpolated) energy, so MD still conserves energy.
    """
    if not tabulate or not hasattr(potential, "tabulate"):
        return None
    return potential.tabulate(variables)


def predict_kwargs(table: Any) -> dict[str, Any]:
    """Keyword arguments of :meth:`Potential.energy_forces` for an optional radial table."""
    return {} if table is None else {"radial_table": table}
