"""Issue #19, data input: bad or surprising data files through the ``so3krates`` command give one clear
message (file, frame, line, key or flag, the problem) and exit 2 before any training, or, for labels in
implausible units, one readable warning line. No test here trains: the errors come before the first step.
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import units

from so3krates.data.stream import StreamDataset
from tests.cli_helpers import assert_clean_error, cli
from tests.test_train_helpers import emt_dataset, tiny_yaml

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

GOOD = """3
Properties=species:S:1:pos:R:3:forces:R:3 energy=-1.0
O 0.0 0.0 0.0 0.1 0.0 0.0
H 0.96 0.0 0.0 -0.1 0.0 0.0
H 0.0 0.96 0.0 0.0 0.1 0.0
"""


def _train(tmp_path: Path, data: Path, *flags: str) -> list[str]:
    config = tiny_yaml(tmp_path / "tiny.yaml", n_train=2, n_valid=1, max_epochs=1)
    return ["train", "--data", data, "--out", tmp_path / "run", "--config", config, *flags]


# -- item 1: npz in the authors' (mlff) convention; keys that are not understood ------------------------


def _mlff_file(path: Path, **extra: np.ndarray) -> Path:
    """Two frames of different sizes padded with Z = 0, a periodic cell under 'unit_cell', mlff's extra keys."""
    rng = np.random.default_rng(0)
    z = np.array([[8, 1, 1, 0], [6, 1, 1, 1]])
    pos = np.array(
        [[[0, 0, 0], [0.96, 0, 0], [0, 0.96, 0], [0, 0, 0]], [[0, 0, 0], [1.09, 0, 0], [0, 1.09, 0], [0, 0, 1.09]]]
    )
    np.savez(
        path, R=pos + 2.0, z=z, E=rng.normal(size=(2, 1)), F=rng.normal(size=(2, 4, 3)) * 0.1,
        unit_cell=np.stack([np.eye(3) * 6.0] * 2), pbc=np.ones((2, 3), bool),
        idx_i=np.zeros((2, 6), np.int64), idx_j=np.ones((2, 6), np.int64), Q=np.zeros(2), q=np.zeros((2, 4)),
        **extra,
    )  # fmt: skip
    return path


def test_mlff_periodic_npz_is_read_periodic_with_padding(tmp_path, capsys):
    data = _mlff_file(tmp_path / "mlff.npz")
    out = cli(["prepare", "--data", data, "--out", tmp_path / "stream", "--no-progress"], capsys)
    assert out.code == 0, out.err
    stream = StreamDataset(tmp_path / "stream")
    assert stream.n_atoms.tolist() == [3, 4]  # Z = 0 padding dropped
    assert np.asarray(stream.pbc).all()  # 'unit_cell' is the cell: periodic, not a molecule
    np.testing.assert_allclose(stream.frame(1).cell, np.eye(3) * 6.0)


def test_unknown_npz_key_is_refused_naming_it(tmp_path, capsys):
    data = _mlff_file(tmp_path / "extra.npz", dipole=np.zeros((2, 3)))
    outcome = cli(_train(tmp_path, data), capsys)
    assert_clean_error(outcome, "extra.npz", "['dipole'] not understood", "understood keys:", "--energy-key")
    assert not (tmp_path / "run" / "metrics.csv").exists()


# -- item 2: the file's own units (sGDML e_unit / r_unit) ------------------------------------------------


def _sgdml_file(path: Path, e_unit: str = "kcal/mol", r_unit: str = "Ang") -> Path:
    rng = np.random.default_rng(1)
    pos = np.array([[0, 0, 0], [0.96, 0, 0], [0, 0.96, 0]]) + rng.normal(scale=0.02, size=(6, 3, 3))
    np.savez(
        path, R=pos, z=np.array([8, 1, 1]), E=rng.normal(size=6), F=rng.normal(size=(6, 3, 3)),
        e_unit=np.array(e_unit), r_unit=np.array(r_unit), type=np.array("d"), name=np.array("water"),
        theory=np.array("unknown"), md5=np.array("0"), E_mean=np.array(0.0), F_var=np.array(1.0),
    )  # fmt: skip
    return path


def test_file_unit_contradicting_the_flag_is_an_error(tmp_path, capsys):
    data = _sgdml_file(tmp_path / "water.npz")
    outcome = cli(_train(tmp_path, data, "--energy-unit", "eV"), capsys)
    assert_clean_error(outcome, "water.npz", "energy unit eV was given (--energy-unit", "'e_unit' says 'kcal/mol'")


def test_file_unit_is_used_and_said_when_no_flag(tmp_path, capsys):
    data = _sgdml_file(tmp_path / "water.npz")
    out = cli(["prepare", "--data", data, "--out", tmp_path / "stream", "--no-progress"], capsys)
    assert out.code == 0, out.err
    assert "energy unit 'kcal/mol', from the file's key 'e_unit'" in out.out
    energy = np.load(data)["E"]
    np.testing.assert_allclose(StreamDataset(tmp_path / "stream").energy, energy * units.kcal / units.mol)


# -- item 3: labels in implausible units warn, in one line -------------------------------------------------


def test_units_warning_is_one_readable_line_through_train(tmp_path, capsys):
    frames = ase.io.read(emt_dataset(tmp_path / "emt.extxyz", n_frames=4), index=":")
    for a in frames:  # forces of thousands of eV/Å: a smaller unit read as eV/Å
        a.calc.results["forces"] = a.calc.results["forces"] * 1000.0
    kcal = tmp_path / "big_forces.extxyz"
    ase.io.write(kcal, frames, format="extxyz")
    # --n-train beyond the 4 frames stops the command after reading, before any training
    outcome = cli(_train(tmp_path, kcal, "--n-train", "100"), capsys)
    assert outcome.code == 2
    warning = [line for line in outcome.err.splitlines() if "warning" in line]
    assert len(warning) == 1, outcome.err
    assert warning[0].startswith("so3krates train: warning: ") and "forces are implausibly large" in warning[0]
    assert "warnings.warn" not in outcome.err and "UnitsWarning" not in outcome.err


# -- item 4: extended XYZ errors name the frame and the line ----------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "fragments"),
    [
        ("float", GOOD * 2 + GOOD.replace("0.96 0.0 0.0 -0.1", "0.96 1.2.3 0.0 -0.1"), ["frame 2 (line 14)", "1.2.3"]),
        ("truncated", GOOD * 2 + "".join(GOOD.splitlines(True)[:4]), ["frame 2 (line 11)", "3 atoms", "ends after 2"]),
        ("count", GOOD + GOOD.replace("3\n", "three\n", 1), ["frame 1 (line 6)", "number of atoms", "'three'"]),
        ("columns", GOOD + GOOD.replace("-0.1 0.0 0.0\n", "-0.1 0.0\n"), ["frame 1 (line 9)", "6 columns"]),
        ("blank", GOOD + "\n" + GOOD, ["frame 1 (line 7)", "blank line", "lost"]),
        ("energy", GOOD + GOOD.replace(" energy=-1.0", ""), ["frame 1 (line 6) has no energy"]),
    ],
)  # fmt: skip
def test_bad_extxyz_names_frame_and_line(tmp_path, capsys, name, text, fragments):
    data = tmp_path / f"{name}.extxyz"
    data.write_text(text)
    outcome = cli(_train(tmp_path, data), capsys)
    assert_clean_error(outcome, f"{name}.extxyz: ", *fragments)
