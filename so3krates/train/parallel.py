"""Devices, meshes and processes for data-parallel training (one host, or many with ``jax.distributed``).

A stacked batch (:func:`so3krates.train.batching.stack_batches`: one part per device along a leading axis)
is sharded along that axis over a 1-D :class:`~jax.sharding.Mesh` named ``"data"`` (:func:`shard_batch`);
weights, Adam moments, the EMA and the normalisation are replicated (:func:`replicate`). The sharded step
itself is :func:`so3krates.train.steps.make_train_step` with a mesh.

Multi-host: :func:`initialize_distributed` wraps ``jax.distributed.initialize`` (arguments or the
``SO3KRATES_COORDINATOR``/``SO3KRATES_NUM_PROCESSES``/``SO3KRATES_PROCESS_ID`` environment variables);
each process loads only its shard of the structures (:func:`process_shard`) and builds the global
stacked batch from its local part (:func:`shard_batch`); only process 0 writes files (:func:`is_writer`).

Example (one host)::

    mesh = make_mesh(select_devices(2))
    step = make_train_step(potential, optimizer, eq35_structure_loss(beta=0.99), mesh)
    state = replicate(init_train_state(params, optimizer), mesh)
    batch = shard_batch(stack_batches(split_for_devices(graphs, 2), sizes), mesh)
    state, stats = step(state, replicate(normalization, mesh), batch, 1e-3)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from so3krates.deprecation import moved
from so3krates.graph import Batch, PadSizes

Array = jax.Array
AXIS = "data"

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


def agree_pad_sizes(sizes: PadSizes) -> PadSizes:
    """The same padded sizes on every process (the largest of each), so that global arrays line up."""
    if jax.process_count() == 1:
        return sizes
    from jax.experimental import multihost_utils

    mine = np.array([sizes.n_atoms, sizes.n_edges, sizes.n_graphs, sizes.n_pairs], np.int64)
    top = np.max(multihost_utils.process_allgather(mine), axis=0)
    return PadSizes(int(top[0]), int(top[1]), int(top[2]), int(top[3]))


def sync_processes(name: str) -> None:
    """Wait until every process reaches ``name`` (nothing to do with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


__getattr__ = moved(
    __name__,
    {
        "split_for_devices": "so3krates.train.batching",
        "max_device_pad_sizes": "so3krates.train.batching",
        "stack_batches": "so3krates.train.batching",
        "eq35_structure_loss": "so3krates.train.loss",
        "StructureLossFn": "so3krates.train.loss",
        "init_train_state": "so3krates.train.steps",
        "ParallelTrainState": "so3krates.train.steps:TrainState",
        "make_parallel_train_step": "so3krates.train.steps:make_train_step",
    },
)
