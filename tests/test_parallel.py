"""Data-parallel training: two (forced host) devices give the step of one device; two processes with
``jax.distributed`` train together and only process 0 writes.

JAX fixes its device count when it starts, so each check runs in a child process (this file run as a
script, ``python tests/test_parallel.py MODE ...``) that sets ``XLA_FLAGS`` before importing JAX.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from process_helpers import free_port, run_together

HERE = Path(__file__).resolve()


# -- the child side -----------------------------------------------------------------------------------


def _setup(num_devices: int) -> None:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _problem():  # noqa: ANN202 - child only
    import jax

    from so3krates.graph import collate, make_graph
    from so3krates.model.config import ModelConfig
    from so3krates.potential import Potential

    rng = np.random.default_rng(0)
    graphs = []
    for k in range(7):  # odd: the two devices get 4 and 3 structures
        n = 3 + k % 3
        positions = np.arange(n)[:, None] * np.array([1.2, 0.0, 0.0]) + rng.normal(0, 0.2, (n, 3))
        graphs.append(
            make_graph(
                positions, rng.integers(1, 9, n), 4.0, energy=float(rng.normal()), forces=rng.normal(size=(n, 3))
            )
        )
    config = ModelConfig(features=16, num_layers=1, degrees=(1, 2), num_heads=2, r_cut=4, dtype="float64")
    potential = Potential(config)
    variables = potential.init(jax.random.PRNGKey(0), collate(graphs))
    return potential, variables, graphs


def child_equivalence(out: str) -> None:
    """One optimiser step without a mesh (plain batch), on 1 and on 2 devices from the same state and
    global batch; save all three."""
    _setup(2)
    import jax

    jax.config.update("jax_enable_x64", True)
    from so3krates.graph import collate
    from so3krates.train import parallel as par
    from so3krates.train.batching import max_device_pad_sizes, max_pad_sizes, split_for_devices, stack_batches
    from so3krates.train.loss import eq35_structure_loss
    from so3krates.train.optim import make_optimizer
    from so3krates.train.steps import init_train_state, make_train_step

    potential, variables, graphs = _problem()
    optimizer = make_optimizer(1.0)
    result = {}
    for d in (1, 2):
        mesh = par.make_mesh(par.select_devices(d))
        step = make_train_step(potential, optimizer, eq35_structure_loss(beta=0.9), mesh, ema_decay=0.99)
        state = par.replicate(init_train_state(variables["params"], optimizer), mesh)
        sizes = max_device_pad_sizes(graphs, -(-len(graphs) // d))
        batch = par.shard_batch(stack_batches(split_for_devices(graphs, d), sizes), mesh)
        assert len(batch.positions.sharding.device_set) == d
        state, stats = step(state, par.replicate(variables["normalization"], mesh), batch, 1e-2)
        flat = jax.tree_util.tree_leaves(par.to_host(state.params))
        result[d] = {"loss": float(stats["loss"]), "n": int(stats["n_structures"])}
        np.savez(Path(out) / f"params_{d}.npz", *flat)
    # The single-device step: the same function, jitted without shardings, on a plain padded batch.
    step = make_train_step(potential, optimizer, eq35_structure_loss(beta=0.9), None, ema_decay=0.99)
    state = init_train_state(variables["params"], optimizer)
    batch = collate(graphs, max_pad_sizes(graphs, len(graphs)))
    state, stats = step(state, variables["normalization"], batch, 1e-2)
    result[0] = {"loss": float(stats["loss"]), "n": int(stats["n_structures"])}
    np.savez(Path(out) / "params_0.npz", *jax.tree_util.tree_leaves(jax.device_get(state.params)))
    (Path(out) / "stats.json").write_text(json.dumps(result))


def child_distributed(out: str, coordinator: str, process_id: int) -> None:
    """Two processes (one CPU device each) train three steps together; process 0 writes the checkpoint."""
    _setup(1)
    import jax

    jax.config.update("jax_enable_x64", True)
    from so3krates.train import parallel as par
    from so3krates.train.batching import max_device_pad_sizes, stack_batches
    from so3krates.train.loss import eq35_structure_loss
    from so3krates.train.optim import make_optimizer
    from so3krates.train.steps import init_train_state, make_train_step

    assert par.initialize_distributed(coordinator, 2, process_id)
    assert jax.process_count() == 2 and len(jax.devices()) == 2 and len(jax.local_devices()) == 1
    potential, variables, graphs = _problem()
    optimizer = make_optimizer(1.0)
    mesh = par.make_mesh(par.select_devices(None))
    step = make_train_step(potential, optimizer, eq35_structure_loss(beta=0.9), mesh)
    state = par.replicate(init_train_state(variables["params"], optimizer), mesh)
    normalization = par.replicate(variables["normalization"], mesh)
    mine = par.process_shard(np.arange(len(graphs)), jax.process_index(), jax.process_count())
    sizes = max_device_pad_sizes(graphs, 4)
    local = stack_batches([[graphs[i] for i in mine]], sizes)  # this process's one device
    batch = par.shard_batch(local, mesh)
    losses = []
    for _ in range(3):
        state, stats = step(state, normalization, batch, 1e-2)
        losses.append(float(par.to_host(stats["loss"])))
    params = jax.tree_util.tree_leaves(par.to_host(state.params))
    report = {"losses": losses, "indices": mine.tolist(), "checksum": float(sum(np.sum(p) for p in params))}
    print("REPORT " + json.dumps(report), flush=True)
    if par.is_writer():
        np.savez(Path(out) / "checkpoint.npz", *params)


# -- the tests ----------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_ENABLE_X64")}
    env["JAX_PLATFORMS"] = "cpu"
    return env


def test_process_shard_and_device_split():
    from so3krates.train.batching import split_for_devices
    from so3krates.train.parallel import process_shard

    idx = np.arange(10, 17)
    parts = [process_shard(idx, p, 3) for p in range(3)]
    assert [len(p) for p in parts] == [3, 2, 2]
    np.testing.assert_array_equal(np.concatenate(parts), idx)
    with pytest.raises(ValueError):
        process_shard(idx, 3, 3)
    assert [len(p) for p in split_for_devices(list(range(7)), 2)] == [4, 3]
    assert [len(p) for p in split_for_devices(list(range(1)), 2)] in ([0, 1], [1, 0])


def test_two_devices_take_the_same_step_as_one(tmp_path):
    run = subprocess.run(
        [sys.executable, str(HERE), "equivalence", str(tmp_path)], env=_env(), capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["0"]["n"] == stats["1"]["n"] == stats["2"]["n"] == 7
    for d in ("0", "2"):
        assert abs(stats["1"]["loss"] - stats[d]["loss"]) < 1e-12 * max(1.0, abs(stats["1"]["loss"]))
    plain, one, two = (np.load(tmp_path / f"params_{d}.npz") for d in range(3))
    assert len(one.files) > 5
    for key in one.files:
        np.testing.assert_allclose(two[key], one[key], rtol=0, atol=1e-10)
        np.testing.assert_allclose(plain[key], one[key], rtol=0, atol=1e-10)


@pytest.mark.slow
def test_two_processes_train_together_and_only_process_0_writes(tmp_path):
    coordinator = f"127.0.0.1:{free_port()}"
    commands = [[sys.executable, str(HERE), "distributed", str(tmp_path), coordinator, str(i)] for i in range(2)]
    outputs = run_together(commands, _env(), timeout=240, merge_stderr=False)
    reports = [json.loads(next(x for x in out.splitlines() if x.startswith("REPORT "))[7:]) for out in outputs]
    assert reports[0]["indices"] == [0, 1, 2, 3] and reports[1]["indices"] == [4, 5, 6]
    assert reports[0]["losses"] == reports[1]["losses"]  # one global loss, the same on both processes
    assert reports[0]["losses"][-1] < reports[0]["losses"][0]
    assert reports[0]["checksum"] == reports[1]["checksum"]  # replicated weights stayed identical
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz"]


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "equivalence":
        child_equivalence(sys.argv[2])
    elif mode == "distributed":
        child_distributed(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        raise SystemExit(f"unknown mode {mode}")
