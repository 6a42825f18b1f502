"""The one functional core: energies, forces and stress of a :class:`~so3krates.graph.Batch`.

Training, evaluation, the ASE calculator and MD all call :class:`Potential`, so a fix or a speed-up here
reaches every one of them.

Forces are the exact gradient F = −∂E/∂R. The stress is the derivative of the energy with respect to a
homogeneous strain ε applied to positions and cell together (r → r(1 + ε), cell → cell(1 + ε)), divided
by the cell volume: σ = (1/V) ∂E/∂ε, ASE's sign convention (eV/Å³).

Example::

    potential = Potential(ModelConfig(features=32, num_layers=2))
    batch = collate([make_graph(positions, numbers, potential.config.r_cut)])
    variables = potential.init(jax.random.PRNGKey(0), batch)
    out = potential.energy_forces(variables, batch)   # {"energy": (G,), "forces": (N, 3)}
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from so3krates import cpu_memory
from so3krates.compile import jit
from so3krates.graph import Batch
from so3krates.model.config import ModelConfig
from so3krates.model.layers import RadialTable
from so3krates.model.so3krates import So3krates, tabulate_radial_filters, total_energy

Array = jax.Array
Variables = dict[str, Any]


def edge_vectors(positions: Array, cell: Array, batch: Batch) -> Array:
    """r_ij = r_j − r_i + shift_ij · cell for every edge, shape (E, 3)."""
    edge_cell = cell[batch.node_graph[batch.edge_i]]
    shift = jnp.einsum("ek,ekl->el", batch.edge_shift.astype(positions.dtype), edge_cell)
    return positions[batch.edge_j] - positions[batch.edge_i] + shift


def pair_vectors(positions: Array, batch: Batch) -> Array:
    """r_ij = r_j − r_i for all pairs of the non-local correction (molecules: no periodic images)."""
    return positions[batch.pair_j] - positions[batch.pair_i]


class Potential:
    """Energies, forces and stress of the So3krates model, jitted once and shared by every user.

    Attributes:
        config: the model hyperparameters.
        module: the Flax module.
    """

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.module = So3krates(config)
        self.dtype = jnp.dtype(config.dtype)
        self._energy_forces = jit(self.predict, static_argnames=("compute_stress",))
        self._energy = jit(self.energy_unjitted)

    # -- initialisation -------------------------------------------------------------------------
    def init(self, key: Array, batch: Batch) -> Variables:
        """Random parameters and unit normalisation: ``{"params": ..., "normalization": ...}``."""
        with cpu_memory.not_kept():  # eager, op by op: large arrays mapped and unmapped one by one
            positions = jnp.asarray(batch.positions, self.dtype)
            cell = jnp.asarray(batch.cell, self.dtype)
            pairs = pair_vectors(positions, batch) if self.config.nonlocal_correction else None
            variables = self.module.init(key, batch, edge_vectors(positions, cell, batch), pairs, positions)
            return jax.tree_util.tree_map(lambda x: x, dict(variables))

    # -- the functional core --------------------------------------------------------------------
    def energy_unjitted(
        self,
        variables: Variables,
        batch: Batch,
        positions: Array | None = None,
        strain: Array | None = None,
        radial_table: RadialTable | None = None,
    ) -> Array:
        """Total energy per structure (G,) at ``positions`` (default the batch's) under ``strain`` (G, 3, 3)."""
        positions = jnp.asarray(batch.positions if positions is None else positions, self.dtype)
        cell = jnp.asarray(batch.cell, self.dtype)
        if strain is not None:
            deformation = jnp.eye(3, dtype=self.dtype) + strain
            positions = jnp.einsum("ni,nij->nj", positions, deformation[batch.node_graph])
            cell = jnp.einsum("gij,gjk->gik", cell, deformation)
        pairs = pair_vectors(positions, batch) if self.config.nonlocal_correction else None
        atomic = self.module.apply(
            variables, batch, edge_vectors(positions, cell, batch), pairs, positions, radial_table
        )
        return total_energy(atomic, batch, variables["normalization"]["energy_offset"])

    def predict(
        self,
        variables: Variables,
        batch: Batch,
        compute_stress: bool = False,
        radial_table: RadialTable | None = None,
    ) -> dict[str, Array]:
        """Energy (G,), forces (N, 3) and, with ``compute_stress``, stress (G, 3, 3); not jitted.

        Differentiable with respect to ``variables["params"]``: training takes gradients of a loss on
        these forces (a second derivative of the energy). ``radial_table`` (see :meth:`tabulate`) swaps
        the radial filter MLPs for their interpolation table: for inference only.
        """
        positions = jnp.asarray(batch.positions, self.dtype)
        num_graphs = batch.graph_mask.shape[0]
        strain = jnp.zeros((num_graphs, 3, 3), self.dtype)

        def summed(pos: Array, eps: Array) -> tuple[Array, Array]:
            energy = self.energy_unjitted(variables, batch, pos, eps if compute_stress else None, radial_table)
            return energy.sum(), energy

        (grad_pos, grad_strain), energy = jax.grad(summed, argnums=(0, 1), has_aux=True)(positions, strain)
        out = {"energy": energy, "forces": -jnp.where(batch.node_mask[:, None], grad_pos, 0.0)}
        if compute_stress:
            cell = jnp.asarray(batch.cell, self.dtype)
            volume = jnp.abs(jnp.linalg.det(cell))
            periodic = batch.graph_mask & jnp.any(batch.pbc, axis=-1)
            sym = 0.5 * (grad_strain + jnp.swapaxes(grad_strain, -1, -2))
            out["stress"] = jnp.where(
                periodic[:, None, None], sym / jnp.where(periodic, volume, 1.0)[:, None, None], 0.0
            )
        return out

    # -- jitted entry points --------------------------------------------------------------------
    def check_elements(self, batch: Batch) -> None:
        """Refuse atomic numbers beyond the embedding table (checked on the host, before jit)."""
        if isinstance(batch.numbers, np.ndarray) and batch.numbers.size:
            z = int(batch.numbers.max())
            if z > self.config.max_atomic_number:
                raise ValueError(
                    f"atomic number {z} is outside the model's element embedding "
                    f"(max_atomic_number = {self.config.max_atomic_number})"
                )

    def energy(self, variables: Variables, batch: Batch) -> Array:
        """Jitted total energy per structure, shape (G,)."""
        self.check_elements(batch)
        return self._energy(variables, batch)

    def energy_forces(
        self,
        variables: Variables,
        batch: Batch,
        compute_stress: bool = False,
        radial_table: RadialTable | None = None,
    ) -> dict[str, Array]:
        """Jitted :meth:`predict`: one compiled function per padded batch shape.

        For repeated inference with fixed weights (MD, relaxation, evaluation) pass
        ``radial_table=potential.tabulate(variables)``: several times fewer FLOPs per edge.
        """
        self.check_elements(batch)
        return self._energy_forces(variables, batch, compute_stress=compute_stress, radial_table=radial_table)

    def tabulate(
        self, variables: Variables, num_points: int = 1024, rank_tolerance: float | None = None
    ) -> RadialTable:
        """Interpolation table of the radial filters for fast inference (see ``tabulate_radial_filters``)."""
        return tabulate_radial_filters(variables["params"], self.config, num_points, rank_tolerance)

    def num_parameters(self, variables: Variables) -> int:
        """Number of trainable parameters (the ``params`` collection)."""
        return int(sum(x.size for x in jax.tree_util.tree_leaves(variables["params"])))
