"""One-structure batches of a fixed padded shape, and the model as the MD integrators call it.

The calculator and the MD engine evaluate one structure at a time with a
:class:`~so3krates.inference.neighbours.Neighbours` list whose capacity changes rarely: a
:class:`~so3krates.graph.Batch` of fixed padded sizes (:func:`template_batch`) takes its edges
(:func:`with_neighbours`), so jit sees one shape for a whole run.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from so3krates.graph import Batch, Graph, PadSizes, bucket, collate
from so3krates.inference.neighbours import Neighbours
from so3krates.potential import Potential, Variables

Array = jax.Array


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
    r_cut: float | None = None,
) -> Batch:
    """A one-structure batch of fixed padded sizes with the edges of ``neighbours``.

    The atom padding is :func:`padded_atoms`; padding edges of ``neighbours`` must point at the last
    (padding) atom, as :class:`~so3krates.inference.neighbours.SkinNeighbourList` does with ``pad_atom``.
    ``r_cut``: the cutoff within which ``neighbours`` holds every pair (recorded in the batch and checked
    against the model's; None: not known).
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
        r_cut=r_cut,
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
    """The model as the integrators want it: ``fn(positions, neighbours, *, variables, template)``.

    ``positions`` (n_atoms, 3) are the real atoms; the padding atoms of ``template`` stay at the origin
    (their edges and masks are off, so they contribute nothing). ``variables``: as :meth:`Potential.prepare`
    returns them (with or without the radial-filter table). Returns (interaction energy (), forces
    (n_atoms, 3)): the energy without the reference Σ_i shift[z_i] + c, which the engine adds on the host
    in float64.
    """

    def fn(
        positions: Array, neighbours: Neighbours, *, variables: Variables, template: Batch, radial_table: Any = None
    ) -> tuple[Array, Array]:
        pad = template.positions.shape[0] - n_atoms
        full = jnp.concatenate([positions, jnp.zeros((pad, 3), positions.dtype)])
        batch = with_neighbours(template, neighbours).replace(positions=full)
        out = potential.predict(variables, batch, radial_table=radial_table)  # radial_table: deprecated
        return out["interaction_energy"][0], out["forces"][:n_atoms]

    return fn


def radial_table(potential: Potential, variables: Variables, tabulate: bool = True) -> Any:
    """Deprecated: ``potential.prepare(variables, tabulate)`` gives variables that carry the table."""
    warnings.warn(
        "so3krates.inference.batches.radial_table is deprecated and goes in the next release: use "
        "potential.prepare(variables, tabulate)",
        DeprecationWarning,
        stacklevel=2,
    )
    return potential.tabulate(variables) if tabulate else None


def predict_kwargs(table: Any) -> dict[str, Any]:
    """Deprecated: keyword arguments of :meth:`Potential.energy_forces` for an optional radial table; pass
    ``potential.prepare(variables)`` as the variables instead."""
    warnings.warn(
        "so3krates.inference.batches.predict_kwargs is deprecated and goes in the next release: pass "
        "potential.prepare(variables) as the variables",
        DeprecationWarning,
        stacklevel=2,
    )
    return {} if table is None else {"radial_table": table}
