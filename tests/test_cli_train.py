"""End-to-end tests of ``so3krates train`` and ``so3krates evaluate`` through the real CLI, including a
run killed with SIGKILL and resumed."""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_train_helpers import emt_dataset, tiny_yaml, trained_run

from so3krates.cli import train as cli_train
from so3krates.cli.main import main


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_train_then_evaluate(tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture) -> None:
    run_dir, data, output = trained_run(tmp_path_factory)
    assert f"model saved to {run_dir}" in output
    for name in (
        "config.yaml",
        "model.safetensors",
        "metadata.json",
        "split.npz",
        "metrics.csv",
        "learning_curve.png",
        "checkpoint_latest.msgpack",
    ):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tensorboard").iterdir())
    rows = _rows(run_dir / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(1, 7))
    metadata = json.loads((run_dir / "metadata.json").read_text())
    assert metadata["elements"] == [1, 6, 7, 8] and metadata["units"] == {"energy": "eV", "length": "Å"}
    assert metadata["split_sizes"] == {"train": 32, "valid": 8, "test": 8}
    assert metadata["training"]["epochs"] == 6

    assert main(["evaluate", "--model", str(run_dir), "--out", str(run_dir / "eval")]) == 0
    printed = capsys.readouterr().out
    assert "energy [eV]" in printed and "forces (per component) [eV/Å]" in printed
    assert "per-structure averaged MAE over" in printed
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n_structures"] == 8
    assert set(metrics["per_formula"]) <= {"CH4", "H2O", "H3N", "CH4O"}
    for key in (
        "energy_mae",
        "energy_rmse",
        "energy_per_atom_mae",
        "forces_mae",
        "forces_rmse",
        "structure_averaged_energy_mae",
        "structure_averaged_forces_mae",
    ):
        assert np.isfinite(metrics[key]), key
    assert (run_dir / "eval" / "parity.png").stat().st_size > 1000
    with np.load(run_dir / "eval" / "predictions.npz") as pred:
        with np.load(run_dir / "split.npz") as split:
            np.testing.assert_array_equal(pred["indices"], split["test"])  # exactly the held-out frames
        assert pred["forces_pred"].shape == pred["forces_ref"].shape == (int(pred["n_atoms"].sum()), 3)
        mae = np.mean(np.abs(pred["forces_pred"] - pred["forces_ref"]))
        assert mae == pytest.approx(metrics["forces_mae"])


def test_bad_input_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = emt_dataset(tmp_path / "d.extxyz", n_frames=4)
    assert main(["train", "--data", str(tmp_path / "missing.xyz"), "--out", str(tmp_path / "r")]) == 2
    assert "missing.xyz" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "r"), "--energy-key", "E_dft"]) == 2
    assert "E_dft" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "r"), "--energy-unit", "furlong"]) == 2
    assert "furlong" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "nothing"), "--resume"]) == 2
    assert "no training run to resume" in capsys.readouterr().err


def test_quick_preset_without_data_and_flag_precedence(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    cli_train.add_arguments(parser)
    config = cli_train.resolve_config(parser.parse_args([]))
    assert config.data is None and config.model.features == cli_train.QUICK_PRESET["model"]["features"]
    assert config.max_epochs == cli_train.QUICK_PRESET["max_epochs"]
    yaml_file = tiny_yaml(tmp_path / "c.yaml", lr=5e-3, data="d.xyz", max_epochs=9)
    args = parser.parse_args(["--config", str(yaml_file), "--max-epochs", "3", "--degrees", "1,3", "--n-train", "0.5"])
    config = cli_train.resolve_config(args)
    assert config.lr == 5e-3 and config.max_epochs == 3 and config.model.degrees == (1, 3)
    assert config.n_train == 0.5 and config.model.features == 16
    assert config.data == str((tmp_path / "d.xyz").resolve())  # relative to the YAML file


def test_nonlocal_and_efa_flags_reach_the_model_config(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    cli_train.add_arguments(parser)
    flags = ["--data", "x.xyz", "--layers", "3", "--nonlocal", "--kappa", "0.5", "--nonlocal-p", "4"]
    flags += ["--global-attention", "efa", "--efa-grid-size", "86", "--efa-max-length", "12", "--efa-layers", "0,2"]
    model = cli_train.resolve_config(parser.parse_args(flags)).model
    assert model.nonlocal_correction and model.nonlocal_kappa == 0.5 and model.nonlocal_p == 4
    assert model.global_attention == "efa" and model.efa_grid_size == 86 and model.efa_max_length == 12.0
    assert model.efa_layers == (0, 2)
    with pytest.raises(ValueError, match="efa_layers"):  # the config's own check, before any training
        cli_train.resolve_config(parser.parse_args([*flags[:-1], "0,5"]))
    equivariant = ["--data", "x.xyz", "--degrees", "1,2", "--global-attention", "efa-control", "--efa-max-degree", "2"]
    model = cli_train.resolve_config(parser.parse_args(equivariant)).model
    assert model.global_attention == "efa-control" and model.efa_max_degree == 2
    needs = r"\[1, 2\] from the SPHCs.*degrees \(--degrees\) = \[3\] has none"  # equivariant EFA reads χ^(1), χ^(2)
    with pytest.raises(ValueError, match=needs):
        cli_train.resolve_config(parser.parse_args([*equivariant[:2], "--degrees", "3", *equivariant[4:]]))


@pytest.mark.slow
def test_sigkill_then_resume_loses_no_epoch(tmp_path: Path) -> None:
    data = emt_dataset(tmp_path / "emt.extxyz", n_frames=96, seed=1)
    config = tiny_yaml(tmp_path / "tiny.yaml")
    run_dir = tmp_path / "run"
    max_epochs = 10
    command = [
        sys.executable,
        "-m",
        "so3krates.cli.main",
        "train",
        "--data",
        str(data),
        "--out",
        str(run_dir),
        "--config",
        str(config),
        "--n-train",
        "64",
        "--n-valid",
        "16",
        "--batch-size",
        "2",
        "--max-epochs",
        str(max_epochs),
        "--schedule",
        "plateau",
        "--no-progress",
    ]
    # A persistent compilation cache lets the resumed process reuse the first one's compiled steps.
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    metrics = run_dir / "metrics.csv"
    deadline = time.monotonic() + 300
    rows: list[dict[str, str]] = []
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists():
            rows = _rows(metrics)
            if len(rows) >= 2:
                break
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed:\n{proc.communicate()[0]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    rows = _rows(metrics)
    assert 2 <= len(rows) < max_epochs
    split_before = dict(np.load(run_dir / "split.npz"))

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = _rows(metrics)
    assert [int(r["epoch"]) for r in after] == list(range(1, max_epochs + 1))
    assert after[: len(rows)] == rows  # every epoch completed before the kill is kept as it was
    resumed_from = int(resumed.stdout.split("resuming")[1].split("after epoch")[1].split()[0])
    assert resumed_from >= len(rows)
    split_after = dict(np.load(run_dir / "split.npz"))
    assert split_after.keys() == split_before.keys()
    for key in split_before:
        np.testing.assert_array_equal(split_after[key], split_before[key])
    metadata = json.loads((run_dir / "metadata.json").read_text())
    assert metadata["training"]["epochs"] == max_epochs
