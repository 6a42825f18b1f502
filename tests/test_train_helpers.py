"""Shared builders of the training tests: tiny labelled data (EMT), a tiny model config, one trained run.

The trained run is made once per test session with the real CLI (``so3krates train`` through
``main([...])``) and reused by the loop, evaluation and CLI tests: training is the slow part.
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
import yaml
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

TINY_MODEL = {
    "features": 16,
    "num_layers": 1,
    "degrees": [1, 2],
    "num_heads": 2,
    "r_cut": 4.0,
    "num_radial": 8,
    "radial_hidden": 16,
    "spherical_hidden": 8,
}
MOLECULES = ("CH4", "H2O", "NH3", "CH3OH")


def emt_dataset(path: Path, n_frames: int = 48, seed: int = 0, names: tuple[str, ...] = MOLECULES) -> Path:
    """Rattled small molecules labelled with ASE's EMT (eV, Å), written as extended XYZ."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_frames):
        atoms = molecule(names[k % len(names)])
        atoms.positions += rng.normal(scale=0.04, size=atoms.positions.shape)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")
    return path


def tiny_yaml(path: Path, **options: object) -> Path:
    """A --config YAML with the tiny model and ``options``."""
    path.write_text(yaml.safe_dump({"model": dict(TINY_MODEL), **options}))
    return path


def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(run_dir, data file, CLI output) of a tiny model trained with the CLI; trained once per session."""
    base = tmp_path_factory.getbasetemp() / "shared_tiny_run"
    run_dir, data = base / "run", base / "emt.extxyz"
    log = base / "train_output.txt"
    if not (run_dir / "model.safetensors").exists():
        from so3krates.cli.main import main

        base.mkdir(exist_ok=True)
        emt_dataset(data, n_frames=48)
        config = tiny_yaml(base / "tiny.yaml", lr=3e-3, ema_decay=0.9)
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(
                [
                    "train",
                    "--data",
                    str(data),
                    "--out",
                    str(run_dir),
                    "--config",
                    str(config),
                    "--n-train",
                    "32",
                    "--n-valid",
                    "8",
                    "--max-epochs",
                    "6",
                    "--batch-size",
                    "4",
                    "--no-progress",
                ]
            )
        assert code == 0, out.getvalue()
        log.write_text(out.getvalue())
    return run_dir, data, log.read_text()
