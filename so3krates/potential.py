"""The one functional core: energies, forces and stress of a :class:`~so3krates.graph.Batch`.

Training, evaluation, the ASE calculator and MD all call :class:`Potential`, so a fix or a speed-up here
reaches every one of them.

Forces are the exact gradient F = −∂E/∂R. The stress is the derivative of the energy with respect to a
homogeneous strain ε applied to positions and cell together (r → r(1 + ε), cell → cell(1 + ε)), divided
by the cell volume: σ = (1/V) ∂E/∂ε, ASE's sign convention (eV/Å³).

Energies are split in two. The traced model gives the interaction energy Σ_i scale[z_i] · MLP(x_i) in the
model's dtype; the reference energy Σ_i shift[z_i] + c (per-element shifts, the constant of A.14), which
is most of a total energy (−4,200 eV for ethanol, −7·10⁵ eV for a large DFT cell), is added on the host in
float64 (:func:`reference_energy`), and so is the sum of the atomic interaction energies. A float32
model's total energy therefore resolves changes of ~1e-7 of the interaction energy, not 0.5 meV steps of
−4,200 eV. The shifts and c are kept in float64 in ``variables["normalization"]`` (NumPy arrays).

Example::

    potential = Potential(ModelConfig(features=32, num_layers=2))
    batch = collate([make_graph(positions, numbers, potential.config.r_cut)])
    variables = potential.init(jax.random.PRNGKey(0), batch)
    out = potential.energy_forces(variables, batch)   # {"energy": (G,) float64, "forces": (N, 3), ...}

For repeated inference with fixed weights (MD, relaxation, evaluation), ``potential.prepare(variables)``
adds the tabulated radial filters to the variables; every entry point then uses them.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from so3krates.compile import jit
from so3krates.graph import Batch, Graph
from so3krates.model.config import ModelConfig
from so3krates.model.radial import RadialTable, tabulate_radial_filters
from so3krates.model.so3krates import So3krates, interaction_energy
from so3krates.runtime import cpu_memory
from so3krates.validation import check_cutoff, check_known_elements

Array = jax.Array
Variables = dict[str, Any]
# The key of the tabulated radial filters in variables made by :meth:`Potential.prepare`.
RADIAL_TABLE = "radial_table"


def edge_vectors(positions: Array, cell: Array, batch: Batch) -> Array:
    """r_ij = r_j − r_i + shift_ij · cell for every edge, shape (E, 3)."""
    edge_cell = cell[batch.node_graph[batch.edge_i]]
    shift = jnp.einsum("ek,ekl->el", batch.edge_shift.astype(positions.dtype), edge_cell)
    return positions[batch.edge_j] - positions[batch.edge_i] + shift


def pair_vectors(positions: Array, batch: Batch) -> Array:
    """r_ij = r_j − r_i for all pairs of the non-local correction (molecules: no periodic images)."""
    return positions[batch.pair_j] - positions[batch.pair_i]


def reference_energy(normalization: Variables, batch: Batch) -> np.ndarray:
    """Σ_i shift[z_i] + c per structure in float64 on the host, (G,); zero for padding graphs.

    Args:
        normalization: ``variables["normalization"]`` with ``shift`` (Z+1,) and ``energy_offset`` ().
        batch: a host batch (NumPy arrays).
    """
    shift = np.asarray(normalization["shift"], np.float64)
    offset = float(np.asarray(normalization["energy_offset"], np.float64))
    numbers, node_mask = np.asarray(batch.numbers), np.asarray(batch.node_mask)
    graph_mask = np.asarray(batch.graph_mask)
    per_atom = np.where(node_mask, shift[numbers], 0.0)
    sums = np.bincount(np.asarray(batch.node_graph), per_atom, minlength=len(graph_mask))
    return np.where(graph_mask, sums + offset, 0.0)


def total_energy(atomic_energies: Array | np.ndarray, normalization: Variables, batch: Batch) -> np.ndarray:
    """Total energies (G,) in float64: the atomic interaction energies summed in float64 plus
    :func:`reference_energy`; zero for padding graphs."""
    atomic = np.where(np.asarray(batch.node_mask), np.asarray(atomic_energies, np.float64), 0.0)
    graph_mask = np.asarray(batch.graph_mask)
    sums = np.bincount(np.asarray(batch.node_graph), atomic, minlength=len(graph_mask))
    return np.where(graph_mask, sums, 0.0) + reference_energy(normalization, batch)


def residual_energy_graphs(graphs: Sequence[Graph], normalization: Variables) -> list[Graph]:
    """``graphs`` with each energy label E replaced by E − (Σ_i shift[z_i] + c), computed in float64 on the
    host: the quantity the traced model predicts (``interaction_energy``). Training and validation use it,
    so that a float32 model is fitted to residuals of a few eV, not to totals rounded to 0.5 meV steps."""
    shift = np.asarray(normalization["shift"], np.float64)
    offset = float(np.asarray(normalization["energy_offset"], np.float64))
    return [
        g if g.energy is None else dataclasses.replace(g, energy=float(g.energy) - (shift[g.numbers].sum() + offset))
        for g in graphs
    ]


def module_variables(variables: Variables) -> Variables:
    """The Flax module's variables: the parameters and the per-element scale (the float64 shifts and offset
    stay on the host)."""
    return {"params": variables["params"], "normalization": {"scale": variables["normalization"]["scale"]}}


def traced_variables(variables: Variables) -> Variables:
    """What the traced model reads: :func:`module_variables` and, in prepared variables, the radial-filter
    table."""
    traced = module_variables(variables)
    if RADIAL_TABLE in variables:
        traced[RADIAL_TABLE] = variables[RADIAL_TABLE]
    return traced


def _with_table(variables: Variables, radial_table: RadialTable | None) -> Variables:
    """The deprecated ``radial_table=`` argument, folded into the variables as :meth:`Potential.prepare` does."""
    if radial_table is None:
        return variables
    warnings.warn(
        "the radial_table argument is deprecated and goes in the next release: pass "
        "potential.prepare(variables) as the variables instead",
        DeprecationWarning,
        stacklevel=3,
    )
    return {**variables, RADIAL_TABLE: radial_table}


class Potential:
    """Energies, forces and stress of the So3krates model, jitted once and shared by every user.

    Attributes:
        config: the model hyperparameters.
        module: the Flax module.
        compiled: programs that users of this potential compile around it (the MD engine's chunks),
            keyed by their settings, so that they live as long as the potential.
    """

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.module = So3krates(config)
        self.dtype = jnp.dtype(config.dtype)
        self._energy_forces = jit(self.predict, static_argnames=("compute_stress",))
        self._energy = jit(self.energy_unjitted)
        self.compiled: dict[tuple, Any] = {}

    # -- initialisation -------------------------------------------------------------------------
    def init(self, key: Array, batch: Batch) -> Variables:
        """Random parameters and unit normalisation: ``{"params": ..., "normalization": ...}``."""
        with cpu_memory.not_kept():  # eager, op by op: large arrays mapped and unmapped one by one
            positions = jnp.asarray(batch.positions, self.dtype)
            cell = jnp.asarray(batch.cell, self.dtype)
            pairs = pair_vectors(positions, batch) if self.config.nonlocal_correction else None
            variables = self.module.init(key, batch, edge_vectors(positions, cell, batch), pairs, positions)
        n_elements = self.config.max_atomic_number + 1
        normalization = {
            "scale": variables["normalization"]["scale"],
            "shift": np.zeros(n_elements, np.float64),  # host float64, see reference_energy
            "energy_offset": np.zeros((), np.float64),
        }
        return {"params": variables["params"], "normalization": normalization}

    # -- the functional core --------------------------------------------------------------------
    def energy_unjitted(
        self,
        variables: Variables,
        batch: Batch,
        positions: Array | None = None,
        strain: Array | None = None,
    ) -> tuple[Array, Array]:
        """Interaction energy per structure (G,) and atomic interaction energies (N,) at ``positions``
        (default the batch's) under ``strain`` (G, 3, 3): the total energy without the reference energy,
        which :func:`total_energy` adds on the host. Prepared variables (:meth:`prepare`) bring the
        radial-filter table."""
        positions = jnp.asarray(batch.positions if positions is None else positions, self.dtype)
        cell = jnp.asarray(batch.cell, self.dtype)
        if strain is not None:
            deformation = jnp.eye(3, dtype=self.dtype) + strain
            positions = jnp.einsum("ni,nij->nj", positions, deformation[batch.node_graph])
            cell = jnp.einsum("gij,gjk->gik", cell, deformation)
        pairs = pair_vectors(positions, batch) if self.config.nonlocal_correction else None
        vectors = edge_vectors(positions, cell, batch)
        table = variables.get(RADIAL_TABLE)
        atomic = self.module.apply(module_variables(variables), batch, vectors, pairs, positions, table)
        return interaction_energy(atomic, batch), atomic

    def predict(
        self,
        variables: Variables,
        batch: Batch,
        compute_stress: bool = False,
        radial_table: RadialTable | None = None,
    ) -> dict[str, Array]:
        """Interaction energy (G,), atomic interaction energies (N,), forces (N, 3) and, with
        ``compute_stress``, stress (G, 3, 3); not jitted. The total energy is ``interaction_energy`` plus
        the reference energy, added on the host (:meth:`energy_forces` does, in float64).

        Differentiable with respect to ``variables["params"]``: training takes gradients of a loss on
        these forces (a second derivative of the energy). Variables from :meth:`prepare` swap the radial
        filter MLPs for their interpolation table: for inference only. ``radial_table``: deprecated.
        Refuses a batch built with a smaller cutoff than the model's (:meth:`check_cutoff`; static, so
        checked when traced).
        """
        self.check_cutoff(batch)
        variables = _with_table(variables, radial_table)
        positions = jnp.asarray(batch.positions, self.dtype)
        num_graphs = batch.graph_mask.shape[0]
        strain = jnp.zeros((num_graphs, 3, 3), self.dtype)

        def summed(pos: Array, eps: Array) -> tuple[Array, tuple[Array, Array]]:
            energy, atomic = self.energy_unjitted(variables, batch, pos, eps if compute_stress else None)
            return energy.sum(), (energy, atomic)

        (grad_pos, grad_strain), (energy, atomic) = jax.grad(summed, argnums=(0, 1), has_aux=True)(positions, strain)
        out = {
            "interaction_energy": energy,
            "atomic_energies": atomic,
            "forces": -jnp.where(batch.node_mask[:, None], grad_pos, 0.0),
        }
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
            check_known_elements(batch.numbers, None, self.config.max_atomic_number, where="batch")

    def check_cutoff(self, batch: Batch) -> None:
        """Refuse a batch whose neighbour lists were built with a smaller cutoff than the model's
        (``batch.r_cut``, static; None: not known, not checked)."""
        check_cutoff(batch.r_cut, self.config.r_cut, where="batch")

    def energy(self, variables: Variables, batch: Batch) -> np.ndarray:
        """Total energy per structure, (G,) float64 (jitted model, reference energy added on the host)."""
        self.check_elements(batch)
        self.check_cutoff(batch)
        _, atomic = self._energy(traced_variables(variables), batch)
        return total_energy(atomic, variables["normalization"], batch)

    def energy_forces(
        self,
        variables: Variables,
        batch: Batch,
        compute_stress: bool = False,
        radial_table: RadialTable | None = None,
    ) -> dict[str, Array]:
        """Jitted :meth:`predict` plus the host's float64 total: ``energy`` (G,) float64 (see
        :func:`total_energy`), ``forces`` (N, 3) and, with ``compute_stress``, ``stress`` (G, 3, 3) in the
        model's dtype, and the traced outputs ``interaction_energy`` and ``atomic_energies``. One compiled
        function per padded batch shape.

        For repeated inference with fixed weights (MD, relaxation, evaluation) pass
        ``potential.prepare(variables)``: several times fewer FLOPs per edge. ``radial_table``: deprecated.
        """
        self.check_elements(batch)
        self.check_cutoff(batch)
        variables = _with_table(variables, radial_table)
        out = dict(self._energy_forces(traced_variables(variables), batch, compute_stress=compute_stress))
        out["energy"] = total_energy(out["atomic_energies"], variables["normalization"], batch)
        return out

    def tabulate(
        self, variables: Variables, num_points: int = 1024, rank_tolerance: float | None = None
    ) -> RadialTable:
        """Interpolation table of the radial filters (:func:`so3krates.model.radial.tabulate_radial_filters`)."""
        return tabulate_radial_filters(variables["params"], self.config, num_points, rank_tolerance)

    def prepare(
        self,
        variables: Variables,
        tabulate: bool = True,
        num_points: int = 1024,
        rank_tolerance: float | None = None,
    ) -> Variables:
        """Variables for repeated inference with fixed weights: with ``tabulate``, ``variables`` plus the
        radial-filter table (:meth:`tabulate`) under ``"radial_table"``, which :meth:`energy`,
        :meth:`energy_forces` and :meth:`predict` then use in place of the filter MLPs (the same forces to
        ~1e-6 relative in float32, ~1e-7 in float64, fewer FLOPs per edge; forces stay exact gradients of
        the interpolated energy). Not for training; prepare again after changing the weights."""
        if not tabulate:
            return {k: v for k, v in variables.items() if k != RADIAL_TABLE}
        return {**variables, RADIAL_TABLE: self.tabulate(variables, num_points, rank_tolerance)}

    def num_parameters(self, variables: Variables) -> int:
        """Number of trainable parameters (the ``params`` collection)."""
        return int(sum(x.size for x in jax.tree_util.tree_leaves(variables["params"])))
