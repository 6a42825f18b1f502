"""The jitted train and evaluation steps, on one device or sharded over a device mesh.

:func:`make_train_step` is the one definition of a training step: the model's predictions, the masked
mean of the per-structure loss (eq. 35), its gradient, the clipped Adam direction scaled by −lr, the EMA
of the weights and the per-step error sums. Given a mesh it takes stacked batches (a leading device
axis, :func:`so3krates.train.batching.stack_batches`): the per-structure losses are computed with
``vmap`` over that axis and averaged over the real structures of all devices, so the loss, gradient and
update equal the single-device ones of the same global batch; the batch is sharded over the mesh and the
state replicated, and XLA inserts the gradient all-reduce when it partitions the step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from so3krates.compile import jit
from so3krates.graph import Batch
from so3krates.potential import Potential
from so3krates.train.loss import UNIT_SCALES, LossScales, StructureLossFn, eq35_structure_loss, masked_mean
from so3krates.train.optim import apply_learning_rate, ema_update
from so3krates.train.parallel import data_sharded, replicate, replicated, shard_batch, to_host

Array = jax.Array
Step = Callable[[Any, Any, Batch, Any], tuple[Any, dict[str, Array]]]


class TrainState(flax.struct.PyTreeNode):
    """What one optimiser step changes: weights, their moving average, Adam's moments, step count."""

    params: Any
    ema: Any
    opt_state: Any
    step: Array


def init_train_state(params: Any, optimizer: optax.GradientTransformation, step: int = 0) -> TrainState:
    """Fresh state: EMA = params, new optimiser state, step ``step``."""
    return TrainState(params, params, optimizer.init(params), jnp.asarray(step, jnp.int32))


def step_statistics(
    pred: dict[str, Array], batch: Batch, loss: Array, n_real: Array, grads: Any, scales: LossScales
) -> dict[str, Array]:
    """Sums over a (plain or stacked) batch, reduced per epoch on the host (one transfer per epoch).

    ``energy_abs_sum`` and ``forces_abs_sum`` are in the user's units (``scales``); ``energy_diff_sum`` is in
    eV: the running estimate of the energy constant c (A.14) for β = 1. Energy labels are residuals.
    """
    has_e = batch.graph_mask & batch.has_energy
    e_diff = jnp.where(has_e, batch.energy - pred["interaction_energy"], 0.0)
    atom_ok = batch.node_mask & jnp.take_along_axis(batch.has_forces, batch.node_graph, axis=-1)
    f_abs = jnp.where(atom_ok[..., None], jnp.abs(pred["forces"] - batch.forces), 0.0)
    return {
        "loss": loss,
        "loss_sum": loss * n_real,
        "n_structures": n_real,
        "energy_abs_sum": jnp.sum(jnp.abs(e_diff)) / scales.energy,
        "energy_diff_sum": jnp.sum(e_diff),
        "n_energy": jnp.sum(has_e),
        "forces_abs_sum": jnp.sum(f_abs) / scales.forces,
        "n_force_components": 3 * jnp.sum(atom_ok),
        "grad_norm": optax.tree.norm(grads),
    }


