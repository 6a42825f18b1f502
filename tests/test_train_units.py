"""Unit tests of the training pieces: loss (eq. 35), normalisation (A.14), schedules and EMA, config,
checkpoints (round trip, atomic writes) and the model directory (save/load and its errors)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.units import kcal, mol

from so3krates import run_dir as rd
from so3krates.graph import collate, make_graph
from so3krates.model.config import ModelConfig
from so3krates.potential import Potential
from so3krates.train import checkpoint as ck
from so3krates.train.config import TrainConfig, parse_count, parse_degrees, parse_duration
from so3krates.train.loss import LossScales, batch_loss, structure_errors
from so3krates.train.normalization import energy_constant, fit_energy_shifts, force_rms, initial_normalization
from so3krates.train.optim import LearningRateSchedule, ema_update, make_optimizer

TINY = ModelConfig(
    features=16,
    num_layers=1,
    degrees=(1, 2),
    num_heads=2,
    r_cut=4.0,
    num_radial=8,
    radial_hidden=16,
    spherical_hidden=8,
)


def _labelled_graphs(rng: np.random.Generator) -> list:
    graphs = []
    for n in (3, 5):
        pos = rng.uniform(0, 3, (n, 3)) + np.arange(n)[:, None] * 1.2
        graphs.append(
            make_graph(pos, rng.choice([1, 6, 8], n), 4.0, energy=float(rng.normal()), forces=rng.normal(size=(n, 3)))
        )
    return graphs


# -- loss ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, 0.99, 1.0])
def test_loss_matches_hand_computation(beta: float) -> None:
    rng = np.random.default_rng(1)
    graphs = _labelled_graphs(rng)
    batch = collate(graphs)  # padded: one padding graph and padding atoms
    n_nodes, n_graphs = batch.positions.shape[0], batch.graph_mask.shape[0]
    pred = {
        # garbage in the padding entries must not leak into the loss
        "interaction_energy": rng.normal(size=n_graphs) * 10,
        "forces": rng.normal(size=(n_nodes, 3)) * 10,
    }
    expected = 0.0
    start = 0
    for g, graph in enumerate(graphs):
        n = graph.n_atoms
        de = pred["interaction_energy"][g] - graph.energy
        df = pred["forces"][start : start + n] - graph.forces
        expected += (1 - beta) * de**2 + beta / (3 * n) * np.sum(df**2)
        start += n
    expected /= len(graphs)
    got = float(batch_loss(jax.tree_util.tree_map(jnp.asarray, pred), batch, beta))
    assert got == pytest.approx(expected, rel=1e-10)


def test_loss_in_user_units_and_missing_labels() -> None:
    rng = np.random.default_rng(2)
    graphs = _labelled_graphs(rng)
    graphs[1].energy = None  # the second structure has no energy label: no energy term for it
    batch = collate(graphs)
    pred = {"interaction_energy": np.zeros(batch.graph_mask.shape[0]), "forces": np.array(batch.forces)}
    kcal_mol = kcal / mol
    scales = LossScales.from_units(kcal_mol, 1.0)
    errors = structure_errors(pred, batch, scales)
    assert float(errors.energy[0]) == pytest.approx((graphs[0].energy / kcal_mol) ** 2)
    assert float(errors.energy[1]) == 0.0
    np.testing.assert_allclose(np.asarray(errors.forces), 0.0)
    loss = float(batch_loss(pred, batch, 0.5, scales=scales))
    assert loss == pytest.approx(0.5 * (graphs[0].energy / kcal_mol) ** 2 / 2)


# -- normalisation ------------------------------------------------------------------------------------


def test_per_element_shift_recovers_known_shifts() -> None:
    rng = np.random.default_rng(3)
    true = {1: -13.6, 6: -1030.0, 7: -1485.0, 8: -2040.0}
    numbers = [rng.choice(list(true), size=rng.integers(2, 12)) for _ in range(60)]
    energies = np.array([sum(true[int(z)] for z in zs) for zs in numbers]) + rng.normal(scale=1e-3, size=60)
    shifts = fit_energy_shifts(numbers, energies, 118)
    for z, value in true.items():
        assert shifts[z] == pytest.approx(value, abs=1e-2)
    assert np.count_nonzero(shifts) == len(true)  # absent elements stay at zero


def test_single_composition_shift_reproduces_mean_energy() -> None:
    numbers = [np.array([6, 6, 1, 1, 1, 1, 1, 1, 8])] * 5
    energies = np.array([-4209.1, -4209.3, -4208.9, -4209.0, -4209.2])
    shifts = fit_energy_shifts(numbers, energies, 118)
    assert shifts[numbers[0]].sum() == pytest.approx(energies.mean())


def test_scale_energy_constant_and_initial_normalization() -> None:
    forces = [np.full((2, 3), 2.0), np.full((1, 3), -2.0)]
    assert force_rms(forces) == pytest.approx(2.0)
    assert force_rms(None) == 1.0
    assert energy_constant(np.array([1.0, 2.0, 6.0]), np.array([0.0, 0.0, 3.0])) == pytest.approx(2.0)
    norm = initial_normalization([np.array([1, 8])], np.array([-5.0]), forces[:1], 118, "float32")
    assert norm["scale"].shape == (119,) and norm["scale"].dtype == np.float32
    assert norm["shift"][1] + norm["shift"][8] == pytest.approx(-5.0, abs=1e-5)
    assert norm["energy_offset"].shape == ()


# -- optimiser, schedules, EMA ------------------------------------------------------------------------


def test_exponential_schedule_halves_every_decay_epochs() -> None:
    s = LearningRateSchedule("exponential", lr0=1e-3, lr=1e-3, decay_factor=0.5, decay_epochs=10)
    assert s.end_epoch(10, None) == pytest.approx(5e-4)
    assert s.end_epoch(20, None) == pytest.approx(2.5e-4)


def test_plateau_schedule_and_state_round_trip() -> None:
    s = LearningRateSchedule("plateau", lr0=1.0, lr=1.0, plateau_factor=0.5, plateau_patience=2)
    for epoch, loss in enumerate([5.0, 4.0, 4.0, 4.0, 3.0, 3.0, 3.0], start=1):
        s.end_epoch(epoch, loss)
    assert s.lr == 0.25 and s.best == 3.0
    restored = LearningRateSchedule("plateau", lr0=1.0, lr=1.0, plateau_patience=2)
    restored.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert (restored.lr, restored.best, restored.bad_epochs) == (s.lr, s.best, s.bad_epochs)


def test_ema_warms_up_then_uses_decay() -> None:
    ema, params = {"w": jnp.zeros(2)}, {"w": jnp.ones(2)}
    first = ema_update(ema, params, 0.999, jnp.asarray(0))
    np.testing.assert_allclose(first["w"], 0.9)  # d = 1/10 at step 0
    late = ema_update(ema, params, 0.999, jnp.asarray(10**6))
    np.testing.assert_allclose(late["w"], 0.001, rtol=1e-4)


def test_gradient_clipping_at_global_norm() -> None:
    opt = make_optimizer(1.0)
    params = {"w": jnp.zeros(3)}
    _, state = opt.update({"w": jnp.array([300.0, 400.0, 0.0])}, opt.init(params), params)
    # Adam's first moment after one step is (1 − b1) · g, with g clipped to norm 1.
    np.testing.assert_allclose(state[1].mu["w"], 0.1 * np.array([0.6, 0.8, 0.0]), rtol=1e-6)


# -- configuration ------------------------------------------------------------------------------------


def test_config_yaml_overrides_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-4\nn_train: 0.5\nmax_time: 40m\nmodel:\n  features: 32\n  degrees: 1,2\n")
    config = TrainConfig.from_yaml(path)
    assert config.lr == 1e-4 and config.n_train == 0.5 and config.max_time == 2400.0
    assert config.model.features == 32 and config.model.degrees == (1, 2)
    config = config.replace(lr=2e-3, num_layers=2, energy_unit="KCAL/MOL")
    assert config.lr == 2e-3 and config.model.num_layers == 2 and config.energy_unit == "kcal/mol"
    assert TrainConfig.from_dict(config.to_dict()) == config
    path.write_text("learning_rate: 1\n")
    with pytest.raises(ValueError, match="unknown training options.*learning_rate"):
        TrainConfig.from_yaml(path)
    with pytest.raises(ValueError, match="beta"):
        TrainConfig(beta=1.5)
    with pytest.raises(ValueError, match="energy unit"):
        TrainConfig(energy_unit="furlong")


def test_parsers() -> None:
    assert parse_count("1000") == 1000 and parse_count("0.8") == 0.8 and parse_count("1e3") == 1000
    assert parse_degrees("1,2,3") == (1, 2, 3) and parse_degrees([2]) == (2,)
    assert parse_duration("1h30m") == 5400 and parse_duration("90") == 90
    with pytest.raises(ValueError):
        parse_duration("soon")


# -- checkpoints --------------------------------------------------------------------------------------


def _checkpoint(seed: int = 0) -> tuple[ck.Checkpoint, dict, object]:
    rng = np.random.default_rng(seed)
    params = {"layer": {"kernel": rng.normal(size=(3, 4)).astype(np.float32), "bias": np.zeros(4, np.float32)}}
    opt = make_optimizer(1.0)
    opt_state = opt.init(params)
    _, opt_state = opt.update(jax.tree_util.tree_map(jnp.ones_like, params), opt_state, params)
    ckpt = ck.Checkpoint(
        params=params,
        ema=jax.tree_util.tree_map(lambda x: x * 0.5, params),
        best_ema=jax.tree_util.tree_map(lambda x: x * 0.25, params),
        opt_state=opt_state,
        normalization={
            "scale": np.ones(119, np.float32),
            "shift": np.zeros(119, np.float32),
            "energy_offset": np.zeros((), np.float32),
        },
        epoch=7,
        step=70,
        schedule={"kind": "plateau", "lr": 5e-4, "best": math.inf, "bad_epochs": 3},
        best_loss=0.25,
        best_epoch=5,
        bad_epochs=2,
        seed=seed,
        history=[{"epoch": 1, "train_loss": 1.0, "valid_loss": None}],
    )
    return ckpt, params, opt.init(params)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    ckpt, params, opt_template = _checkpoint()
    path = tmp_path / "ckpt.msgpack"
    ck.save_checkpoint(path, ckpt)
    back = ck.load_checkpoint(path, params, opt_template)
    for a, b in zip(
        jax.tree_util.tree_leaves((ckpt.params, ckpt.ema, ckpt.best_ema, ckpt.opt_state)),
        jax.tree_util.tree_leaves((back.params, back.ema, back.best_ema, back.opt_state)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert jax.tree_util.tree_structure(back.opt_state) == jax.tree_util.tree_structure(ckpt.opt_state)
    assert (back.epoch, back.step, back.best_loss, back.best_epoch, back.bad_epochs) == (7, 70, 0.25, 5, 2)
    assert back.schedule == ckpt.schedule and back.history == ckpt.history
    assert back.normalization["energy_offset"].shape == ()


def test_failed_checkpoint_write_leaves_the_old_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt, params, opt_template = _checkpoint()
    path = tmp_path / "ckpt.msgpack"
    ck.save_checkpoint(path, ckpt)
    before = path.read_bytes()

    def crash(fd: int) -> None:  # the data is written, the process "dies" before the rename
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    newer, _, _ = _checkpoint(seed=1)
    newer.epoch = 8
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(path, newer)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert ck.load_checkpoint(path, params, opt_template).epoch == 7
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.msgpack"]  # no temporary file left behind


def test_corrupted_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    ckpt, params, opt_template = _checkpoint()
    path = tmp_path / "ckpt.msgpack"
    ck.save_checkpoint(path, ckpt)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="ckpt.msgpack"):
        ck.load_checkpoint(path, params, opt_template)
    with pytest.raises(FileNotFoundError, match="nothing.msgpack"):
        ck.load_checkpoint(tmp_path / "nothing.msgpack", params, opt_template)


# -- model directory ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Potential, dict]:
    potential = Potential(TINY)
    batch = collate([make_graph(np.array([[0.0, 0, 0], [0.0, 0, 1.0], [1.0, 0, 0]]), np.array([8, 1, 1]), 4.0)])
    # Random arrays of the right shapes: eval_shape traces init without compiling it (seconds saved).
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(potential.init, jax.random.PRNGKey(0), batch)
    variables = jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)
    directory = tmp_path_factory.mktemp("model")
    split = {"train": np.arange(3), "valid": np.array([3]), "test": np.array([4, 5])}
    rd.save_model(directory, {"model": TINY.to_dict(), "lr": 1e-3}, variables, {"elements": [1, 8]}, split=split)
    return directory, potential, variables


def test_save_and_load_model(saved_model: tuple) -> None:
    directory, potential, variables = saved_model
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [rd.CONFIG_FILE, rd.WEIGHTS_FILE, rd.METADATA_FILE, rd.SPLIT_FILE]
    )
    loaded, loaded_vars, metadata = rd.load_run(directory)
    assert loaded.config == potential.config
    assert metadata["format_version"] == rd.FORMAT_VERSION and metadata["elements"] == [1, 8]
    for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(loaded_vars), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(rd.read_split(directory)["test"], [4, 5])
    assert b"pickle" not in (directory / rd.WEIGHTS_FILE).read_bytes()[:200]


def _copy(directory: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    target.mkdir()
    for p in directory.iterdir():
        (target / p.name).write_bytes(p.read_bytes())
    return target


@pytest.mark.parametrize("name", [rd.CONFIG_FILE, rd.WEIGHTS_FILE, rd.METADATA_FILE])
def test_load_model_names_a_missing_file(saved_model: tuple, tmp_path: Path, name: str) -> None:
    directory = _copy(saved_model[0], tmp_path)
    (directory / name).unlink()
    with pytest.raises(FileNotFoundError, match=name.replace(".", r"\.")):
        rd.load_run(directory)


@pytest.mark.parametrize(
    "name, damage",
    [
        (rd.WEIGHTS_FILE, lambda b: b[: len(b) // 2]),
        (rd.WEIGHTS_FILE, lambda b: b"\x00" * 16 + b[16:]),
        (rd.METADATA_FILE, lambda b: b[:-5]),
        (rd.CONFIG_FILE, lambda b: b"model: [unclosed\n"),
    ],
)
def test_load_model_names_a_corrupted_file(saved_model: tuple, tmp_path: Path, name: str, damage) -> None:
    directory = _copy(saved_model[0], tmp_path)
    (directory / name).write_bytes(damage((directory / name).read_bytes()))
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        rd.load_run(directory)


def test_load_model_format_versions(saved_model: tuple, tmp_path: Path) -> None:
    directory = _copy(saved_model[0], tmp_path)
    meta_path = directory / rd.METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = rd.FORMAT_VERSION + 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="newer than this so3krates"):
        rd.load_run(directory)
    meta["format_version"] = 0
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format version 0 is not supported"):
        rd.load_run(directory)
    del meta["format_version"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format_version"):
        rd.load_run(directory)


def test_load_model_rejects_weights_of_another_config(saved_model: tuple, tmp_path: Path) -> None:
    directory = _copy(saved_model[0], tmp_path)
    config = rd.read_config(directory)
    config["model"]["features"] = 32
    rd.atomic_write_text(directory / rd.CONFIG_FILE, __import__("yaml").safe_dump(config))
    with pytest.raises(ValueError, match="does not match config.yaml|config.yaml implies"):
        rd.load_run(directory)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        rd.load_run(tmp_path / "nowhere")


@pytest.mark.slow
def test_loss_units_ev_computes_the_loss_in_ev(tmp_path) -> None:
    """``loss_units="eV"`` (the authors' MD17 setting): for a kcal/mol file the loss is (kcal/mol in eV)²
    times the loss in the file's units, the reported errors stay in kcal/mol. Learning rate ~0, so both
    runs see the same weights."""
    import csv

    from test_train_helpers import TINY_MODEL, emt_dataset

    from so3krates.model.config import ModelConfig
    from so3krates.train import TrainConfig, train

    data = emt_dataset(tmp_path / "emt.extxyz", n_frames=12)
    rows = {}
    for units in ("data", "eV"):
        config = TrainConfig(
            data=str(data), energy_unit="kcal/mol", loss_units=units, n_train=8, n_valid=4, max_epochs=1,
            batch_size=4, lr=1e-12, schedule="constant", ema_decay=0.0, progress=False,
            model=ModelConfig.from_dict(TINY_MODEL),
        )  # fmt: skip
        train(config, tmp_path / units, log=lambda _: None)
        with open(tmp_path / units / "metrics.csv") as f:
            rows[units] = next(csv.DictReader(f))
    factor = (kcal / mol) ** 2
    assert float(rows["eV"]["train_loss"]) == pytest.approx(factor * float(rows["data"]["train_loss"]), rel=1e-5)
    assert float(rows["eV"]["valid_loss"]) == pytest.approx(factor * float(rows["data"]["valid_loss"]), rel=1e-5)
    for key in ("valid_energy_mae", "valid_forces_mae"):
        assert float(rows["eV"][key]) == pytest.approx(float(rows["data"][key]), rel=1e-5)
    with pytest.raises(ValueError, match="loss_units"):
        TrainConfig(loss_units="kJ")
