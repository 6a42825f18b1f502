"""The training loss, eq. 35 of the paper (A.13), on padded batches.

Per structure k with N_k atoms:

    L_k = (1 − β) · (E_k − Ê_k)² + β / (3 N_k) · Σ_{i ∈ k} Σ_{α ∈ x,y,z} (F_iα − F̂_iα)²
          [+ w_σ · mean_ab (σ_ab − σ̂_ab)²]

and the batch loss is the mean of L_k over the real structures of the batch (padding graphs and
padding atoms are masked out). A structure without an energy (forces) label contributes no energy
(force) term. Errors are divided by ``scales`` first, so that the loss is computed in the user's units
(β and the gradient-clipping norm act on the numbers in those units), while the model itself works in eV
and Å. The paper's MD17 models were trained in eV: the authors' release converts MD17's kcal/mol to eV on
load, so its clip at global norm 1 binds on gradients of eV-sized errors (docs/training.md).

Energies: the model's ``interaction_energy`` is compared with energy labels from which the host has
subtracted the reference energy Σ_i shift[z_i] + c in float64
(:func:`so3krates.potential.residual_energy_graphs`); the difference is the error of the total energy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from so3krates.graph import Batch

Array = jax.Array
StructureLossFn = Callable[[dict[str, Array], Batch], Array]


class LossScales(NamedTuple):
    """Size of one user unit in eV, eV/Å and eV/Å³: errors are divided by these (1.0: eV and Å)."""

    energy: float = 1.0
    forces: float = 1.0
    stress: float = 1.0

    @classmethod
    def from_units(cls, energy_to_ev: float, length_to_angstrom: float) -> LossScales:
        """Scales for an energy unit worth ``energy_to_ev`` eV and a length unit worth ``length_to_angstrom`` Å."""
        return cls(
            energy=energy_to_ev,
            forces=energy_to_ev / length_to_angstrom,
            stress=energy_to_ev / length_to_angstrom**3,
        )


UNIT_SCALES = LossScales()  # eV and Å


class StructureErrors(NamedTuple):
    """Squared errors per structure (G,), zero for padding graphs and for missing labels."""

    energy: Array  # (E − Ê)²
    forces: Array  # 1/(3N) Σ (F − F̂)²
    stress: Array  # 1/9 Σ (σ − σ̂)²


def structure_errors(pred: dict[str, Array], batch: Batch, scales: LossScales = UNIT_SCALES) -> StructureErrors:
    """Squared energy, force and stress errors of every structure of a padded batch (in scaled units).

    Args:
        pred: model output with ``interaction_energy`` (G,), ``forces`` (N, 3) and optionally ``stress``.
        batch: the padded batch with labels (energies as residuals, see the module docstring) and
            ``has_*`` masks.
        scales: the user's units in eV/Å (see :class:`LossScales`).
    """
    num_graphs = batch.graph_mask.shape[0]
    graph = batch.graph_mask
    e_err = (pred["interaction_energy"] - batch.energy) / scales.energy
    energy = jnp.where(graph & batch.has_energy, e_err**2, 0.0)

    atom_ok = batch.node_mask & batch.has_forces[batch.node_graph]
    f_err = (pred["forces"] - batch.forces) / scales.forces
    f_sq = jnp.where(atom_ok, jnp.sum(f_err**2, axis=-1), 0.0)
    f_sum = jax.ops.segment_sum(f_sq, batch.node_graph, num_segments=num_graphs)
    n_atoms = jnp.maximum(batch.n_atoms, 1).astype(f_sum.dtype)
    forces = jnp.where(graph & batch.has_forces, f_sum / (3.0 * n_atoms), 0.0)

    if "stress" in pred:
        s_err = (pred["stress"] - batch.stress) / scales.stress
        stress = jnp.where(graph & batch.has_stress, jnp.mean(s_err**2, axis=(-2, -1)), 0.0)
    else:
        stress = jnp.zeros_like(energy)
    return StructureErrors(energy, forces, stress)


def structure_loss(errors: StructureErrors, beta: float, stress_weight: float = 0.0) -> Array:
    """L_k of eq. 35 per structure (G,): (1 − β) ΔE² + β ΔF²/(3N) + w_σ Δσ²/9."""
    return (1.0 - beta) * errors.energy + beta * errors.forces + stress_weight * errors.stress


def eq35_structure_loss(beta: float, stress_weight: float = 0.0, scales: LossScales | None = None) -> StructureLossFn:
    """The per-structure loss L_k of eq. 35 as a function ``(pred, batch) -> (G,)`` (for the train steps)."""
    scales = scales or UNIT_SCALES

    def fn(pred: dict[str, Array], batch: Batch) -> Array:
        return structure_loss(structure_errors(pred, batch, scales), beta, stress_weight)

    return fn


def masked_mean(per_structure: Array, graph_mask: Array) -> tuple[Array, Array]:
    """Mean of ``per_structure`` over the real structures (any shape: (G,) or stacked (D, G)), and their count."""
    n_real = jnp.maximum(jnp.sum(graph_mask), 1)
    return jnp.sum(jnp.where(graph_mask, per_structure, 0.0)) / n_real, n_real


def batch_loss(
    pred: dict[str, Array],
    batch: Batch,
    beta: float,
    stress_weight: float = 0.0,
    scales: LossScales = UNIT_SCALES,
) -> Array:
    """Eq. 35 averaged over the real structures of the batch (a scalar)."""
    return masked_mean(eq35_structure_loss(beta, stress_weight, scales)(pred, batch), batch.graph_mask)[0]
