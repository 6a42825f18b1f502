"""Bundled GFN2-xTB datasets: present, loadable with the data layer, with the stated sizes and labels."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from so3krates import datasets
from so3krates.data import read_frames

# name -> (frames, atoms per frame, formula); must match so3krates/datasets/README.md.
EXPECTED = {
    "ethanol": (2000, 9, {1: 6, 6: 2, 8: 1}),
    "toluene": (2000, 15, {1: 8, 6: 7}),
    "aspirin": (2000, 21, {1: 8, 6: 9, 8: 4}),
}


def test_available_and_unknown_name(tmp_path, monkeypatch):
    names = datasets.available()
    assert names == sorted(EXPECTED)
    assert datasets.path("ethanol", decompressed=False).name == "ethanol.extxyz.gz"
    with pytest.raises(ValueError, match="available: .*ethanol"):
        datasets.path("benzene")
    # The decompressed copy is made once, in the cache directory, with the bundled content.
    monkeypatch.setenv("SO3KRATES_CACHE", str(tmp_path))
    plain = datasets.path("ethanol")
    assert plain.parent == tmp_path / "datasets" and plain.suffix == ".extxyz"
    with gzip.open(datasets.path("ethanol", decompressed=False), "rb") as f:
        assert f.read() == plain.read_bytes()
    assert datasets.path("ethanol") == plain


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bundled_dataset_loads(name):
    n_frames, n_atoms, formula = EXPECTED[name]
    frames = read_frames(datasets.path(name), require_energy=True, require_forces=True)
    assert len(frames.positions) == n_frames
    numbers = frames.numbers[0]
    assert len(numbers) == n_atoms and dict(zip(*np.unique(numbers, return_counts=True), strict=True)) == formula
    assert all(np.array_equal(z, numbers) for z in frames.numbers)
    assert np.isfinite(frames.energy).all() and frames.energy.shape == (n_frames,)
    forces = np.stack(frames.forces)
    assert forces.shape == (n_frames, n_atoms, 3) and np.isfinite(forces).all()
    # Thermal sampling at 500 K: energies fluctuate by tenths of an eV; net force ~ 0 (isolated molecule).
    assert 0.05 < frames.energy.std() < 1.0
    assert np.abs(forces.sum(axis=1)).max() < 0.05
    assert not frames.pbc.any()
