"""Tests of so3krates.data.splits: disjoint, seeded, fractions, errors, save/load."""

from __future__ import annotations

import numpy as np
import pytest

from so3krates.data import load_split, make_split, save_split


def test_split_disjoint_and_complete():
    s = make_split(100, 60, 15)
    assert [len(s[k]) for k in ("train", "valid", "test")] == [60, 15, 25]
    union = np.concatenate([s["train"], s["valid"], s["test"]])
    assert len(np.unique(union)) == 100 and union.min() == 0 and union.max() == 99
    assert all(s[k].dtype == np.int64 for k in s)
    t = make_split(100, 10, 10, n_test=5)
    assert [len(t[k]) for k in ("train", "valid", "test")] == [10, 10, 5]
    assert len(np.unique(np.concatenate(list(t.values())))) == 25


def test_split_seeded():
    a, b = make_split(50, 20, 10, seed=3), make_split(50, 20, 10, seed=3)
    c = make_split(50, 20, 10, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train"], c["train"])


def test_split_fractions():
    s = make_split(200, 0.8, 0.1)
    assert [len(s[k]) for k in ("train", "valid", "test")] == [160, 20, 20]
    s = make_split(10, 1.0, 0)
    assert len(s["train"]) == 10 and len(s["valid"]) == 0 and len(s["test"]) == 0
    s = make_split(10, 1, 1)  # ints: one frame each
    assert [len(s[k]) for k in ("train", "valid", "test")] == [1, 1, 8]


def test_split_errors():
    with pytest.raises(ValueError, match="exceed"):
        make_split(10, 8, 3)
    with pytest.raises(ValueError, match="exceed"):
        make_split(10, 5, 2, n_test=4)
    with pytest.raises(ValueError, match="exceed"):
        make_split(10, 0.7, 0.5)
    with pytest.raises(ValueError, match="n_train"):
        make_split(10, -1, 2)
    with pytest.raises(ValueError, match="n_valid"):
        make_split(10, 2, 1.5)
    with pytest.raises(ValueError, match="n_train"):
        make_split(10, "5", 2)


def test_split_save_load(tmp_path):
    s = make_split(30, 10, 5, seed=7)
    path = tmp_path / "sub" / "split.npz"
    save_split(path, s)
    loaded = load_split(path)
    assert set(loaded) == {"train", "valid", "test"}
    assert all(np.array_equal(s[k], loaded[k]) for k in s)
    assert [p.name for p in path.parent.iterdir()] == ["split.npz"]  # no temporary files left
    save_split(path, make_split(30, 5, 5, seed=1))  # overwrite
    assert len(load_split(path)["train"]) == 5
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_split(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", train=np.arange(3))
    with pytest.raises(ValueError, match=r"bad\.npz.*missing keys \['valid', 'test'\]"):
        load_split(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="missing keys"):
        save_split(tmp_path / "x.npz", {"train": np.arange(2)})
