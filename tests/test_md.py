"""The JAX MD engine: agreement with ASE, energy conservation, thermostats, neighbour lists, the CLI.

Float64 throughout (tests/conftest.py enables x64; the model is float64), so integrators can be compared
with ASE's step for step to ~1e-10 and energy drift reflects the integrator, not rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units
from ase.md.verlet import VelocityVerlet

from so3krates.calculator import So3kratesCalculator
from so3krates.md import (
    ForceField,
    JaxMD,
    Limits,
    SkinNeighbourList,
    drift_per_atom_per_ps,
    initial_velocities,
    read_log,
)
from so3krates.md.testing import emt_loaded_model, emt_structure


@pytest.fixture(scope="module")
def model() -> ForceField:
    return emt_loaded_model()


def ethanol(temperature_K: float = 300.0, seed: int = 0) -> Atoms:
    atoms = emt_structure("CH3CH2OH")
    initial_velocities(atoms, temperature_K, seed=seed)
    return atoms


def periodic_ethanol(temperature_K: float = 300.0) -> Atoms:
    atoms = ethanol(temperature_K)
    atoms.cell = [[6.5, 0.0, 0.0], [0.8, 6.8, 0.0], [0.5, -0.6, 7.0]]
    atoms.pbc = True
    return atoms


def test_jax_velocity_verlet_matches_ase_step_for_step(model):
    atoms = periodic_ethanol(500.0)
    reference = atoms.copy()
    reference.calc = So3kratesCalculator(model=model, skin=0.2)
    ase_md = VelocityVerlet(reference, 0.5 * units.fs)
    # A small skin, so that the JAX engine also rebuilds its list during these 20 steps.
    md = JaxMD(model, atoms, "nve", timestep_fs=0.5, skin=0.2)
    for _ in range(20):
        ase_md.run(1)
        md.run(1, interval=1)
        frame = md.atoms()
        np.testing.assert_allclose(frame.positions, reference.positions, atol=1e-10, rtol=0)
        np.testing.assert_allclose(frame.get_momenta(), reference.get_momenta(), atol=1e-10, rtol=0)
        np.testing.assert_allclose(frame.get_forces(), reference.get_forces(), atol=1e-9, rtol=0)
    assert md.potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-10)
    assert md.stats.neighbour_builds > 0


def test_nve_conserves_energy(model):
    atoms = ethanol(300.0)
    # The command's default limits (issue #19) never trip in a sound run.
    md = JaxMD(model, atoms, "nve", timestep_fs=0.5, limits=Limits.default(300.0))
    times, totals = [], []

    def record(m: JaxMD) -> None:
        times.append(m.time_ps())
        totals.append(m.potential_energy() + m.kinetic_energy())

    record(md)
    md.run(2000, interval=10, callback=record)  # 1 ps
    drift = drift_per_atom_per_ps(np.array(times), np.array(totals), len(atoms))
    spread = (max(totals) - min(totals)) / len(atoms)
    print(f"\nNVE ethanol, 0.5 fs, 1 ps: drift {drift:.2e} eV/atom/ps, max-min of E_tot {spread:.2e} eV/atom")
    # Loose bounds: the fit is rough, so the surface is stiffer than EMT's in places; float64 VV at 0.5 fs
    # gives |drift| ~ 1e-5–2e-4 and a max–min of ~2e-4–6e-4 eV/atom over 1 ps (both shrink ~4x at 0.25 fs).
    assert abs(drift) < 1e-3
    assert spread < 2e-3
    assert md.atoms().get_all_distances().max() < 6.0  # still one bound molecule


@pytest.mark.parametrize(("ensemble", "kwargs"), [("langevin", {"friction_per_ps": 20.0}), ("nvt", {"taut_fs": 20.0})])
def test_thermostat_reaches_the_target_temperature(model, ensemble, kwargs):
    atoms = ethanol(50.0)
    md = JaxMD(
        model, atoms, ensemble, timestep_fs=0.5, temperature_K=300.0, seed=1, limits=Limits.default(300.0), **kwargs
    )
    md.run(400)  # equilibrate 0.2 ps = 4 coupling times
    temperatures: list[float] = []
    md.run(4000, interval=20, callback=lambda m: temperatures.append(m.temperature()))
    mean = float(np.mean(temperatures))
    print(f"\n{ensemble}: mean temperature {mean:.1f} K over 2 ps (target 300 K)")
    # 9 atoms: the instantaneous T fluctuates by √(2/27) ≈ 27 %; 1-ps means scatter by ~6 % (measured over
    # 10-ps runs, which average to 297–306 K), so a 2-ps mean is good to ~4 % (one σ).
    assert mean == pytest.approx(300.0, rel=0.15)


def test_rebuilds_never_lose_neighbours(model):
    """A tiny skin and a capacity too small to start with: forces stay those of an exact list."""
    atoms = periodic_ethanol(600.0)
    md = JaxMD(model, atoms, "nve", timestep_fs=0.5, skin=0.2)
    md.neighbour_list.capacity = 16  # the next rebuild must grow it
    md.run(60, interval=10)
    assert md.stats.capacity_grows == 1
    assert md.stats.neighbour_builds >= 3
    frame = md.atoms()
    exact = frame.copy()
    exact.calc = So3kratesCalculator(model=model, skin=0.0)
    np.testing.assert_allclose(frame.get_forces(), exact.get_forces(), atol=1e-10)


def test_neighbour_list_capacity_grows_and_keeps_every_pair():
    rng = np.random.default_rng(0)
    sparse = rng.uniform(0, 20, (40, 3))
    nl = SkinNeighbourList(r_cut=3.0, skin=0.5, headroom=1.0, pad_atom=40)
    first = nl.build(sparse, np.zeros((3, 3)), np.zeros(3, bool))
    dense = sparse * 0.3
    second = nl.build(dense, np.zeros((3, 3)), np.zeros(3, bool))
    assert nl.grows == 1 and second.capacity > first.capacity
    d = np.linalg.norm(dense[:, None] - dense[None], axis=-1)
    assert second.edge_mask.sum() == np.sum((d < 3.5) & (d > 0))
    assert np.all(second.edge_i[~second.edge_mask] == 40)


def test_blow_up_is_reported(model):
    variables = {**model.variables, "normalization": {**model.variables["normalization"]}}
    variables["normalization"]["scale"] = np.nan * np.asarray(variables["normalization"]["scale"])
    md = JaxMD(ForceField(model.potential, variables, model.elements), ethanol(300.0), "nve", timestep_fs=0.5)
    with pytest.raises(FloatingPointError, match="blew up"):
        md.run(20, interval=10)
    assert md.step == 0


# -- CLI -------------------------------------------------------------------------------------------


@pytest.fixture
def run_dir():
    """The trained EMT model saved as a run directory (one per test process)."""
    from so3krates.md.testing import emt_run_dir

    return emt_run_dir()


@pytest.mark.parametrize(("engine", "ensemble"), [("jax", "nve"), ("ase", "langevin")])
def test_cli_md_writes_trajectory_and_log(run_dir, tmp_path, capsys, engine, ensemble):
    from so3krates.cli.main import main

    structure = tmp_path / "start.extxyz"
    emt_structure("CH3CH2OH").write(structure)
    out = tmp_path / "traj.extxyz"
    log = tmp_path / "md.log"
    argv = ["md", "--model", str(run_dir), "--structure", str(structure), "--ensemble", ensemble]
    argv += ["--temperature", "300", "--timestep", "0.5", "--steps", "40", "--interval", "10"]
    argv += ["--out", str(out), "--log", str(log), "--engine", engine, "--seed", "3", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "steps/s" in printed and "ns/day" in printed

    import ase.io

    frames = ase.io.read(out, index=":")
    assert len(frames) == 5  # steps 0, 10, ..., 40
    assert [f.info["step"] for f in frames] == [0, 10, 20, 30, 40]
    assert frames[-1].get_forces().shape == (9, 3) and np.isfinite(frames[-1].get_potential_energy())
    columns = read_log(log)
    assert columns["step"] == [0, 10, 20, 30, 40]
    assert columns["time_ps"][-1] == pytest.approx(0.02)
    np.testing.assert_allclose(columns["etot_eV"], np.add(columns["epot_eV"], columns["ekin_eV"]), atol=1e-6)
    assert columns["epot_eV"][-1] == pytest.approx(frames[-1].get_potential_energy(), abs=1e-6)


def test_cli_md_refuses_bad_input(run_dir, tmp_path, capsys):
    from so3krates.cli.main import main

    structure = tmp_path / "start.extxyz"
    atoms = emt_structure("CH3CH2OH")
    atoms.numbers[0] = 7
    atoms.write(structure)
    argv = ["md", "--model", str(run_dir), "--structure", str(structure), "--steps", "5"]
    argv += ["--out", str(tmp_path / "t.extxyz"), "--no-progress"]
    assert main(argv) == 2
    assert "not trained on" in capsys.readouterr().err
    assert main(["md", "--model", str(run_dir), "--structure", str(tmp_path / "missing.xyz"), "--steps", "5"]) == 2
    assert main(["md", "--model", str(tmp_path / "no-run"), "--structure", str(structure), "--steps", "5"]) == 2


@pytest.mark.slow
def test_killed_md_keeps_its_frames(run_dir, tmp_path):
    """SIGKILL mid-run: every frame and log line written so far is complete and readable."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import ase.io

    structure = tmp_path / "start.extxyz"
    emt_structure("CH3CH2OH").write(structure)
    out, log = tmp_path / "traj.extxyz", tmp_path / "md.log"
    argv = [sys.executable, "-m", "so3krates.cli.main", "md", "--model", str(run_dir), "--structure", str(structure)]
    argv += ["--steps", "100000000", "--interval", "5", "--out", str(out), "--log", str(log), "--no-progress"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            if out.exists() and out.read_text().count("Properties=") >= 4:
                break
            time.sleep(0.5)
        assert process.poll() is None, process.stderr.read().decode()
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
        process.stderr.close()
    frames = ase.io.read(out, index=":")
    columns = read_log(log)
    assert len(frames) >= 4
    assert len(columns["step"]) >= len(frames) - 1  # the log line follows its frame
    assert all(np.isfinite(f.get_potential_energy()) for f in frames)


# -- the integrators alone (jax-md style API), on harmonic wells: fast and with exact answers ------------


def harmonic(positions, neighbours, k=1.0):  # noqa: ANN001, ANN201
    """E = ½ k Σ|x|² (eV, Å): independent 3D oscillators; ``neighbours`` unused."""
    return 0.5 * k * (positions**2).sum(), -k * positions


def test_integrators_on_harmonic_wells():
    import jax
    import jax.numpy as jnp

    from so3krates.md import baoab_langevin, bussi, temperature, velocity_verlet

    n, dt = 2000, 1.0 * units.fs
    masses = jnp.full(n, 12.0)
    key = jax.random.PRNGKey(0)
    x0 = jax.random.normal(key, (n, 3)) * 0.1

    init_fn, step_fn = velocity_verlet(harmonic, dt)
    state = init_fn(key, x0, masses, None, temperature_K=300.0)
    e0 = state.energy + 0.5 * jnp.sum(state.momenta**2 / 12.0)
    state = jax.lax.fori_loop(0, 500, lambda _, s: step_fn(s, None), state)
    e1 = state.energy + 0.5 * jnp.sum(state.momenta**2 / 12.0)
    assert abs(float(e1 - e0)) / n < 1e-4  # ω dt ≈ 0.03: energy error O((ω dt)²) per oscillator
    assert int(state.step) == 500

    for make in (
        lambda: baoab_langevin(harmonic, dt, 300.0, friction=0.05 / units.fs),
        lambda: bussi(harmonic, dt, 300.0, tau=20 * units.fs),
    ):
        init_fn, step_fn = make()
        state = init_fn(key, x0, masses, None, temperature_K=100.0)

        def body(carry, _, step_fn=step_fn):  # noqa: ANN001, ANN202
            s = step_fn(carry, None)
            return s, (temperature(s.momenta, s.masses), s.energy)

        state, _ = jax.lax.scan(body, state, None, length=300)  # equilibrate
        state, (temps, potential) = jax.lax.scan(body, state, None, length=1000)
        # 6000 degrees of freedom: the kinetic temperature and ⟨E_pot⟩ = (3n/2) k_B T are sharp.
        assert float(temps.mean()) == pytest.approx(300.0, rel=0.02)
        assert float(potential.mean()) == pytest.approx(1.5 * n * units.kB * 300.0, rel=0.03)


def test_jax_engine_refuses_constraints(model):
    from ase.constraints import FixAtoms

    atoms = ethanol(300.0)
    atoms.set_constraint(FixAtoms([0]))
    with pytest.raises(ValueError, match="constraints"):
        JaxMD(model, atoms)
