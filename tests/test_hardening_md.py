"""Issue #19 for md, relax, evaluate and --structure: bad input and faults end in a clear message and a
documented exit code, never a traceback, and never cost the user a file (tests/cli_helpers.py).

The model is the session's tiny trained run (tests/test_train_helpers.py); six epochs make it a poor
potential, which is what the blow-up tests need. Bad input is refused before the model is loaded, so most
of these tests load nothing (a missing --model proves it).
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from tests.cli_helpers import assert_clean_error, cli
from tests.test_train_helpers import trained_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run(tmp_path_factory)[0]


def write(path: Path, atoms: Atoms | list[Atoms]) -> Path:
    ase.io.write(path, atoms, format="extxyz")
    return path


def water_box() -> Atoms:
    atoms = molecule("H2O")
    atoms.cell = np.eye(3) * 6.0
    atoms.pbc = True
    atoms.center()
    return atoms


def md_args(model: Path, structure: Path, out: Path, *extra: object) -> list[object]:
    return ["md", "--model", model, "--structure", structure, "--out", out, "--no-progress", *extra]


# -- item 1: a run that blows up stops with exit 3 and keeps what it wrote -------------------------------


@pytest.mark.parametrize("engine", ["jax", "ase"])
def test_md_that_blows_up_stops_with_exit_3_and_keeps_the_last_good_frame(run, tmp_path, capsys, engine):
    structure = write(tmp_path / "h2o.extxyz", molecule("H2O"))
    out = tmp_path / "md.extxyz"
    args = md_args(run, structure, out, "--steps", 200, "--timestep", 200, "--interval", 50, "--engine", engine)
    outcome = cli(args, capsys)
    assert_clean_error(outcome, "blew up at step 1", "temperature", "--max-temperature", "--timestep", code=3)
    assert str(out) in outcome.err
    frames = ase.io.read(out, index=":")  # readable: complete frames only
    assert [f.info["step"] for f in frames] == [0]  # the last good step, nothing after it
    log_lines = [line for line in out.with_suffix(".log").read_text().splitlines() if not line.startswith("#")]
    assert len(log_lines) == 1 and float(log_lines[0].split()[-1]) < 5300


def test_a_blow_up_after_append_names_the_step_as_the_files_count_it(run, tmp_path, capsys):
    out = tmp_path / "md.extxyz"
    first = md_args(run, write(tmp_path / "h2o.extxyz", molecule("H2O")), out, "--steps", 4, "--interval", 2)
    assert cli(first, capsys).code == 0
    outcome = cli(md_args(run, out, out, "--append", "--steps", 50, "--timestep", 200), capsys)
    assert_clean_error(outcome, "blew up at step 5", "up to step 4", code=3)  # the files' steps 0, 2, 4
    assert [f.info["step"] for f in ase.io.read(out, index=":")] == [0, 2, 4]


def test_md_nan_is_exit_3_and_the_last_good_step_is_written(run, tmp_path, capsys):
    """A time step so large that positions overflow float32: non-finite numbers, the same exit as a limit."""
    structure = write(tmp_path / "h2o.extxyz", molecule("H2O"))
    out = tmp_path / "md.extxyz"
    outcome = cli(md_args(run, structure, out, "--steps", 20, "--timestep", 1e40), capsys)
    assert_clean_error(outcome, "blew up at step 1", "non-finite", "--timestep", code=3)
    assert [f.info["step"] for f in ase.io.read(out, index=":")] == [0]


def test_limits_stop_the_jax_engine_inside_a_chunk_at_the_first_bad_step(run):
    """Force and distance limits, checked in the compiled chunk: the state is the step before the crossing."""
    from so3krates.md import DynamicsBlewUp, JaxMD, Limits, initial_velocities, load_force_field

    model = load_force_field(run)
    atoms = molecule("H2O")
    initial_velocities(atoms, 300.0, seed=1)
    md = JaxMD(model, atoms, "nve", timestep_fs=0.5)
    forces = [0.0]  # the largest force after steps 1, 2, ... (step 0 is not checked: the run starts there)

    def largest(m: JaxMD) -> None:
        forces.append(float(np.linalg.norm(m.atoms().get_forces(), axis=1).max()))

    md.run(20, interval=1, callback=largest)
    # The same start with a force limit that step k crosses first (same settings: the compiled chunk is reused).
    k = int(np.argmax(forces))
    limit = 0.5 * (max(forces[:k]) + forces[k]) if k > 1 else 0.99 * forces[k]
    md = JaxMD(model, atoms, "nve", timestep_fs=0.5, limits=Limits(max_force=limit))
    with pytest.raises(DynamicsBlewUp, match=f"blew up at step {k}: a force of") as caught:
        md.run(20, interval=10)
    assert (caught.value.step, caught.value.quantity, caught.value.flag) == (k, "force", "--max-force")
    assert md.step == k - 1
    closest = min(atoms.get_distance(0, 1), atoms.get_distance(0, 2))
    md = JaxMD(model, atoms, "nve", timestep_fs=0.5, limits=Limits(min_distance=closest + 0.5))
    with pytest.raises(DynamicsBlewUp, match="closer than the limit") as caught:
        md.run(5, interval=5)
    assert caught.value.step == 1 and md.step == 0


def test_md_refuses_a_start_beyond_a_limit_and_a_single_atom(run, tmp_path, capsys):
    structure = write(tmp_path / "h2o.extxyz", molecule("H2O"))
    out = tmp_path / "md.extxyz"
    outcome = cli(md_args(run, structure, out, "--steps", 5, "--min-distance", 1.2), capsys)
    assert_clean_error(outcome, str(structure), "starting structure", "--min-distance")
    assert not out.exists()  # nothing written by a run that never started
    single = write(tmp_path / "h.extxyz", Atoms("H", positions=[[0.0, 0.0, 0.0]]))
    outcome = cli(md_args(tmp_path / "no-run", single, out, "--steps", 5), capsys)
    assert_clean_error(outcome, "--structure", str(single), "1 atom", "at least 2")


def test_relax_of_a_single_atom_is_converged_at_once(run, tmp_path, capsys):
    single = write(tmp_path / "h.extxyz", Atoms("H", positions=[[0.0, 0.0, 0.0]]))
    out = tmp_path / "relaxed.extxyz"
    outcome = cli(["relax", "--model", run, "--structure", single, "--out", out, "--log", tmp_path / "opt.log"], capsys)
    assert outcome.code == 0, outcome.err
    assert "converged after 0" in outcome.out
    assert np.allclose(ase.io.read(out).get_forces(), 0.0)


# -- item 2: the stress of periodic frames; item 3: --append -------------------------------------------


def test_periodic_md_writes_the_models_stress_and_append_continues_the_run(run, tmp_path, capsys):
    from so3krates.calculator import So3kratesCalculator

    structure = write(tmp_path / "box.extxyz", water_box())
    out = tmp_path / "md.extxyz"
    common = ("--steps", 6, "--interval", 3, "--timestep", 0.1)
    assert cli(md_args(run, structure, out, *common), capsys).code == 0
    first = out.read_bytes()
    frames = ase.io.read(out, index=":")
    calculator = So3kratesCalculator(run)
    for frame in frames:
        expected = calculator.get_stress(frame.copy())
        np.testing.assert_allclose(frame.get_stress(), expected, atol=1e-6, rtol=1e-5)
        assert np.abs(expected).max() > 1e-4  # not a trivially zero stress

    # --append with the trajectory's own last frame: steps and times go on, that frame is not repeated.
    outcome = cli(md_args(run, out, out, *common, "--append", "--keep-velocities"), capsys)
    assert outcome.code == 0, outcome.err
    assert out.read_bytes().startswith(first)
    frames = ase.io.read(out, index=":")
    assert [f.info["step"] for f in frames] == [0, 3, 6, 9, 12]
    assert frames[-1].info["time_ps"] == pytest.approx(12 * 0.1 / 1000)
    log = out.with_suffix(".log").read_text().splitlines()
    assert sum(line.startswith("#") for line in log) == 1
    assert [int(line.split()[0]) for line in log[1:]] == [0, 3, 6, 9, 12]
    totals = [float(line.split()[4]) for line in log[1:]]
    assert np.ptp(totals) < 1e-3  # one continuous NVE run: the total energy carries on

    # --append from another structure would repeat the last step number: refused, both files untouched.
    before = (out.read_bytes(), out.with_suffix(".log").read_bytes())
    outcome = cli(md_args(run, structure, out, *common, "--append"), capsys)
    assert_clean_error(outcome, "--append", f"--structure {out}", "repeat the last step")
    assert (out.read_bytes(), out.with_suffix(".log").read_bytes()) == before


# -- item 3: outputs are never overwritten unasked ------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "flag"),
    [("md", "--out"), ("md", "--log"), ("relax", "--out"), ("relax", "--trajectory")],
)
def test_existing_outputs_are_refused_before_the_model_is_loaded(tmp_path, capsys, command, flag):
    structure = write(tmp_path / "h2o.extxyz", molecule("H2O"))
    existing = tmp_path / "earlier.txt"
    existing.write_bytes(b"an earlier result\n")
    model = tmp_path / "no-run"  # never loaded: the refusal comes first
    args = [command, "--model", model, "--structure", structure, flag, existing]
    if command == "md":
        args += ["--steps", 5, "--no-progress"] + (["--out", tmp_path / "new.extxyz"] if flag == "--log" else [])
    else:
        args += ["--out", tmp_path / "new.extxyz"] if flag == "--trajectory" else []
    outcome = cli(args, capsys)
    assert_clean_error(outcome, flag, str(existing), "exists", "--overwrite")
    assert existing.read_bytes() == b"an earlier result\n"


def test_overwrite_replaces_an_output(run, tmp_path, capsys):
    single = write(tmp_path / "h.extxyz", Atoms("H", positions=[[0.0, 0.0, 0.0]]))
    out = tmp_path / "relaxed.extxyz"
    out.write_text("old\n")
    outcome = cli(["relax", "--model", run, "--structure", single, "--out", out, "--overwrite", "--log", "-"], capsys)
    assert outcome.code == 0, outcome.err
    assert len(ase.io.read(out)) == 1


def test_md_append_and_overwrite_exclude_each_other(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        cli(["md", "--model", "m", "--structure", "s", "--steps", 1, "--append", "--overwrite"], capsys)
    assert caught.value.code == 2


# -- item 4: bad input, with the flag and the file named -------------------------------------------------


def bad_inputs(tmp_path: Path) -> dict[str, tuple[list[object], tuple[str, ...]]]:
    """name -> (md arguments after --structure FILE, fragments of the message)."""
    water = write(tmp_path / "h2o.extxyz", molecule("H2O"))
    garbage = tmp_path / "garbage.xyz"
    garbage.write_text("this is not\nan xyz file\n")
    unknown = tmp_path / "structure.unknownsuffix"
    unknown.write_text("1\n\nH 0 0 0\n")
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    return {
        "negative temperature": ([water, "--temperature", -5], ("--temperature", "-5")),
        "zero-kelvin bath": ([water, "--ensemble", "langevin", "--temperature", 0], ("--temperature", "langevin")),
        "no momenta to keep": ([water, "--keep-velocities"], ("--keep-velocities", str(water), "no momenta")),
        "index past the end": ([water, "--index", 5], ("--index 5", str(water), "1 frame")),
        "index not a number": ([water, "--index", "last"], ("--index last", "not a frame number")),
        "several frames": ([water, "--index", "0:2"], ("--index 0:2", "several frames")),
        "unreadable file": ([garbage], ("--structure", str(garbage), "cannot read")),
        "unknown format": ([unknown], ("--structure", str(unknown), "format")),
        "empty file": ([empty], ("--structure", str(empty), "empty")),
        "negative limit": ([water, "--max-force", -1], ("--max-force", "-1")),
        "same out and log": ([water, "--log", tmp_path / "md.extxyz"], ("--out", "--log", "same file")),
    }


@pytest.mark.parametrize(
    "case",
    [
        "negative temperature",
        "zero-kelvin bath",
        "no momenta to keep",
        "index past the end",
        "index not a number",
        "several frames",
        "unreadable file",
        "unknown format",
        "empty file",
        "negative limit",
        "same out and log",
    ],
)
def test_md_bad_input_is_a_clean_error(tmp_path, capsys, case):
    structure, *rest = bad_inputs(tmp_path)[case][0]
    fragments = bad_inputs(tmp_path)[case][1]
    out = tmp_path / "md.extxyz"
    outcome = cli(md_args(tmp_path / "no-run", structure, out, "--steps", 5, *rest), capsys)
    assert_clean_error(outcome, *fragments)
    assert not out.exists()


@pytest.mark.parametrize("case", ["index past the end", "unreadable file"])
def test_relax_bad_structure_is_a_clean_error(tmp_path, capsys, case):
    args, fragments = bad_inputs(tmp_path)[case]
    outcome = cli(["relax", "--model", tmp_path / "no-run", "--structure", *args], capsys)
    assert_clean_error(outcome, *fragments)


@pytest.mark.parametrize("command", ["md", "relax"])
def test_unknown_elements_and_overlapping_atoms_are_clean_errors(run, tmp_path, capsys, command):
    silicon = molecule("H2O")
    silicon.numbers[0] = 14
    overlapping = molecule("H2O")
    overlapping.positions[2] = overlapping.positions[1] + [0.05, 0.0, 0.0]
    for name, atoms, fragments in [
        ("si.extxyz", silicon, ("Si", "not trained on")),
        ("overlap.extxyz", overlapping, ("0.05 Å apart", "overlapping")),
    ]:
        out = tmp_path / f"out-{name}"
        args = [command, "--model", run, "--structure", write(tmp_path / name, atoms), "--out", out]
        args += ["--steps", 5, "--no-progress"] if command == "md" else ["--log", "-"]
        assert_clean_error(cli(args, capsys), *fragments)
        assert not out.exists() and not out.with_suffix(".log").exists()  # a retry is not refused


# -- evaluate: the message names what was written -------------------------------------------------------


def test_evaluate_no_plot_names_what_it_wrote(run, tmp_path, capsys):
    out = tmp_path / "evaluation"
    outcome = cli(["evaluate", "--model", run, "--out", out, "--no-plot"], capsys)
    assert outcome.code == 0, outcome.err
    assert "metrics.json and predictions.npz written to" in outcome.out
    assert "parity plot written" not in outcome.out and "no parity plot: --no-plot" in outcome.out
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "predictions.npz"]
