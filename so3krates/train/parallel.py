"""Data-parallel training over the local devices (and over hosts with ``jax.distributed``).

The global batch of B structures is split into D per-device batches, each collated to the *same*
:class:`~so3krates.graph.PadSizes`, and stacked along a new leading axis (:func:`stack_batches`). That
stacked batch is sharded along its leading axis over a 1-D :class:`~jax.sharding.Mesh` named
``"data"`` (``NamedSharding(mesh, P("data"))``); weights, Adam moments and the EMA are replicated.

The loss is the mean over *all* real structures of all devices: the per-structure losses are computed
with ``vmap`` over the device axis, and summed with the real-structure masks, then divided by the
total number of real structures. It therefore equals the single-device loss of the same global batch
(whatever the split into devices), and so do its gradient and the optimiser step. XLA inserts the
all-reduce of the gradient when it partitions the jitted step.

Multi-host: :func:`initialize_distributed` wraps ``jax.distributed.initialize`` (arguments or the
``SO3KRATES_COORDINATOR``/``SO3KRATES_NUM_PROCESSES``/``SO3KRATES_PROCESS_ID`` environment variables);
each process loads only its shard of the structures (:func:`process_shard`) and builds the global
stacked batch from its local part (:func:`shard_batch`); only process 0 writes files (:func:`is_writer`).

Example (one host)::

    mesh = make_mesh(select_devices(2))
    step = make_parallel_train_step(potential, optimizer, eq35_structure_loss(beta=0.99), mesh)
    state = replicate(init_train_state(params, optimizer), mesh)
    batch = shard_batch(stack_batches(split_for_devices(graphs, 2), sizes), mesh)
    state, stats = step(state, replicate(normalization, mesh), batch, 1e-3)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from so3krates.compile import jit
from so3krates.graph import Batch, Graph, PadSizes, bucket, collate
from so3krates.potential import Potential
from so3krates.train.loss import LossScales, structure_errors, structure_loss
from so3krates.train.optim import apply_learning_rate, ema_update

Array = jax.Array
AXIS = "data"
StructureLossFn = Callable[[dict[str, Array], Batch], Array]

ENV_COORDINATOR = "SO3KRATES_COORDINATOR"
ENV_NUM_PROCESSES = "SO3KRATES_NUM_PROCESSES"
ENV_PROCESS_ID = "SO3KRATES_PROCESS_ID"


# -- devices, mesh, processes -------------------------------------------------------------------------


def select_devices(n: int | None = None) -> list[jax.Device]:
    """The first ``n`` devices (all of them for None), for ``--devices N``.

    With several processes the devices are global (all hosts); ``n`` must then be None or the global
    count (every process contributes all of its local devices).
    """
    devices = jax.devices()
    if n is None:
        return devices
    if n < 1 or n > len(devices):
        raise ValueError(
            f"--devices {n}: {len(devices)} device(s) available ({devices[0].platform}); "
            "on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N simulates N devices"
        )
    if jax.process_count() > 1 and n != len(devices):
        raise ValueError(f"--devices {n}: with {jax.process_count()} processes all {len(devices)} devices are used")
    return devices[:n]


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``"data"`` over ``devices`` (default: all devices)."""
    return Mesh(np.asarray(list(devices if devices is not None else jax.devices())), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding of an array copied on every device of the mesh."""
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    """Sharding of a stacked batch: its leading (device) axis split over the mesh."""
    return NamedSharding(mesh, P(AXIS))


def initialize_distributed(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> bool:
    """Join a multi-process run (``jax.distributed.initialize``); call before anything else uses JAX.

    Missing arguments are read from ``SO3KRATES_COORDINATOR`` (HOST:PORT), ``SO3KRATES_NUM_PROCESSES`` and
    ``SO3KRATES_PROCESS_ID``; with none of them set (and no coordinator) nothing happens. On CPU the
    cross-process collectives use gloo. Returns whether a multi-process run was initialised.
    """
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR)
    if num_processes is None and os.environ.get(ENV_NUM_PROCESSES):
        num_processes = int(os.environ[ENV_NUM_PROCESSES])
    if process_id is None and os.environ.get(ENV_PROCESS_ID):
        process_id = int(os.environ[ENV_PROCESS_ID])
    if coordinator is None:
        if num_processes not in (None, 1):
            raise ValueError(f"--num-processes {num_processes} needs --coordinator HOST:PORT")
        return False
    if num_processes is None or process_id is None:
        raise ValueError("--coordinator needs --num-processes and --process-id (or the SO3KRATES_* variables)")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id {process_id} must be in [0, {num_processes})")
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # noqa: BLE001 - option absent in other jax versions: their default is used
        pass
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
    return True


def is_writer() -> bool:
    """True on the process that writes files (checkpoints, metrics, the model): process 0."""
    return jax.process_index() == 0


def process_shard(indices: Sequence[int] | np.ndarray, process_index: int, process_count: int) -> np.ndarray:
    """This process's part of ``indices``: the ``process_index``-th of ``process_count`` contiguous blocks.

    Blocks differ in length by at most one; concatenated in process order they give ``indices`` back.
    """
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process {process_index} of {process_count} is not a valid process")
    return np.array_split(np.asarray(indices, dtype=np.int64), process_count)[process_index]


# -- batches ------------------------------------------------------------------------------------------


def split_for_devices(graphs: Sequence[Graph], num_devices: int) -> list[list[Graph]]:
    """Split a global batch into ``num_devices`` contiguous parts of near-equal structure counts."""
    if num_devices < 1:
        raise ValueError(f"num_devices must be ≥ 1, got {num_devices}")
    bounds = np.linspace(0, len(graphs), num_devices + 1).round().astype(int)
    return [list(graphs[bounds[d] : bounds[d + 1]]) for d in range(num_devices)]


def device_pad_sizes(global_sizes: PadSizes, num_devices: int) -> PadSizes:
    """Per-device sizes safe for any split of a global batch that fits ``global_sizes``.

    Each device gets at most ``ceil((G−1)/D)`` structures but, in the worst case, all the atoms and edges
    of the global batch; bucket sizes from ``so3krates.graph.max_pad_sizes``-style estimates are tighter
    when the caller knows the data (see :func:`max_device_pad_sizes`).
    """
    per_device = -(-(global_sizes.n_graphs - 1) // num_devices)
    return PadSizes(global_sizes.n_atoms, global_sizes.n_edges, per_device + 1, global_sizes.n_pairs)


def max_device_pad_sizes(
    graphs: Sequence[Graph], per_device: int, all_pairs: bool = False, minimum: int = 8
) -> PadSizes:
    """Sizes that fit any ``per_device`` structures of ``graphs``: the largest ones, plus padding."""
    k = min(per_device, len(graphs))
    atoms = np.sort([g.n_atoms for g in graphs])[::-1][:k].sum()
    edges = np.sort([g.n_edges for g in graphs])[::-1][:k].sum()
    pairs = np.sort([g.n_atoms * (g.n_atoms - 1) for g in graphs])[::-1][:k].sum() if all_pairs else 0
    return PadSizes(
        n_atoms=bucket(int(atoms) + 1, minimum),
        n_edges=bucket(int(edges) + 1, minimum),
        n_graphs=per_device + 1,
        n_pairs=bucket(int(pairs) + 1, minimum) if all_pairs else 0,
    )


def stack_batches(parts: Sequence[Sequence[Graph]], sizes: PadSizes, all_pairs: bool = False) -> Batch:
    """Collate every part to the same ``sizes`` and stack them: each array gets a leading axis (D, ...).

    An empty part becomes an all-padding batch (it contributes nothing to the loss).
    """
    batches = [collate(list(part), sizes, all_pairs=all_pairs) for part in parts]
    # One static edge layout for all parts (the plain one is valid for paired edges too), so that they stack.
    paired = all(b.edges_paired for b in batches)
    batches = [b.replace(edges_paired=paired) for b in batches]
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *batches)


def _global_array(x: Any, sharding: NamedSharding, global_shape: tuple[int, ...] | None = None) -> Array:
    x = np.asarray(x) if not isinstance(x, jax.Array) else x
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    return jax.make_array_from_process_local_data(sharding, np.asarray(x), global_shape)


def shard_batch(stacked: Batch, mesh: Mesh) -> Batch:
    """Place a stacked batch on the mesh, its leading axis split over ``"data"``.

    With several processes, ``stacked`` holds this process's local devices' parts only (leading axis =
    local device count); the result is the global array (leading axis = global device count).
    """
    sharding = data_sharded(mesh)
    n_local = len([d for d in mesh.devices.flat if d.process_index == jax.process_index()])
    n_global = mesh.devices.size

    def put(x: np.ndarray) -> Array:
        x = np.asarray(x)
        if x.shape[0] != n_local:
            raise ValueError(f"stacked batch has {x.shape[0]} parts, this process has {n_local} devices")
        return _global_array(x, sharding, (n_global, *x.shape[1:]))

    return jax.tree_util.tree_map(put, stacked)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Copy a pytree (parameters, optimiser state, normalisation) onto every device of the mesh.

    With several processes every process must pass identical values (e.g. the same seed).
    """
    sharding = replicated(mesh)
    return jax.tree_util.tree_map(lambda x: _global_array(x, sharding, np.shape(x)), tree)


def to_host(tree: Any) -> Any:
    """A replicated pytree as numpy arrays (works on every process: each has a full copy)."""

    def get(x: Any) -> Any:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_shards[0].data)
        return np.asarray(x)

    return jax.tree_util.tree_map(get, tree)


