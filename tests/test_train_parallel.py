"""``so3krates train`` on several devices, in several processes and from a stream directory, end to end.

JAX fixes its device count when it starts, so the runs needing two (forced host) devices or
``jax.distributed`` happen in child processes (this file run as a script, ``python
tests/test_train_parallel.py MODE ...``) that set ``XLA_FLAGS`` before importing JAX.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from process_helpers import free_port, run_together
from test_train_helpers import emt_dataset, tiny_yaml

HERE = Path(__file__).resolve()
# Batches of 3 over 2 devices give parts of 2 and 1 structures; the last batch of 10 has one structure,
# so one device gets an empty, all-padding part.
COMMON = ["--n-train", "10", "--n-valid", "4", "--batch-size", "3", "--dtype", "float64", "--no-progress"]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _weights(run_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(run_dir / "model.safetensors")


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_ENABLE_X64")}
    env["JAX_PLATFORMS"] = "cpu"
    # A persistent compilation cache: the resumed processes reuse the first ones' compiled steps.
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "jax_cache")
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    return env


def _train_args(data: Path, config: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--config", str(config), "--out", str(out), *COMMON, *extra]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("parallel_train")
    return emt_dataset(base / "emt.extxyz", n_frames=16, seed=3), tiny_yaml(base / "tiny.yaml", max_epochs=2)


def _assert_same_runs(a: Path, b: Path, tol: float) -> None:
    rows_a, rows_b = _rows(a / "metrics.csv"), _rows(b / "metrics.csv")
    assert len(rows_a) == len(rows_b) == 2
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for key in ("train_loss", "valid_loss", "valid_energy_mae", "valid_forces_mae"):
            assert float(ra[key]) == pytest.approx(float(rb[key]), rel=tol, abs=tol), key
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and len(wa) > 5
    for key in wa:
        np.testing.assert_allclose(wb[key], wa[key], rtol=tol, atol=tol, err_msg=key)


@pytest.mark.slow
def test_two_devices_train_the_same_model_as_one(inputs, tmp_path):
    data, config = inputs
    run = subprocess.run(
        [sys.executable, str(HERE), "devices", str(data), str(config), str(tmp_path)],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "data parallel over 2 device(s) in 1 process(es)" in run.stdout
    _assert_same_runs(tmp_path / "one", tmp_path / "two", 1e-9)


@pytest.fixture
def compilation_cache(tmp_path: Path):
    """The three in-process trainings below compile the same steps: cache them on disk (restored after)."""
    import jax

    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    old = {k: getattr(jax.config, k) for k in keys}
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    yield
    for k, v in old.items():
        jax.config.update(k, v)


@pytest.mark.slow
def test_a_stream_directory_trains_the_same_model_as_its_file(inputs, tmp_path, capsys, compilation_cache):
    from so3krates.cli.main import main

    data, config = inputs
    stream = tmp_path / "emt.stream"
    assert main(["prepare", "--data", str(data), "--out", str(stream), "--no-progress"]) == 0
    assert main(_train_args(data, config, tmp_path / "file")) == 0
    assert main(_train_args(stream, config, tmp_path / "stream")) == 0
    assert "streaming" in capsys.readouterr().out
    _assert_same_runs(tmp_path / "file", tmp_path / "stream", 1e-12)
    # Resuming a streamed run (the checksum check skips directories; the split is checked).
    assert main([*_train_args(stream, config, tmp_path / "stream"), "--resume", "--max-epochs", "3"]) == 0
    assert len(_rows(tmp_path / "stream" / "metrics.csv")) == 3


def _two_processes(args: list[str], tmp_path: Path) -> list[str]:
    coordinator = f"127.0.0.1:{free_port()}"
    base = [sys.executable, "-m", "so3krates.cli.main", *args, "--coordinator", coordinator, "--num-processes", "2"]
    return run_together([[*base, "--process-id", str(i)] for i in range(2)], _env(tmp_path))


@pytest.mark.slow
def test_two_processes_train_one_run_and_resume_it(inputs, tmp_path):
    data, config = inputs
    run_dir = tmp_path / "run"
    out0, out1 = _two_processes(_train_args(data, config, run_dir), tmp_path)
    assert "data parallel over 2 device(s) in 2 process(es)" in out0
    assert "model saved to" in out0 and "model saved to" not in out1  # only process 0 reports and writes
    assert [int(r["epoch"]) for r in _rows(run_dir / "metrics.csv")] == [1, 2]
    assert len(list((run_dir / "tensorboard").iterdir())) == 1
    for name in ("model.safetensors", "config.yaml", "metadata.json", "split.npz", "checkpoint_latest.msgpack"):
        assert (run_dir / name).is_file(), name
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]

    out0, _ = _two_processes([*_train_args(data, config, run_dir), "--resume", "--max-epochs", "3"], tmp_path)
    assert "resuming" in out0 and "after epoch 2" in out0
    assert [int(r["epoch"]) for r in _rows(run_dir / "metrics.csv")] == [1, 2, 3]


# -- the child side -----------------------------------------------------------------------------------


def child_devices(data: str, config: str, out: str) -> None:
    """The same training on one and on two (forced host) devices, in one process."""
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    from so3krates.cli.main import main

    for name, n in (("one", "1"), ("two", "2")):
        code = main(_train_args(Path(data), Path(config), Path(out) / name, "--devices", n))
        if code:
            raise SystemExit(code)


if __name__ == "__main__":
    if sys.argv[1] == "devices":
        child_devices(*sys.argv[2:5])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]}")
