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


def test_split_json_and_validation(tmp_path):
    s = make_split(40, 0.5, 0.25, seed=2)
    path = tmp_path / "split.json"
    save_split(path, s)
    loaded = load_split(path, n_frames=40)
    assert all(np.array_equal(s[k], loaded[k]) and loaded[k].dtype == np.int64 for k in s)
    save_split(path, {"train": np.arange(3), "valid": np.array([], dtype=int), "test": np.array([3])})
    assert load_split(path)["valid"].shape == (0,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split.json"]  # no temporary files left
    save_split(tmp_path / "s.npz", s)
    with pytest.raises(ValueError, match=r"s\.npz: key 'train' refers to frame 3\d, but the dataset has 30 frames"):
        load_split(tmp_path / "s.npz", n_frames=30)
    np.savez(tmp_path / "overlap.npz", train=np.arange(5), valid=np.array([4]), test=np.array([], dtype=int))
    with pytest.raises(ValueError, match=r"overlap\.npz: .*overlap"):
        load_split(tmp_path / "overlap.npz")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json: cannot read split file"):
        load_split(tmp_path / "bad.json")
    (tmp_path / "bad2.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"bad2\.npz: cannot read split file"):
        load_split(tmp_path / "bad2.npz")
    with pytest.raises(ValueError, match=r"split\['test'\] must be a 1-D array of frame indices"):
        save_split(tmp_path / "x.npz", {"train": np.arange(2), "valid": np.arange(2, 3), "test": np.array([-1])})


def test_split_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "split.npz"
    s = make_split(20, 10, 5)
    save_split(path, s)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        save_split(path, make_split(20, 2, 2))
    monkeypatch.undo()
    assert np.array_equal(load_split(path)["train"], s["train"])  # the old split is intact
    assert [p.name for p in tmp_path.iterdir()] == ["split.npz"]


def test_split_edge_counts():
    s = make_split(5, 5, 0)
    assert len(s["train"]) == 5 and len(s["test"]) == 0
    s = make_split(0, 0, 0)
    assert all(len(v) == 0 for v in s.values())
    with pytest.raises(ValueError, match=r"n_test=7 > n_frames=10"):
        make_split(10, 2, 2, n_test=7.0)
    assert len(make_split(2000, 1e3, 0.1)["train"]) == 1000  # integral floats > 1 are counts
    with pytest.raises(ValueError, match="n_train must be an int"):
        make_split(10, True, 2)