# -- the train step -----------------------------------------------------------------------------------


class ParallelTrainState(flax.struct.PyTreeNode):
    """Weights, their moving average, Adam's moments and the step count (as the loop's ``TrainState``).

    :func:`make_parallel_train_step` accepts any pytree with these four fields and ``replace``.
    """

    params: Any
    ema: Any
    opt_state: Any
    step: Array


def init_train_state(params: Any, optimizer: optax.GradientTransformation) -> ParallelTrainState:
    """Fresh state: EMA = params, new optimiser state, step 0."""
    return ParallelTrainState(params, params, optimizer.init(params), jnp.zeros((), jnp.int32))


def eq35_structure_loss(beta: float, stress_weight: float = 0.0, scales: LossScales | None = None) -> StructureLossFn:
    """The per-structure loss L_k of eq. 35, ``(pred, batch) -> (G,)``, for :func:`make_parallel_train_step`."""

    scales = scales or LossScales()

    def fn(pred: dict[str, Array], batch: Batch) -> Array:
        return structure_loss(structure_errors(pred, batch, scales), beta, stress_weight)

    return fn


def make_parallel_train_step(
    potential: Potential,
    optimizer: optax.GradientTransformation,
    structure_loss_fn: StructureLossFn,
    mesh: Mesh,
    *,
    compute_stress: bool = False,
    ema_decay: float = 0.0,
    scales: LossScales | None = None,
) -> Callable[[Any, Any, Batch, Any], tuple[Any, dict[str, Array]]]:
    """The jitted, sharded ``train_step(state, normalization, stacked_batch, lr) -> (state, stats)``.

    Args:
        potential: the model.
        optimizer: update direction (``so3krates.train.optim.make_optimizer``); the step applies −lr.
        structure_loss_fn: per-structure loss ``(pred, batch) -> (G,)`` of one (unstacked) batch, e.g.
            :func:`eq35_structure_loss`; padding graphs are masked out here.
        mesh: 1-D device mesh (:func:`make_mesh`); the batch is sharded over it, the state replicated.
        compute_stress: predict the stress (for a stress term in the loss).
        ema_decay: EMA of the weights (0: the EMA is the weights).
        scales: user units, for the error sums in ``stats``.
    Returns:
        The step. ``stats`` holds sums over the global batch, as the single-device loop's step:
        ``loss_sum``, ``n_structures``, ``energy_abs_sum``, ``energy_diff_sum``, ``n_energy``,
        ``forces_abs_sum``, ``n_force_components``, ``grad_norm``; ``loss`` is the global mean.
    """

    scales = scales or LossScales()

    def per_device(params: Any, normalization: Any, batch: Batch) -> tuple[Array, dict[str, Array]]:
        pred = potential.predict({"params": params, "normalization": normalization}, batch, compute_stress)
        return structure_loss_fn(pred, batch), pred

    def loss_fn(params: Any, normalization: Any, stacked: Batch) -> tuple[Array, tuple[dict[str, Array], Array]]:
        per, pred = jax.vmap(per_device, in_axes=(None, None, 0))(params, normalization, stacked)  # (D, G)
        n_real = jnp.maximum(jnp.sum(stacked.graph_mask), 1)
        return jnp.sum(jnp.where(stacked.graph_mask, per, 0.0)) / n_real, (pred, n_real)

    def train_step(state: Any, normalization: Any, stacked: Batch, lr: Array) -> tuple[Any, dict[str, Array]]:
        (loss, (pred, n_real)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, normalization, stacked)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, apply_learning_rate(updates, lr))
        ema = ema_update(state.ema, params, ema_decay, state.step) if ema_decay > 0 else params
        has_e = stacked.graph_mask & stacked.has_energy
        e_diff = jnp.where(has_e, stacked.energy - pred["interaction_energy"], 0.0)  # labels are residuals
        atom_ok = stacked.node_mask & jnp.take_along_axis(stacked.has_forces, stacked.node_graph, axis=1)
        f_abs = jnp.where(atom_ok[..., None], jnp.abs(pred["forces"] - stacked.forces), 0.0)
        stats = {
            "loss": loss,
            "loss_sum": loss * n_real,
            "n_structures": n_real,
            "energy_abs_sum": jnp.sum(jnp.abs(e_diff)) / scales.energy,
            "energy_diff_sum": jnp.sum(e_diff),
            "n_energy": jnp.sum(has_e),
            "forces_abs_sum": jnp.sum(f_abs) / scales.forces,
            "n_force_components": 3 * jnp.sum(atom_ok),
            "grad_norm": optax.global_norm(grads),
        }
        new_state = state.replace(params=params, ema=ema, opt_state=opt_state, step=state.step + 1)
        return new_state, stats

    rep, data = replicated(mesh), data_sharded(mesh)
    return jit(train_step, in_shardings=(rep, rep, data, rep), out_shardings=(rep, rep))


def make_parallel_eval_step(
    potential: Potential, mesh: Mesh, compute_stress: bool = False
) -> Callable[[Any, Batch], dict[str, Array]]:
    """Jitted, sharded predictions of a stacked batch: ``interaction_energy`` (D, G), ``forces`` (D, N, 3)
    [, ``stress``], as :meth:`Potential.predict` (the host adds the reference energies)."""

    def eval_step(variables: Any, stacked: Batch) -> dict[str, Array]:
        return jax.vmap(lambda b: potential.predict(variables, b, compute_stress))(stacked)

    return jit(eval_step, in_shardings=(replicated(mesh), data_sharded(mesh)), out_shardings=data_sharded(mesh))
