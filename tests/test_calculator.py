"""The ASE calculator: exact derivatives, symmetry, neighbour-list reuse, no recompilation, bad input.

Precision: tests/conftest.py enables float64 in JAX and the model here is float64, so forces and
stress can be compared with central finite differences of the energy to ~1e-7 (the O(h²) truncation
error at h = 1e-4 Å, not float32 rounding), and a reused neighbour list must give the same numbers as
a fresh one to ~1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.md.verlet import VelocityVerlet
from ase.units import fs
from scipy.spatial.transform import Rotation

from so3krates.calculator import So3kratesCalculator
from so3krates.md import ForceField, JaxMD, initial_velocities
from so3krates.md.testing import emt_loaded_model, emt_model, emt_run_dir, emt_structure


@pytest.fixture(scope="module")
def trained() -> ForceField:
    return emt_loaded_model()


def calculator(trained: ForceField, **kwargs) -> So3kratesCalculator:
    return So3kratesCalculator(model=trained, **kwargs)


def ethanol() -> Atoms:
    return emt_structure("CH3CH2OH")


def two_ethanols() -> Atoms:
    """Two molecules 6 Å apart: some pairs beyond r_cut = 5 Å, some within the skin band beyond it."""
    first, second = ethanol(), ethanol()
    second.positions += [6.0, 0.0, 0.0]
    return first + second


def periodic_ethanol() -> Atoms:
    """Ethanol in a small triclinic cell: periodic images within r_cut, non-orthogonal shifts."""
    atoms = ethanol()
    atoms.cell = [[6.5, 0.0, 0.0], [0.8, 6.8, 0.0], [0.5, -0.6, 7.0]]
    atoms.pbc = True
    atoms.positions += 1.0
    return atoms


def test_forces_are_minus_the_energy_gradient(trained):
    atoms = ethanol()
    atoms.rattle(0.05, seed=1)
    atoms.calc = calculator(trained)
    forces = atoms.get_forces()
    numerical = calculate_numerical_forces(atoms, eps=1e-4)
    np.testing.assert_allclose(forces, numerical, atol=1e-6)
    assert np.abs(forces).max() > 1e-2  # not trivially zero


def test_periodic_forces_and_stress_match_finite_differences(trained):
    atoms = periodic_ethanol()
    atoms.calc = calculator(trained)
    stress = atoms.get_stress()
    np.testing.assert_allclose(stress, calculate_numerical_stress(atoms, eps=1e-5), atol=1e-7)
    np.testing.assert_allclose(atoms.get_forces(), calculate_numerical_forces(atoms, eps=1e-4), atol=1e-6)
    assert np.abs(stress).max() > 1e-5
    assert atoms.get_potential_energy() == atoms.calc.results["free_energy"]


def test_stress_of_a_molecule_is_refused(trained):
    atoms = ethanol()
    atoms.calc = calculator(trained)
    with pytest.raises(PropertyNotImplementedError, match="periodic"):
        atoms.get_stress()
    assert np.isfinite(atoms.get_potential_energy())  # energy and forces still work


def test_rotated_copy_has_the_same_energy_and_rotated_forces(trained):
    atoms = ethanol()
    atoms.calc = calculator(trained)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    rotation = Rotation.random(random_state=3).as_matrix()
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ rotation.T + [1.0, -2.0, 0.5]
    rotated.calc = calculator(trained)
    assert rotated.get_potential_energy() == pytest.approx(energy, abs=1e-10)
    np.testing.assert_allclose(rotated.get_forces(), forces @ rotation.T, atol=1e-10)


@pytest.mark.parametrize("make", [two_ethanols, periodic_ethanol])
def test_reused_neighbour_list_gives_the_same_results_as_a_fresh_one(trained, make):
    """Edges in the skin (r_cut < r < r_cut + skin) add exact zeros: the cosine cutoff is 0 there."""
    atoms = make()
    skin_calc = calculator(trained, skin=1.0)
    rng = np.random.default_rng(0)
    start = atoms.positions.copy()
    skin_calc.get_potential_energy(atoms)  # the list is built here, at ``start``
    exact = calculator(trained, skin=0.0)  # rebuilt at every new position: exactly the pairs within r_cut
    for _ in range(5):
        atoms.positions = start + rng.uniform(-0.2, 0.2, start.shape)  # each atom < 0.35 Å < skin / 2
        reused = skin_calc.get_potential_energy(atoms), skin_calc.get_forces(atoms)
        fresh = exact.get_potential_energy(atoms), exact.get_forces(atoms)
        assert reused[0] == pytest.approx(fresh[0], abs=1e-12)
        np.testing.assert_allclose(reused[1], fresh[1], atol=1e-12)
    assert skin_calc.neighbour_list.builds == 1  # reused throughout
    # ... and the reused list really held extra pairs beyond r_cut.
    assert skin_calc._neighbours.edge_mask.sum() > exact._neighbours.edge_mask.sum()

    atoms.positions = start + [0.6, 0.0, 0.0]  # a shift > skin / 2: rebuild
    skin_calc.get_potential_energy(atoms)
    assert skin_calc.neighbour_list.builds == 2


def test_a_new_cell_rebuilds_and_matches_a_fresh_calculator(trained):
    atoms = periodic_ethanol()
    calc = calculator(trained)
    atoms.calc = calc
    atoms.get_potential_energy()
    atoms.set_cell(atoms.cell * 1.03, scale_atoms=True)
    energy = atoms.get_potential_energy()
    assert calc.neighbour_list.builds == 2
    fresh = atoms.copy()
    fresh.calc = calculator(trained)
    assert energy == pytest.approx(fresh.get_potential_energy(), abs=1e-12)


def test_no_recompilation_during_md(trained):
    potential = trained.potential
    # ASE's velocity Verlet through the calculator.
    atoms = periodic_ethanol()
    initial_velocities(atoms, 500.0, seed=0)
    atoms.calc = calculator(trained, skin=0.2)
    dynamics = VelocityVerlet(atoms, 0.5 * fs)
    dynamics.run(1)
    compiled = potential._energy_forces._cache_size()
    dynamics.run(50)
    assert atoms.calc.neighbour_list.builds > 1  # the list was rebuilt ...
    assert potential._energy_forces._cache_size() == compiled  # ... without a new compilation

    # The JAX engine: one compiled chunk for the whole run, rebuilds included.
    atoms = periodic_ethanol()
    initial_velocities(atoms, 500.0, seed=0)
    md = JaxMD(trained, atoms, timestep_fs=0.5, skin=0.2)
    md.run(1, interval=1)
    chunk_compiled = md._chunk._cache_size()
    md.run(50, interval=5)
    assert md.stats.neighbour_builds > 0
    assert md._chunk._cache_size() == chunk_compiled


def test_unknown_element_is_refused(trained):
    atoms = ethanol()
    atoms.numbers[0] = 7  # nitrogen: not in the EMT ethanol training data (H, C, O)
    atoms.calc = calculator(trained)
    with pytest.raises(ValueError, match=r"N \(Z=7\).*not trained on"):
        atoms.get_potential_energy()
    with pytest.raises(ValueError, match="not trained on"):
        JaxMD(trained, atoms)


def test_invalid_structures_are_refused(trained):
    atoms = ethanol()
    atoms.positions[1] = atoms.positions[0] + 0.01
    atoms.calc = calculator(trained)
    with pytest.raises(ValueError, match="overlapping"):
        atoms.get_potential_energy()
    atoms = ethanol()
    atoms.calc = calculator(trained)
    atoms.get_potential_energy()
    atoms.positions[2, 0] = np.nan  # on a reused neighbour list too
    with pytest.raises(ValueError, match="NaN"):
        atoms.get_potential_energy()


def test_run_directory_and_in_memory_model_agree(trained):
    """``So3kratesCalculator(run_dir)`` holds the trained weights; ``from_potential`` gives the same numbers."""
    import jax

    potential, variables, elements = emt_model()
    from_dir = So3kratesCalculator(emt_run_dir())
    assert from_dir.elements == elements == (1, 6, 8)
    saved, loaded = jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(from_dir.variables)
    assert len(saved) == len(loaded) and all(np.array_equal(a, b) for a, b in zip(saved, loaded, strict=True))
    atoms = ethanol()
    atoms.rattle(0.05, seed=5)
    in_memory = So3kratesCalculator.from_potential(from_dir.potential, from_dir.variables, elements)
    assert from_dir.get_potential_energy(atoms) == in_memory.get_potential_energy(atoms)
    np.testing.assert_array_equal(from_dir.get_forces(atoms), in_memory.get_forces(atoms))


def test_constructor_needs_a_model():
    with pytest.raises(ValueError, match="model_dir or model"):
        So3kratesCalculator()
    with pytest.raises(FileNotFoundError):
        So3kratesCalculator("/nonexistent/run")


# -- precision (issue #17, item 2) -----------------------------------------------------------------------
def four_ethanols() -> Atoms:
    atoms = ethanol()
    for shift in ([5.5, 0, 0], [0, 5.5, 0], [5.5, 5.5, 0]):
        other = ethanol()
        other.positions += shift
        atoms += other
    atoms.rattle(0.03, seed=2)
    return atoms


def with_huge_reference(model: ForceField, total: float, n_atoms: int) -> ForceField:
    """``model`` with per-element shifts that put a structure of ``n_atoms`` at ``total`` eV (DFT scale)."""
    normalization = dict(model.variables["normalization"])
    normalization["shift"] = np.full_like(np.asarray(normalization["shift"], np.float64), total / n_atoms)
    return ForceField(model.potential, {**model.variables, "normalization": normalization}, model.elements)


def test_float32_energy_resolves_a_tiny_displacement_of_a_huge_total(trained):
    """A float32 model at −7·10⁵ eV: float32 totals come in steps of 0.0625 eV there, so only the float64
    reference energy and float64 sum over atoms let ΔE of a 1e-4 Å move match −F·Δx (to 1 %)."""
    atoms = four_ethanols()
    model = with_huge_reference(trained.with_dtype("float32"), -7.0e5, len(atoms))
    atoms.calc = calculator(model)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    assert model.potential.config.dtype == "float32" and abs(energy + 7.0e5) < 100.0
    a = int(np.argmax(np.linalg.norm(forces, axis=1)))
    step = 1e-4 * forces[a] / np.linalg.norm(forces[a])  # 1e-4 Å along the force on that atom
    energies = []
    for sign in (0.5, -0.5):
        moved = atoms.copy()
        moved.positions[a] += sign * step
        moved.calc = atoms.calc
        energies.append(moved.get_potential_energy())
    expected = -forces[a] @ step
    assert abs(expected) > 1e-5 and abs(np.spacing(np.float32(energy))) > 100 * abs(expected)
    assert (energies[0] - energies[1]) == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize(
    ("dtype", "eps", "atol", "strain_eps", "stress_atol"),
    [("float64", 1e-4, 1e-6, 1e-5, 1e-7), ("float32", 2e-3, 1e-3, 1e-3, 1e-5)],
)
def test_finite_differences_in_either_dtype(trained, dtype, eps, atol, strain_eps, stress_atol):
    """Forces and stress equal finite differences of the calculator's energy, in float64 and in float32,
    with the steps and tolerances float32 allows (its energies are good to ~1e-6 eV here, so the step
    must be larger and the tolerance looser: 3e-4 and 6e-4 eV/Å at a 2e-3 Å step, measured)."""
    for atoms in (ethanol(), periodic_ethanol()):
        atoms.rattle(0.05, seed=1)
        atoms.calc = calculator(trained, dtype=dtype)
        forces = atoms.get_forces()
        np.testing.assert_allclose(forces, calculate_numerical_forces(atoms, eps=eps), atol=atol)
        assert np.abs(forces).max() > 1e-2
        if atoms.pbc.any():
            numerical = calculate_numerical_stress(atoms, eps=strain_eps)
            np.testing.assert_allclose(atoms.get_stress(), numerical, atol=stress_atol)


def test_dtype_changes_the_arithmetic_not_the_model(trained):
    atoms = ethanol()
    atoms.rattle(0.05, seed=3)
    e64 = calculator(trained, dtype="float64").get_potential_energy(atoms)
    calc32 = calculator(trained, dtype="float32")
    assert (
        calc32.potential.config.dtype == "float32"
        and calc32.variables["params"]["embedding"]["embedding"].dtype == np.float32
    )
    assert calc32.get_potential_energy(atoms) == pytest.approx(e64, abs=1e-4)
    assert calculator(trained).potential.config.dtype == trained.potential.config.dtype


def test_unknown_keyword_is_refused(trained):
    with pytest.raises(TypeError, match="dtpe"):
        So3kratesCalculator(model=trained, dtpe="float64")
    with pytest.raises(ValueError, match="float32 or float64|one of"):
        So3kratesCalculator(model=trained, dtype="float16")


@pytest.mark.slow
def test_no_silent_64_bit_mode(tmp_path):
    """In a fresh process: importing and running a float32 model leaves JAX's 64-bit mode off; a float64
    model is refused with a message until float64 is asked for, which then switches the mode on."""
    import subprocess
    import sys

    script = f"""
import jax
from so3krates.calculator import So3kratesCalculator
from so3krates.md.testing import emt_structure
run = {str(emt_run_dir())!r}
atoms = emt_structure("CH3CH2OH")
atoms.calc = So3kratesCalculator(run, dtype="float32")
atoms.get_potential_energy()
print("x64 after float32:", jax.config.jax_enable_x64)
try:
    So3kratesCalculator(run)
except ValueError as err:
    print("refused:", "64-bit mode" in str(err))
atoms.calc = So3kratesCalculator(run, dtype="float64")
atoms.get_forces()
print("x64 after float64:", jax.config.jax_enable_x64)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "x64 after float32: False" in out.stdout
    assert "refused: True" in out.stdout
    assert "x64 after float64: True" in out.stdout
