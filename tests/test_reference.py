"""Reference data generation: xTB labels, Langevin sampling, structures, ``so3krates generate``."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.io import read, write

from so3krates.cli.generate import parse_angles
from so3krates.cli.main import main
from so3krates.data import read_frames
from so3krates.reference import cumulene, label, rotor_torsion, sample_md, set_rotor_torsion, torsion_scan
from so3krates.reference.structures import CC_BOND, CH_BOND, HCH_ANGLE, from_smiles

HAVE_RDKIT = importlib.util.find_spec("rdkit") is not None
needs_rdkit = pytest.mark.skipif(not HAVE_RDKIT, reason="RDKit not installed (pip install so3krates[smiles])")


def water() -> Atoms:
    atoms = molecule("H2O")
    atoms.rattle(0.02, seed=3)
    return atoms


def test_sample_md_api_and_finite_difference_forces():
    seen = []
    frames = sample_md(
        water(),
        temperature=300.0,
        n_frames=3,
        stride=2,
        equilibration_steps=4,
        seed=1,
        progress=False,
        callback=seen.append,
    )
    assert len(frames) == 3 and seen == frames
    positions = [f.positions.copy() for f in frames]
    assert not np.allclose(positions[0], positions[1])  # the dynamics moved
    for f in frames:
        assert np.isfinite(f.get_potential_energy()) and f.get_forces().shape == (3, 3)
    # Same seed, same trajectory.
    again = sample_md(water(), 300.0, 3, 2, equilibration_steps=4, seed=1, progress=False)
    np.testing.assert_allclose(again[-1].positions, frames[-1].positions, atol=1e-10)
    # Forces are minus the gradient of the xTB energy (central differences on one frame).
    frame, h = frames[-1], 1e-3
    fd = np.zeros((3, 3))
    for i in range(3):
        for k in range(3):
            plus, minus = frame.copy(), frame.copy()
            plus.positions[i, k] += h
            minus.positions[i, k] -= h
            e_plus, e_minus = (a.get_potential_energy() for a in label([plus, minus]))
            fd[i, k] = -(e_plus - e_minus) / (2 * h)
    np.testing.assert_allclose(frame.get_forces(), fd, atol=2e-3)


def test_generate_cli_md_writes_loadable_frames(tmp_path):
    start, out = tmp_path / "water.xyz", tmp_path / "water.extxyz"
    write(start, water())
    rc = main(
        [
            "generate",
            "--structure",
            str(start),
            "--method",
            "gfn2",
            "--temperature",
            "300",
            "--frames",
            "3",
            "--stride",
            "2",
            "--equilibration",
            "4",
            "--seed",
            "2",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    frames = read_frames(out, require_energy=True, require_forces=True)
    assert len(frames.positions) == 3 and frames.energy.shape == (3,)
    # The file holds the xTB labels of its own geometries.
    again = label(read(out, index=":"))
    np.testing.assert_allclose(frames.energy, [a.get_potential_energy() for a in again], atol=1e-6)
    np.testing.assert_allclose(frames.forces[1], again[1].get_forces(), atol=2e-4)  # SCF restart noise
    # An existing output is not clobbered without --overwrite.
    assert (
        main(["generate", "--structure", str(start), "--temperature", "300", "--frames", "1", "--out", str(out)]) == 2
    )


def test_generate_cli_label_mode_and_gzip(tmp_path, capsys):
    structures = [water(), molecule("CH4")]
    src, out = tmp_path / "in.xyz", tmp_path / "labelled.extxyz.gz"
    write(src, structures)
    assert main(["generate", "--label", str(src), "--no-progress", "--compact", "--out", str(out)]) == 0
    assert out.exists() and not (tmp_path / "labelled.extxyz").exists()
    frames = read_frames(out, require_energy=True, require_forces=True)
    expected = label(structures)
    np.testing.assert_allclose(frames.energy, [a.get_potential_energy() for a in expected], atol=1e-6)
    np.testing.assert_allclose(frames.forces[1], expected[1].get_forces(), atol=1e-4)
    assert "2 frames" in capsys.readouterr().err


def test_cumulene_geometry_and_rotor():
    for n in range(3, 10):
        atoms = cumulene(n)
        assert atoms.get_chemical_formula() == f"C{n}H4"
        pos = atoms.positions
        np.testing.assert_allclose(np.linalg.norm(np.diff(pos[:n], axis=0), axis=1), CC_BOND)
        np.testing.assert_allclose(pos[:n, :2], 0.0, atol=1e-12)  # chain along z
        for c, (h1, h2) in ((0, (n, n + 1)), (n - 1, (n + 2, n + 3))):
            np.testing.assert_allclose(atoms.get_distances(c, [h1, h2]), CH_BOND)
            assert atoms.get_angle(h1, c, h2) == pytest.approx(HCH_ANGLE)
        assert rotor_torsion(atoms) == pytest.approx(0.0, abs=1e-9)
    atoms = cumulene(5)
    before = atoms.positions.copy()
    set_rotor_torsion(atoms, 90.0)
    assert rotor_torsion(atoms) == pytest.approx(90.0)
    np.testing.assert_allclose(atoms.positions[: 5 + 2], before[: 5 + 2])  # carbons and first CH2 fixed
    np.testing.assert_allclose(atoms.get_all_distances()[7:, 4], CH_BOND)  # rigid rotation
    assert atoms.get_angle(7, 4, 8) == pytest.approx(HCH_ANGLE)
    with pytest.raises(ValueError, match="3..9 carbons"):
        cumulene(10)


def test_torsion_scan_c3_allene_prefers_perpendicular(tmp_path):
    frames = torsion_scan(3, [0.0, 90.0], noise=0.01, samples_per_angle=2, seed=4)
    assert [f.info["torsion_deg"] for f in frames] == [0.0, 0.0, 90.0, 90.0]
    assert not np.allclose(frames[0].positions, frames[1].positions)
    out = tmp_path / "allene.extxyz"
    assert main(["generate", "--torsion-scan", "3", "--angles", "0:90:90", "--no-progress", "--out", str(out)]) == 0
    scan = read(out, index=":")
    assert [a.info["torsion_deg"] for a in scan] == [0.0, 90.0]
    e0, e90 = (a.get_potential_energy() for a in scan)
    assert e90 < e0 - 1.0  # allene: perpendicular CH2 planes, planar is ~2 eV higher in GFN2-xTB
    assert parse_angles("0:180:45") == [0.0, 45.0, 90.0, 135.0, 180.0]
    with pytest.raises(ValueError, match="START:STOP:STEP"):
        parse_angles("0:180:-5")


def test_bad_element_and_missing_file(tmp_path, capsys):
    bad = Atoms("OFm", positions=[[0, 0, 0], [0, 0, 2.0]])
    with pytest.raises(ValueError, match=r"Fm \(Z=100\)"):
        label([water(), bad])
    src, out = tmp_path / "bad.xyz", tmp_path / "out.extxyz"
    write(src, bad)
    assert main(["generate", "--label", str(src), "--out", str(out)]) == 2
    assert "Z = 1..86" in capsys.readouterr().err and not out.exists()
    assert (
        main(
            [
                "generate",
                "--structure",
                str(tmp_path / "nope.xyz"),
                "--temperature",
                "300",
                "--frames",
                "1",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "no such structure file" in capsys.readouterr().err


def test_scf_failure_names_the_frame():
    with pytest.raises(ValueError, match="frame 0: xTB calculation failed.*converge"):
        label([water()], max_iterations=1)


@needs_rdkit
def test_smiles_structure_and_cli(tmp_path):
    atoms = from_smiles("CCO", seed=0)
    assert atoms.get_chemical_formula() == "C2H6O"
    assert atoms.get_all_distances()[np.triu_indices(9, 1)].min() > 0.9
    np.testing.assert_allclose(from_smiles("CCO", seed=0).positions, atoms.positions)
    out = tmp_path / "ethanol.extxyz"
    assert (
        main(
            [
                "generate",
                "--smiles",
                "CCO",
                "--temperature",
                "500",
                "--frames",
                "2",
                "--stride",
                "2",
                "--equilibration",
                "2",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert len(read_frames(out, require_forces=True).positions) == 2


@needs_rdkit
def test_bad_smiles(tmp_path, capsys):
    with pytest.raises(ValueError, match="cannot parse SMILES"):
        from_smiles("C1CC")
    assert (
        main(
            [
                "generate",
                "--smiles",
                "not-a-smiles((",
                "--temperature",
                "300",
                "--frames",
                "1",
                "--out",
                str(tmp_path / "x.extxyz"),
            ]
        )
        == 2
    )
    assert "cannot parse SMILES" in capsys.readouterr().err


def test_killed_run_keeps_written_frames(tmp_path, monkeypatch, capsys):
    import so3krates.reference.sampling as sampling

    real, calls = sampling._snapshot, []

    def snapshot_then_die(atoms):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # stands in for a killed run
        return real(atoms)

    monkeypatch.setattr(sampling, "_snapshot", snapshot_then_die)
    start, out = tmp_path / "water.xyz", tmp_path / "partial.extxyz"
    write(start, water())
    argv = ["generate", "--structure", str(start), "--temperature", "300", "--frames", "10", "--stride", "1"]
    assert main([*argv, "--equilibration", "0", "--no-progress", "--out", str(out)]) == 130  # as after Ctrl-C
    assert "so3krates generate: interrupted" in capsys.readouterr().err
    frames = read_frames(out, require_energy=True, require_forces=True)
    assert len(frames.positions) == 2


def test_smiles_without_rdkit_explains_the_extra(tmp_path, monkeypatch, capsys):
    import sys

    for mod in ("rdkit", "rdkit.Chem", "rdkit.Chem.AllChem"):
        monkeypatch.setitem(sys.modules, mod, None)  # import fails as if RDKit were not installed
    with pytest.raises(ImportError, match=r"pip install so3krates\[smiles\]"):
        from_smiles("CCO")
    argv = ["generate", "--smiles", "CCO", "--temperature", "300", "--frames", "1", "--out", str(tmp_path / "x.xyz")]
    assert main(argv) == 2
    assert "so3krates[smiles]" in capsys.readouterr().err


def test_cumulene_bond_geometry_options_and_linear_md():
    atoms = cumulene(4, 90.0, cc_bond=1.28, ch_bond=1.08, hch_angle=118.0)
    np.testing.assert_allclose(np.linalg.norm(np.diff(atoms.positions[:4], axis=0), axis=1), 1.28)
    np.testing.assert_allclose(atoms.get_distances(0, [4, 5]), 1.08)
    assert atoms.get_angle(4, 0, 5) == pytest.approx(118.0) and rotor_torsion(atoms) == pytest.approx(90.0)
    scan = torsion_scan(3, [0.0], cc_bond=1.30)
    assert scan[0].get_distance(0, 1) == pytest.approx(1.30)
    with pytest.raises(ValueError, match="bond lengths"):
        cumulene(3, cc_bond=-1.0)
    # An exactly linear carbon chain has a vanishing moment of inertia: MD must not blow up there.
    frames = sample_md(cumulene(3, 90.0), 300.0, n_frames=1, stride=2, equilibration_steps=2, progress=False)
    assert np.isfinite(frames[0].positions).all() and np.abs(frames[0].positions).max() < 5.0
    with pytest.raises(ValueError, match="friction > 0"):
        sample_md(water(), 300.0, 1, 1, friction=0.0, progress=False)
