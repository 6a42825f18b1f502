"""The training loop on tiny data: the loss goes down, validation agrees with evaluation, and force-only
training (β = 1) fits the energy constant of A.14."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from test_train_helpers import TINY_MODEL, emt_dataset, trained_run

from so3krates.model.config import ModelConfig
from so3krates.train import TrainConfig, train
from so3krates.train.evaluate import evaluate_model


def test_loss_decreases(tmp_path_factory: pytest.TempPathFactory) -> None:
    run_dir, _, _ = trained_run(tmp_path_factory)
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    train_loss = [float(r["train_loss"]) for r in rows]
    valid_loss = [float(r["valid_loss"]) for r in rows]
    assert train_loss[-1] < 0.9 * train_loss[0], train_loss
    assert valid_loss[-1] < 0.9 * valid_loss[0], valid_loss
    assert all(float(r["lr"]) > 0 for r in rows)


def test_validation_metrics_match_evaluation_of_the_saved_model(tmp_path_factory: pytest.TempPathFactory) -> None:
    run_dir, _, _ = trained_run(tmp_path_factory)
    metadata = json.loads((run_dir / "metadata.json").read_text())
    valid = metadata["training"]["valid_metrics"]
    evaluation = evaluate_model(run_dir, split="valid", write=False)
    assert evaluation.metrics["forces_mae"] == pytest.approx(valid["forces_mae"], rel=1e-4)
    assert evaluation.metrics["energy_mae"] == pytest.approx(valid["energy_mae"], rel=1e-4)


def test_force_only_training_fits_the_energy_constant(tmp_path: Path) -> None:
    data = emt_dataset(tmp_path / "emt.extxyz", n_frames=24, seed=3, names=("H2O",))
    config = TrainConfig(
        data=str(data),
        n_train=16,
        n_valid=4,
        beta=1.0,
        max_epochs=2,
        batch_size=4,
        progress=False,
        model=ModelConfig.from_dict(TINY_MODEL),
    )
    result = train(config, tmp_path / "run", log=lambda _: None)
    metadata = json.loads((tmp_path / "run" / "metadata.json").read_text())
    assert metadata["energy_constant_fitted"] is True
    assert metadata["energy_constant"] == pytest.approx(result.energy_constant)
    evaluation = evaluate_model(tmp_path / "run", split="train", plot=False)
    with np.load(evaluation.out_dir / "predictions.npz") as pred:
        # eq. 37: with c fitted, the mean energy error over the training set vanishes
        mean_error = float(np.mean(pred["energy_pred"] - pred["energy_ref"]))
    assert abs(mean_error) < 1e-3 * max(1.0, evaluation.metrics["energy_mae"])


def test_existing_run_is_not_overwritten(tmp_path_factory: pytest.TempPathFactory) -> None:
    run_dir, data, _ = trained_run(tmp_path_factory)
    with pytest.raises(ValueError, match="already contains a training run"):
        train(TrainConfig(data=str(data), model=ModelConfig.from_dict(TINY_MODEL)), run_dir)
