"""``so3krates evaluate`` / ``evaluate_model``: units, splits of other files, unknown elements."""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import kcal, mol
from test_train_helpers import trained_run

from so3krates.cli.main import main
from so3krates.data import UnitsWarning
from so3krates.train.evaluate import evaluate_model


def test_other_file_in_other_units(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    run_dir, data, _ = trained_run(tmp_path_factory)
    frames = ase.io.read(data, index=":")
    k = kcal / mol
    converted = []
    for atoms in frames:  # the same structures, labels in kcal/mol: a different file
        copy = atoms.copy()
        copy.calc = SinglePointCalculator(copy, energy=atoms.get_potential_energy() / k, forces=atoms.get_forces() / k)
        converted.append(copy)
    other = tmp_path / "kcal.extxyz"
    ase.io.write(other, converted, format="extxyz")
    # read in the training units (eV) its forces look 23× too large: a UnitsWarning, then the split error
    with pytest.warns(UnitsWarning), pytest.raises(ValueError, match="not the file .* was trained on.*--split all"):
        evaluate_model(run_dir, data=other, split="test", write=False)
    in_kcal = evaluate_model(run_dir, data=other, energy_unit="kcal/mol", out_dir=tmp_path / "eval", plot=False)
    assert in_kcal.metrics["split"] == "all" and in_kcal.metrics["n_structures"] == len(frames)
    assert in_kcal.metrics["units"]["energy"] == "kcal/mol"
    # The same predictions, reported in kcal/mol: every error is the eV error / (1 kcal/mol in eV).
    in_ev = evaluate_model(run_dir, data=data, split="all", write=False)
    for key in ("energy_mae", "energy_rmse", "forces_mae", "forces_rmse", "structure_averaged_forces_mae"):
        assert in_kcal.metrics[key] * k == pytest.approx(in_ev.metrics[key], rel=1e-5), key
    with np.load(tmp_path / "eval" / "predictions.npz") as pred:
        assert float(np.mean(np.abs(pred["forces_pred"] - pred["forces_ref"]))) == pytest.approx(
            in_kcal.metrics["forces_mae"]
        )


def test_unknown_elements_are_refused(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    run_dir, _, _ = trained_run(tmp_path_factory)
    atoms = molecule("CH3Cl")
    atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.zeros((len(atoms), 3)))
    path = tmp_path / "chloro.extxyz"
    ase.io.write(path, [atoms], format="extxyz")
    with pytest.raises(ValueError, match="frame 0 contains element.*Cl.*never trained"):
        evaluate_model(run_dir, data=path, write=False)


def test_cli_errors(tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture) -> None:
    run_dir, _, _ = trained_run(tmp_path_factory)
    assert main(["evaluate", "--model", str(run_dir.parent / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(run_dir), "--data", str(run_dir / "missing.xyz")]) == 2
    assert "missing.xyz" in capsys.readouterr().err
    metadata = json.loads((run_dir / "metadata.json").read_text())
    assert metadata["data_sha256"]
