"""Flags, YAML and resume rules derived from the configuration dataclasses (so3krates.options)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from so3krates.cli import train as cli_train
from so3krates.model.config import ModelConfig
from so3krates.options import (
    FIXED,
    FREE,
    MOVED,
    Option,
    add_config_arguments,
    declaration_problems,
    leaves,
    merge,
    option,
    overrides_from_args,
    register_options,
    resume_merge,
)
from so3krates.train.config import TrainConfig, resume_config, yaml_options

# Every public flag of `so3krates train` (users' scripts use them): none may disappear or be renamed.
PUBLIC_FLAGS = {
    *("--data", "--out", "--config", "--energy-unit", "--loss-units", "--length-unit", "--energy-key"),
    *("--forces-key", "--stress-key", "--n-train", "--n-valid", "--n-test", "--seed", "--max-epochs"),
    *("--max-time", "--batch-size", "--beta", "--stress-weight", "--lr", "--schedule", "--decay-epochs"),
    *("--plateau-patience", "--patience", "--valid-every", "--ema-decay", "--resume", "--overwrite", "--no-progress"),
    *("--features", "--layers", "--degrees", "--cutoff", "--heads", "--dtype", "--nonlocal-correction"),
    *("--nonlocal", "--kappa", "--nonlocal-kappa", "--nonlocal-p", "--global-attention", "--efa-qk-features"),
    *("--efa-v-features", "--efa-max-frequency", "--efa-max-length", "--efa-grid-size", "--efa-layers"),
    "--efa-max-degree",
    *("--devices", "--coordinator", "--num-processes", "--process-id"),
}

# A value other than the default for every field that has a flag (a consistent configuration).
SAMPLE: dict[str, Any] = {
    "data": "/data/ethanol.npz",
    "energy_unit": "kcal/mol",
    "length_unit": "Bohr",
    "loss_units": "eV",
    "energy_key": "E",
    "forces_key": "F",
    "stress_key": "S",
    "n_train": 1000,
    "n_valid": 0.25,
    "n_test": 500,
    "seed": 7,
    "batch_size": 4,
    "max_epochs": 30,
    "max_time": 5400.0,
    "patience": 9,
    "beta": 0.5,
    "stress_weight": 0.1,
    "lr": 0.002,
    "schedule": "plateau",
    "decay_epochs": 50,
    "plateau_patience": 5,
    "ema_decay": 0.9,
    "valid_every": 2,
    "progress": False,
    "model": {
        "features": 48,
        "num_layers": 3,
        "degrees": (1, 3),
        "num_heads": 3,
        "r_cut": 4.5,
        "dtype": "float64",
        "nonlocal_correction": True,
        "nonlocal_kappa": 0.5,
        "nonlocal_p": 4,
        "global_attention": "efa",
        "efa_qk_features": 8,
        "efa_v_features": 16,
        "efa_max_frequency": 2.0,
        "efa_max_length": 12.0,
        "efa_grid_size": 86,
        "efa_layers": (0, 2),
        "efa_max_degree": 1,
    },
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    cli_train.add_arguments(parser)
    return parser


def _flag_text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        obj = getattr(obj, key)
    return obj


def test_every_field_decides_its_flag_and_resume_policy() -> None:
    assert declaration_problems(TrainConfig) == []  # a new field needs an Option (metadata or table)

    @dataclass
    class Undecided:
        decided: int = field(default=1, metadata=option(FIXED, "g", "help"))
        forgotten: int = 2

    assert declaration_problems(Undecided) == ["forgotten: no Option (decide its flag and resume policy)"]
    parser = _parser()
    flags = {s for a in parser._actions for s in a.option_strings} - {"-h", "--help"}
    assert flags == PUBLIC_FLAGS


def test_flags_round_trip_to_the_same_configuration() -> None:
    sample = TrainConfig.from_dict(SAMPLE)
    flagged = [leaf for leaf in leaves(TrainConfig) if leaf.flags]
    assert {leaf.key for leaf in flagged} == {
        *(k for k in SAMPLE if k != "model"),
        *(f"model.{k}" for k in SAMPLE["model"]),
    }, "every field with a flag needs a sample value here"
    argv = []
    for leaf in flagged:
        value = _get(sample, leaf.path)
        assert value != _get(TrainConfig(), leaf.path), leaf.key  # a real change, not the default
        assert leaf.option is not None and leaf.option.help, f"{leaf.key}: a flag needs help text"
        argv += [leaf.flags[0]] if isinstance(value, bool) else [leaf.flags[0], _flag_text(value)]
    args = _parser().parse_args(argv)
    assert merge(TrainConfig, overrides_from_args(args, TrainConfig)) == sample
    # and the same through YAML, as config.yaml of a run directory is written and read
    assert TrainConfig.from_dict(yaml.safe_load(yaml.safe_dump(sample.to_dict(), allow_unicode=True))) == sample


def test_flag_aliases_and_argparse_types() -> None:
    parser = _parser()
    args = parser.parse_args(["--nonlocal", "--nonlocal-kappa", "0.25", "--n-train", "0.5", "--layers", "2"])
    overrides = overrides_from_args(args, TrainConfig)
    assert overrides == {
        "n_train": 0.5,
        "model": {"nonlocal_correction": True, "nonlocal_kappa": 0.25, "num_layers": 2},
    }
    assert overrides_from_args(parser.parse_args([]), TrainConfig) == {}  # no flag: no override
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-time", "soon"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--schedule", "cosine"])


def test_precedence_defaults_yaml_flags(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "data: d.xyz\nlr: 1e-4\nmax_epochs: 9\ngrad_clip: null\nmodel:\n  features: 32\n  degrees: 1,2\n"
    )
    args = _parser().parse_args(["--config", str(tmp_path / "c.yaml"), "--max-epochs", "3", "--heads", "2"])
    config = cli_train.resolve_config(args)
    assert config.lr == 1e-4 and config.grad_clip is None and config.model.features == 32  # YAML over defaults
    assert config.max_epochs == 3 and config.model.num_heads == 2  # flags over YAML
    assert config.model.degrees == (1, 2) and config.batch_size == 8 and config.model.num_layers == 6  # defaults
    assert config.data == str((tmp_path / "d.xyz").resolve())
    # the merge itself: later layers win, nested sections merge key by key, None in YAML is a value
    merged = merge(TrainConfig, {"lr": "1e-4", "model": {"features": 48}}, {"lr": 2e-3, "model": {"num_heads": 2}})
    assert merged.lr == 2e-3 and (merged.model.features, merged.model.num_heads) == (48, 2)
    with pytest.raises(ValueError, match="unknown options.*learning_rate"):
        merge(TrainConfig, {"learning_rate": 1})


def test_quick_preset_yields_to_options_stated_in_yaml(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("max_epochs: 1000\nmodel:\n  features: 48\n")
    config = cli_train.resolve_config(_parser().parse_args(["--config", str(tmp_path / "c.yaml")]))
    assert config.data is None and config.max_epochs == 1000 and config.model.features == 48  # the file's choice
    assert config.lr == cli_train.QUICK_PRESET["lr"] and config.model.num_layers == 2  # the preset elsewhere


def test_earlier_run_config_yaml_loads(tmp_path: Path) -> None:
    # config.yaml as written before the options were derived (an older run lacks loss_units and
    # the later model fields: they take their defaults)
    text = (
        "data: /runs/data/ethanol.npz\nenergy_unit: kcal/mol\nlength_unit: Å\nenergy_key: null\nforces_key: null\n"
        "stress_key: null\nn_train: 1000\nn_valid: 500\nn_test: 500\nseed: 0\nbatch_size: 8\nmax_epochs: 1000\n"
        "max_time: 43200.0\npatience: null\nbeta: 0.99\nstress_weight: 0.0\nlr: 0.001\nschedule: exponential\n"
        "decay_factor: 0.5\ndecay_epochs: 1000\nplateau_patience: 25\nplateau_factor: 0.5\nmin_lr: 1.0e-06\n"
        "grad_clip: 1.0\nema_decay: 0.999\nvalid_every: 1\nvalid_batch_size: null\nprogress: true\nmodel:\n"
        "  features: 132\n  num_layers: 6\n  degrees:\n  - 1\n  - 2\n  - 3\n  num_heads: 4\n  r_cut: 5.0\n"
        "  num_radial: 32\n  radial_hidden: 128\n  spherical_hidden: 32\n  max_atomic_number: 118\n"
        "  dtype: float32\n  nonlocal_correction: false\n  nonlocal_kappa: 1.0\n  nonlocal_p: 6\n"
        "  global_attention: efa\n  efa_qk_features: 16\n  efa_v_features: 32\n"
        "  efa_max_frequency: 3.141592653589793\n  efa_max_length: 15.0\n  efa_grid_size: 50\n"
        "  efa_layers:\n  - 0\n  - 2\n"
    )
    (tmp_path / "config.yaml").write_text(text, encoding="utf-8")
    config = TrainConfig.from_yaml(tmp_path / "config.yaml")
    assert config.energy_unit == "kcal/mol" and config.max_time == 43200.0 and config.loss_units == "data"
    assert config.model.efa_layers == (0, 2) and config.model.remat is False
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_resume_allows_only_free_and_moved_options() -> None:
    saved = TrainConfig(data="/data/a.npz", max_epochs=10, model=ModelConfig(features=48, num_layers=2))
    requested = {"max_epochs": 20, "max_time": "1h", "patience": 3, "progress": False, "data": "/moved/a.npz"}
    resumed = resume_config(saved, requested)
    assert (resumed.max_epochs, resumed.max_time, resumed.patience, resumed.progress) == (20, 3600.0, 3, False)
    assert resumed.data == "/moved/a.npz" and resumed.model == saved.model
    # restating the run's own values (in any spelling) is no change
    same = {"lr": "1e-3", "energy_unit": "EV", "model": {"features": 48, "degrees": [3, 1, 2]}}
    assert resume_config(saved, same) == saved
    assert resume_config(saved, saved.replace(max_epochs=50)).max_epochs == 50  # a full config (Python API)


def test_resume_refusal_names_each_option_and_both_values() -> None:
    saved = TrainConfig(max_epochs=10, model=ModelConfig(features=48, num_layers=2))
    with pytest.raises(ValueError) as err:
        resume_config(saved, {"lr": 2e-3, "max_epochs": 20, "min_lr": 0.0, "model": {"num_layers": 3}})
    message = str(err.value)
    assert "lr (--lr): the run uses 0.001, now 0.002" in message
    assert "min_lr: the run uses 1e-06, now 0.0" in message  # YAML-only options are checked as well
    assert "model.num_layers (--layers): the run uses 2, now 3" in message
    assert "max_epochs" not in message
    with pytest.raises(ValueError, match=r"batch_size \(--batch-size\): the run uses 8, now 16"):
        resume_config(saved, saved.replace(batch_size=16, max_epochs=20))


def _saved_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    saved = TrainConfig(data=str(tmp_path / "d.xyz"), max_epochs=10, model=ModelConfig(features=48, num_layers=2))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved.to_dict(), allow_unicode=True), encoding="utf-8")
    return run_dir


def test_resume_through_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = _saved_run(tmp_path)
    parser = _parser()
    base = ["--out", str(run_dir), "--resume", "--data", str(tmp_path / "d.xyz"), "--layers", "2"]
    config = cli_train._resume_config(parser.parse_args([*base, "--max-epochs", "20", "--max-time", "40m"]), run_dir)
    assert (config.max_epochs, config.max_time, config.model.num_layers) == (20, 2400.0, 2)
    with pytest.raises(ValueError, match=r"model.num_layers \(--layers\): the run uses 2, now 4"):
        cli_train._resume_config(parser.parse_args([*base[:-1], "4"]), run_dir)
    (tmp_path / "c.yaml").write_text("lr: 0.01\n")  # options stated in --config are checked as well
    with pytest.raises(ValueError, match=r"lr \(--lr\): the run uses 0.001, now 0.01"):
        cli_train._resume_config(parser.parse_args([*base, "--config", str(tmp_path / "c.yaml")]), run_dir)
    from so3krates.cli.main import main

    assert main(["train", "--out", str(run_dir), "--resume", "--batch-size", "2"]) == 2
    assert "batch_size (--batch-size): the run uses 8, now 2" in capsys.readouterr().err


@dataclass(frozen=True)
class Inner:
    width: int = 4
    path: str | None = None


@dataclass(frozen=True)
class Middle:
    inner: Inner = field(default_factory=Inner)
    rate: float = field(default=0.5, metadata=option(FREE, "m", "rate", flags=("--rate", "-r")))


@dataclass
class Outer:
    """Three levels deep, options in field metadata and (for Inner) in a table."""

    steps: int = field(default=1, metadata=option(FREE, "top", "steps"))
    middle: Middle = field(default_factory=Middle)


register_options(Inner, {"width": Option(FIXED, "m", "inner width"), "path": Option(MOVED, flags=())})


def test_generic_over_nested_dataclasses() -> None:
    assert declaration_problems(Outer) == []
    parser = argparse.ArgumentParser()
    groups = add_config_arguments(parser, Outer)
    assert set(groups) == {"top", "m"}
    args = parser.parse_args(["--width", "8", "-r", "0.25"])
    overrides = overrides_from_args(args, Outer)
    assert overrides == {"middle": {"rate": 0.25, "inner": {"width": 8}}}
    config = merge(Outer, {"steps": "3", "middle": {"inner": {"path": "a"}}}, overrides)
    assert config == Outer(3, Middle(Inner(8, "a"), 0.25))
    assert resume_merge(config, {"steps": 5, "middle": {"inner": {"path": "b"}}}).middle.inner.path == "b"
    with pytest.raises(ValueError, match=r"middle.inner.width \(--width\): the run uses 8, now 2"):
        resume_merge(config, dataclasses.replace(config, middle=Middle(Inner(2, "a"), 0.25)))


def test_yaml_options_resolve_data_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("data: sub/d.xyz\nmax_time: 2h\n")
    assert yaml_options(tmp_path / "c.yaml") == {"data": str((tmp_path / "sub/d.xyz").resolve()), "max_time": "2h"}
    (tmp_path / "bad.yaml").write_text("max_time: soon\n")
    with pytest.raises(ValueError, match="bad.yaml: option max_time"):
        yaml_options(tmp_path / "bad.yaml")


def test_python_resume_refuses_other_data(tmp_path):
    # train(config, run_dir, resume=True) goes through run_configuration: the same checks as the CLI,
    # the data's checksum included (a different file under the run's split would be silently wrong).
    import json

    import yaml

    from so3krates import run_dir as rd
    from so3krates.train.config import TrainConfig
    from so3krates.train.pipeline import file_sha256
    from so3krates.train.startup import run_configuration

    first, other = tmp_path / "a.xyz", tmp_path / "b.xyz"
    first.write_text("frames of the run\n")
    other.write_text("other frames\n")
    run = tmp_path / "run"
    run.mkdir()
    saved = TrainConfig(data=str(first), max_epochs=5)
    (run / rd.CONFIG_FILE).write_text(yaml.safe_dump(saved.to_dict()))
    (run / rd.METADATA_FILE).write_text(json.dumps({"format_version": 1, "data_sha256": file_sha256(first)}))

    assert run_configuration(run, saved.replace(max_epochs=9), resume=True).max_epochs == 9
    moved = tmp_path / "moved.xyz"
    moved.write_text(first.read_text())  # the same content elsewhere is the same data
    assert run_configuration(run, saved.replace(data=str(moved)), resume=True).data == str(moved)
    with pytest.raises(ValueError, match="not the file .* was trained on"):
        run_configuration(run, saved.replace(data=str(other)), resume=True)
    with pytest.raises(ValueError, match="lr"):
        run_configuration(run, saved.replace(lr=0.5), resume=True)
    with pytest.raises(ValueError, match="already contains a training run"):
        run_configuration(run, saved, resume=False)
