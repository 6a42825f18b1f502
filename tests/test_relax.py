"""Relaxations with the So3krates calculator: ASE optimisers, cell relaxation, the ``relax`` CLI."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS, FIRE

from so3krates.calculator import So3kratesCalculator
from so3krates.md import ForceField
from so3krates.md.testing import emt_loaded_model, emt_structure


@pytest.fixture(scope="module")
def model() -> ForceField:
    return emt_loaded_model()


def max_force(atoms) -> float:  # noqa: ANN001
    return float(np.linalg.norm(atoms.get_forces(), axis=1).max())


@pytest.mark.parametrize("optimizer", [BFGS, FIRE])
def test_relaxation_brings_the_max_force_below_fmax(model, optimizer):
    atoms = emt_structure("CH3CH2OH")
    atoms.rattle(0.1, seed=2)
    atoms.calc = So3kratesCalculator(model=model)
    start_energy, start_force = atoms.get_potential_energy(), max_force(atoms)
    assert optimizer(atoms, logfile=None).run(fmax=0.01, steps=500)
    assert max_force(atoms) < 0.01 < start_force
    assert atoms.get_potential_energy() < start_energy


def test_cell_relaxation_converges_forces_and_stress(model):
    """Stress through FrechetCellFilter. The model was fitted to an isolated molecule, so the cell is kept
    large (images > r_cut apart) and the positions are relaxed first: this tests the plumbing, not an
    equation of state (and keeps scipy's per-step matrix logarithms few, slow on a busy machine)."""
    atoms = emt_structure("CH3CH2OH")
    atoms.cell = [[12.0, 0.0, 0.0], [0.5, 12.2, 0.0], [0.3, -0.4, 12.5]]
    atoms.pbc = True
    atoms.rattle(0.05, seed=3)
    atoms.calc = So3kratesCalculator(model=model)
    assert BFGS(atoms, logfile=None).run(fmax=0.02, steps=200)
    cell_filter = FrechetCellFilter(atoms)
    assert BFGS(cell_filter, logfile=None).run(fmax=0.01, steps=100)
    assert np.linalg.norm(cell_filter.get_forces(), axis=1).max() < 0.01
    assert max_force(atoms) < 0.01
    # The filter's cell "forces" are the virial −σV divided by the number of atoms (its cell_factor).
    assert np.abs(atoms.get_stress()).max() * atoms.get_volume() / len(atoms) < 0.01


@pytest.fixture
def run_dir():
    from so3krates.md.testing import emt_run_dir

    return emt_run_dir()


def test_cli_relax(run_dir, tmp_path, capsys):
    from so3krates.cli.main import main

    start = emt_structure("CH3CH2OH")
    start.rattle(0.1, seed=4)
    structure = tmp_path / "start.xyz"
    start.write(structure)
    out = tmp_path / "relaxed.extxyz"
    argv = ["relax", "--model", str(run_dir), "--structure", str(structure), "--fmax", "0.01"]
    argv += ["--optimizer", "fire", "--out", str(out), "--log", str(tmp_path / "opt.log")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "converged" in printed and "final max force" in printed
    relaxed = ase.io.read(out)
    assert np.linalg.norm(relaxed.get_forces(), axis=1).max() < 0.01
    assert relaxed.get_potential_energy() < So3kratesCalculator(run_dir).get_potential_energy(start)


def test_cli_relax_cell_needs_a_periodic_structure(run_dir, tmp_path, capsys):
    from so3krates.cli.main import main

    structure = tmp_path / "start.xyz"
    emt_structure("CH3CH2OH").write(structure)
    argv = ["relax", "--model", str(run_dir), "--structure", str(structure), "--cell", "--out", str(tmp_path / "r.xyz")]
    assert main(argv) == 2
    assert "periodic" in capsys.readouterr().err
