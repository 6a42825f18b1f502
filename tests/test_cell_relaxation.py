"""A model trained on a periodic set relaxes a strained cubic cell (issue #17): with a cusp in the energy
at the cubic cell (the plain SPHC norm) the stress jumps there and the relaxation cannot converge."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from so3krates.calculator import So3kratesCalculator
from so3krates.model.config import ModelConfig
from so3krates.train import TrainConfig, train


def emt_copper_frames(n: int = 64, seed: int = 0) -> list:
    """Conventional fcc Cu cells (4 atoms) under random strains of up to ±4 % and rattled by 0.05 Å,
    labelled with ASE's EMT (energy, forces, stress)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        strain = np.eye(3) + rng.uniform(-0.04, 0.04, (3, 3))
        atoms.set_cell(atoms.cell @ (0.5 * (strain + strain.T)), scale_atoms=True)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        labels = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(), "stress": atoms.get_stress()}
        atoms.calc = SinglePointCalculator(atoms, **labels)
        frames.append(atoms)
    return frames


@pytest.mark.slow
def test_cell_relaxation_of_a_strained_cubic_cell_converges(tmp_path):
    data = tmp_path / "cu.extxyz"
    ase.io.write(data, emt_copper_frames())
    config = TrainConfig(
        data=str(data),
        n_train=56,
        n_valid=8,
        n_test=0,
        beta=0.5,
        stress_weight=100.0,
        max_epochs=60,
        batch_size=8,
        lr=3e-3,
        progress=False,
        model=ModelConfig(features=16, num_layers=2, degrees=(1, 2), num_heads=2, r_cut=4.0, dtype="float64"),
    )
    train(config, tmp_path / "run", log=lambda _: None)

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.set_cell(atoms.cell @ np.array([[1.03, 0.01, 0.0], [0.01, 0.99, 0.0], [0.0, 0.0, 1.02]]), scale_atoms=True)
    atoms.rattle(0.02, seed=3)
    atoms.calc = So3kratesCalculator(tmp_path / "run")
    optimizer = BFGS(FrechetCellFilter(atoms), logfile=None)
    converged = optimizer.run(fmax=1e-3, steps=300)
    assert converged, f"not converged in 300 steps: fmax {np.abs(atoms.get_forces()).max():.2e}"
    # The relaxed cell is cubic again (the model's minimum has the symmetry of the crystal).
    lengths = atoms.cell.lengths()
    assert np.ptp(lengths) < 1e-3 and np.allclose(atoms.cell.angles(), 90.0, atol=0.05)
    print(f"converged in {optimizer.nsteps} steps, a = {lengths.mean():.4f} Å")
