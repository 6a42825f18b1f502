"""The on-disk streaming format: round trip against the in-memory data layer, prefetching, ``so3krates prepare``."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from so3krates.cli.main import main
from so3krates.data import Frames, read_frames
from so3krates.data.stream import StreamDataset, is_stream, write_stream


def _frames(m: int = 7, seed: int = 0, stress: bool = False) -> Frames:
    rng = np.random.default_rng(seed)
    sizes = [3 + k % 4 for k in range(m)]
    positions = [np.arange(n)[:, None] * np.array([1.1, 0.0, 0.0]) + rng.normal(0, 0.05, (n, 3)) for n in sizes]
    return Frames(
        positions=positions,
        numbers=[rng.integers(1, 9, n) for n in sizes],
        energy=rng.normal(size=m),
        forces=[rng.normal(size=(n, 3)) for n in sizes],
        cell=np.zeros((m, 3, 3)),
        pbc=np.zeros((m, 3), bool),
        stress=rng.normal(size=(m, 3, 3)) if stress else None,
        source="synthetic",
    )


def _assert_same(streamed: Frames, frames: Frames) -> None:
    assert len(streamed) == len(frames)
    for i in range(len(frames)):
        np.testing.assert_array_equal(streamed.positions[i], frames.positions[i])
        np.testing.assert_array_equal(streamed.numbers[i], frames.numbers[i])
        np.testing.assert_array_equal(streamed.forces[i], frames.forces[i])
    np.testing.assert_array_equal(streamed.energy, frames.energy)
    np.testing.assert_array_equal(streamed.cell, frames.cell)
    np.testing.assert_array_equal(streamed.pbc, frames.pbc)
    if frames.stress is None:
        assert streamed.stress is None
    else:
        np.testing.assert_array_equal(streamed.stress, frames.stress)


def test_round_trip_in_chunks_matches_the_in_memory_frames(tmp_path):
    frames = _frames(11, stress=True)
    out = write_stream((frames.subset(range(k, min(k + 4, 11))) for k in range(0, 11, 4)), tmp_path / "s", False)
    assert is_stream(out) and not (tmp_path / "s.partial").exists()
    data = StreamDataset(out)
    assert len(data) == 11 and data.meta["labels"] == ["energy", "forces", "stress"]
    np.testing.assert_array_equal(data.n_atoms, frames.n_atoms)
    assert data.elements == frames.elements
    _assert_same(data.to_frames(), frames)
    _assert_same(data, frames)  # the dataset itself indexes like Frames
    idx = [5, 0, 5, -1]
    _assert_same(data.subset(idx), frames.subset(idx))
    f = data.frame(-1)
    np.testing.assert_array_equal(f.positions, frames.positions[-1])
    assert f.energy == frames.energy[-1] and f.numbers.dtype == np.int64
    with pytest.raises(IndexError):
        data.frame(11)


def test_prefetch_yields_the_batches_in_order_as_frames_or_graphs(tmp_path):
    frames = _frames(9)
    data = StreamDataset(write_stream(frames, tmp_path / "s", progress=False))
    batches = [np.array([3, 1]), np.array([0, 8, 2]), np.array([7])]
    got = list(data.prefetch(batches, depth=1))
    assert [len(b) for b in got] == [2, 3, 1]
    for idx, batch in zip(batches, got, strict=True):
        for i, f in zip(idx, batch, strict=True):
            np.testing.assert_array_equal(f.positions, frames.positions[i])
            np.testing.assert_array_equal(f.forces, frames.forces[i])
            assert f.energy == frames.energy[i]
    graphs = list(data.prefetch(batches, r_cut=2.0))
    g = graphs[1][0]
    np.testing.assert_array_equal(g.positions, frames.positions[0])
    assert g.n_edges > 0 and g.energy == frames.energy[0]
    with data.prefetch(batches * 100, depth=2) as it:  # stopping early ends the thread
        next(it)
    assert not it._thread.is_alive()


def test_prefetch_errors_reach_the_consumer(tmp_path):
    data = StreamDataset(write_stream(_frames(3), tmp_path / "s", progress=False))
    it = data.prefetch([[0], [99]])
    assert len(next(it)) == 1
    with pytest.raises(IndexError):
        next(it)


def test_refuses_bad_targets_and_inputs(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ValueError, match="not an empty directory"):
        write_stream(_frames(2), tmp_path / "full", progress=False)
    with pytest.raises(FileNotFoundError):
        StreamDataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a so3krates stream"):
        StreamDataset(tmp_path / "full")
    no_forces = _frames(2)
    no_forces.forces = None
    with pytest.raises(ValueError, match="labels"):
        write_stream([_frames(2), no_forces], tmp_path / "mixed", progress=False)


def test_prepare_command_end_to_end(tmp_path, capsys):
    frames = _frames(6)
    atoms = []
    for i in range(len(frames)):
        a = Atoms(numbers=frames.numbers[i], positions=frames.positions[i] / 0.529177210903)  # Bohr
        a.calc = SinglePointCalculator(a, energy=frames.energy[i] * 23.060547830619, forces=frames.forces[i])
        atoms.append(a)
    write(tmp_path / "a.extxyz", atoms[:4])
    write(tmp_path / "b.extxyz", atoms[4:])
    out = tmp_path / "data.stream"
    code = main(
        [
            "prepare",
            "--data",
            str(tmp_path / "a.extxyz"),
            str(tmp_path / "b.extxyz"),
            "--out",
            str(out),
            "--energy-unit",
            "kcal/mol",
            "--length-unit",
            "Bohr",
            "--no-progress",
        ]
    )
    assert code == 0 and "6 frames" in capsys.readouterr().out
    reference = Frames.concatenate(
        [
            read_frames(tmp_path / "a.extxyz", energy_unit="kcal/mol", length_unit="Bohr"),
            read_frames(tmp_path / "b.extxyz", energy_unit="kcal/mol", length_unit="Bohr"),
        ]
    )
    data = StreamDataset(out)
    _assert_same(data.to_frames(), reference)
    np.testing.assert_allclose(data.to_frames().positions[0], frames.positions[0], atol=1e-6)
    assert main(["prepare", "--data", str(tmp_path / "a.extxyz"), "--out", str(out), "--no-progress"]) == 2


def test_the_training_data_helpers_accept_a_stream(tmp_path):
    from so3krates.train.pipeline import build_graphs, elements_of

    frames = _frames(5)
    data = StreamDataset(write_stream(frames, tmp_path / "s", progress=False))
    assert elements_of(data, [0, 3]) == elements_of(frames, [0, 3])
    for a, b in zip(build_graphs(data, [4, 1], 2.0), build_graphs(frames, [4, 1], 2.0), strict=True):
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.edge_j, b.edge_j)
        np.testing.assert_array_equal(a.forces, b.forces)
        assert a.energy == b.energy