def make_train_step(
    potential: Potential,
    optimizer: optax.GradientTransformation,
    structure_loss_fn: StructureLossFn,
    mesh: Mesh | None = None,
    *,
    compute_stress: bool = False,
    ema_decay: float = 0.0,
    scales: LossScales | None = None,
) -> Step:
    """The jitted ``train_step(state, normalization, batch, lr) -> (state, stats)``.

    Args:
        potential: the model.
        optimizer: update direction (:func:`so3krates.train.optim.make_optimizer`); the step applies −lr.
        structure_loss_fn: per-structure loss ``(pred, batch) -> (G,)`` of one plain batch, e.g.
            :func:`so3krates.train.loss.eq35_structure_loss`; padding graphs are masked out here.
        mesh: None for one device (plain batches); else a 1-D mesh (:func:`so3krates.train.parallel.make_mesh`)
            over which stacked batches are sharded and the state and ``normalization`` replicated.
        compute_stress: predict the stress (for a stress term in the loss).
        ema_decay: EMA of the weights (0: the EMA is the weights).
        scales: user units, for the error sums in ``stats`` (:func:`step_statistics`).
    """
    scales = scales or UNIT_SCALES

    def per_structure(params: Any, normalization: Any, batch: Batch) -> tuple[Array, dict[str, Array]]:
        pred = potential.predict({"params": params, "normalization": normalization}, batch, compute_stress)
        return structure_loss_fn(pred, batch), pred

    # A stacked batch: the same per-structure function on every device's part, (D, G) losses.
    predict = per_structure if mesh is None else jax.vmap(per_structure, in_axes=(None, None, 0))

    def loss_fn(params: Any, normalization: Any, batch: Batch) -> tuple[Array, tuple[dict[str, Array], Array]]:
        per, pred = predict(params, normalization, batch)
        loss, n_real = masked_mean(per, batch.graph_mask)
        return loss, (pred, n_real)

    def train_step(state: Any, normalization: Any, batch: Batch, lr: Array) -> tuple[Any, dict[str, Array]]:
        (loss, (pred, n_real)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, normalization, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, apply_learning_rate(updates, lr))
        ema = ema_update(state.ema, params, ema_decay, state.step) if ema_decay > 0 else params
        stats = step_statistics(pred, batch, loss, n_real, grads, scales)
        return state.replace(params=params, ema=ema, opt_state=opt_state, step=state.step + 1), stats

    if mesh is None:
        return jit(train_step)
    rep, data = replicated(mesh), data_sharded(mesh)
    return jit(train_step, in_shardings=(rep, rep, data, rep), out_shardings=(rep, rep))


def make_eval_step(
    potential: Potential, structure_loss_fn: StructureLossFn, compute_stress: bool = False
) -> Callable[[Any, Batch], dict[str, Array]]:
    """The jitted ``eval_step(variables, batch)`` of one device: interaction energies as ``energy`` (to
    compare with residual labels), ``forces`` [, ``stress``] and the per-structure ``loss``."""

    def eval_step(variables: Any, batch: Batch) -> dict[str, Array]:
        pred = potential.predict(variables, batch, compute_stress)
        out = {"energy": pred["interaction_energy"], "forces": pred["forces"], "loss": structure_loss_fn(pred, batch)}
        return {**out, "stress": pred["stress"]} if "stress" in pred else out

    return jit(eval_step)


def make_steps(
    potential: Potential,
    config: Any,
    scales: LossScales,
    optimizer: optax.GradientTransformation,
    compute_stress: bool,
    loss_scales: LossScales | None = None,
    mesh: Mesh | None = None,
) -> tuple[Step, Callable[[Any, Batch], dict[str, Array]]]:
    """The train step (on one device, or sharded over ``mesh``) and the evaluation step of a
    :class:`~so3krates.train.config.TrainConfig`.

    ``scales``: the file's units, in which the error sums of the statistics are reported; ``loss_scales``:
    the units of the loss (``config.loss_units``; default ``scales``).
    """
    loss = eq35_structure_loss(config.beta, config.stress_weight, scales if loss_scales is None else loss_scales)
    train_step = make_train_step(
        potential, optimizer, loss, mesh, compute_stress=compute_stress, ema_decay=config.ema_decay, scales=scales
    )
    return train_step, make_eval_step(potential, loss, compute_stress)


class DeviceStep:
    """A train step bound to its devices: it places the state, the normalisation and each batch where
    the step wants them (one device, or the mesh) and brings results back to the host."""

    def __init__(self, train_step: Step, normalization: Any, mesh: Mesh | None = None) -> None:
        self.train_step, self.mesh = train_step, mesh
        self.normalization = normalization if mesh is None else replicate(normalization, mesh)

    def place(self, state: Any) -> Any:
        """``state`` on the step's devices (replicated over a mesh)."""
        return state if self.mesh is None else replicate(state, self.mesh)

    def learning_rate(self, lr: float) -> Any:
        """The learning rate as the step takes it: a device scalar, or a host scalar that jit replicates."""
        return jnp.asarray(lr, jnp.float32) if self.mesh is None else np.float32(lr)

    def __call__(self, state: Any, batch: Batch, lr: Any) -> tuple[Any, dict[str, Array]]:
        """One optimiser step on a plain batch (one device) or this process's stacked parts (a mesh)."""
        if self.mesh is not None:
            batch = shard_batch(batch, self.mesh)
        return self.train_step(state, self.normalization, batch, lr)

    def host(self, tree: Any) -> Any:
        """Numpy copies of ``tree`` (of a replicated tree: this process's copy)."""
        return jax.device_get(tree) if self.mesh is None else to_host(tree)
