"""Train a So3krates force field on reference energies and forces.

Options come from the defaults (the paper's MD17 setting: Adam lr 1e-3, beta 0.99, batch 8, EMA 0.999,
gradient clipping at norm 1), then --config FILE.yaml, then the flags below. The run directory
receives the model (config.yaml, model.safetensors, metadata.json, split.npz), metrics.csv,
TensorBoard events, learning_curve.png and checkpoint_latest.msgpack. To continue a stopped or
killed run, repeat the command with --resume (only --max-epochs, --max-time and --patience may
change). Without --data, a quick demonstration trains a small model on the bundled ethanol dataset
in a few minutes. Example: so3krates train --data md17_ethanol.npz --energy-unit kcal/mol --loss-units eV
--n-train 1000 --n-valid 500 --out runs/ethanol; then: so3krates evaluate --model runs/ethanol.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from so3krates.data.units import ENERGY_UNIT_NAMES, LENGTH_UNIT_NAMES
from so3krates.train.config import LOSS_UNITS, SCHEDULES, TrainConfig, parse_count, parse_degrees, parse_duration


def count(text: str) -> int | float:
    """argparse type (its name appears in argparse's error message)."""
    return parse_count(text)


def duration(text: str) -> float:
    """argparse type: seconds or 40m / 2h / 1h30m."""
    return parse_duration(text)


def degrees(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated degrees."""
    return parse_degrees(text)


def layers(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated layer indices."""
    return parse_degrees(text)


# Quick demonstration on the bundled dataset: a small model that trains in a few minutes on 2 CPU cores.
QUICK_PRESET: dict[str, Any] = {
    "n_train": 400,
    "n_valid": 100,
    "n_test": 500,
    "batch_size": 8,
    "max_epochs": 40,
    "max_time": 240.0,
    "lr": 2e-3,
    "schedule": "exponential",
    "decay_epochs": 20,
    "ema_decay": 0.99,
    "model": {"features": 32, "num_layers": 2, "degrees": [1, 2], "num_heads": 2, "r_cut": 4.0},
}

# flag dest → TrainConfig / ModelConfig option
_OPTIONS = {
    "data": "data",
    "n_train": "n_train",
    "n_valid": "n_valid",
    "n_test": "n_test",
    "max_epochs": "max_epochs",
    "batch_size": "batch_size",
    "energy_unit": "energy_unit",
    "loss_units": "loss_units",
    "length_unit": "length_unit",
    "energy_key": "energy_key",
    "forces_key": "forces_key",
    "stress_key": "stress_key",
    "beta": "beta",
    "stress_weight": "stress_weight",
    "lr": "lr",
    "schedule": "schedule",
    "decay_epochs": "decay_epochs",
    "plateau_patience": "plateau_patience",
    "max_time": "max_time",
    "patience": "patience",
    "seed": "seed",
    "valid_every": "valid_every",
    "ema_decay": "ema_decay",
    "features": "features",
    "layers": "num_layers",
    "degrees": "degrees",
    "cutoff": "r_cut",
    "heads": "num_heads",
    "dtype": "dtype",
    "nonlocal_correction": "nonlocal_correction",
    "nonlocal_kappa": "nonlocal_kappa",
    "nonlocal_p": "nonlocal_p",
    "global_attention": "global_attention",
    "efa_qk_features": "efa_qk_features",
    "efa_v_features": "efa_v_features",
    "efa_max_frequency": "efa_max_frequency",
    "efa_max_length": "efa_max_length",
    "efa_grid_size": "efa_grid_size",
    "efa_layers": "efa_layers",
}
# What may change when resuming: how long to train, and how to show it (and, not options of the run at
# all, the devices and processes it runs on).
_RESUMABLE = {"max_epochs", "max_time", "patience", "progress"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        help="training file: .npz (sGDML R/z/E/F or positions/atomic_numbers/energy/forces) or any ASE "
        "format (extxyz, .gz, db, traj), or a stream directory from `so3krates prepare` (read memory-mapped, "
        "neighbour lists built batch by batch: for data larger than memory); default: the bundled ethanol "
        "dataset with a quick preset",
    )
    data.add_argument(
        "--out", help="run directory for the model, metrics and checkpoints (default: runs/<data name>, made unique)"
    )
    data.add_argument("--config", help="YAML file of training options (flags override it)")
    data.add_argument(
        "--energy-unit",
        help=f"energy unit of the file: {', '.join(ENERGY_UNIT_NAMES)} (default eV); forces are in "
        "energy unit / length unit. Errors are reported in these units",
    )
    data.add_argument(
        "--loss-units",
        choices=LOSS_UNITS,
        help="compute the loss in the file's units (data, the default) or in eV and Å (eV: as the authors' "
        "release trained MD17; the units set how hard --grad-clip binds)",
    )
    data.add_argument("--length-unit", help=f"length unit of the file: {', '.join(LENGTH_UNIT_NAMES)} (default Å)")
    data.add_argument("--energy-key", help="name of the energy label in the file (default: the format's own)")
    data.add_argument("--forces-key", help="name of the forces label in the file")
    data.add_argument("--stress-key", help="name of the stress label in the file (periodic data)")
    data.add_argument("--n-train", type=count, help="training frames: a count, or a fraction ≤ 1 (default 0.8)")
    data.add_argument("--n-valid", type=count, help="validation frames: count or fraction (default 0.1)")
    data.add_argument("--n-test", type=count, help="test frames: count or fraction (default: all the rest)")
    data.add_argument("--seed", type=int, help="seed of the split, initial weights and shuffling (default 0)")

    fit = parser.add_argument_group("training")
    fit.add_argument("--max-epochs", type=int, help="maximum number of epochs (default 1000)")
    fit.add_argument(
        "--max-time",
        type=duration,
        help="wall-time limit: seconds or e.g. 40m, 2h, 1h30m; no epoch is "
        "started that would end after it (default: none)",
    )
    fit.add_argument("--batch-size", type=int, help="structures per batch (default 8)")
    fit.add_argument("--beta", type=float, help="β of eq. 35, weight of the forces; 1 = forces only (default 0.99)")
    fit.add_argument("--stress-weight", type=float, help="weight of the stress error in the loss (default 0)")
    fit.add_argument("--lr", type=float, help="initial Adam learning rate (default 1e-3)")
    fit.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help="learning-rate schedule: exponential (×0.5 every --decay-epochs), "
        "plateau (×0.5 after --plateau-patience epochs without improvement) or constant (default exponential)",
    )
    fit.add_argument("--decay-epochs", type=int, help="epochs per halving of the exponential schedule (default 1000)")
    fit.add_argument("--plateau-patience", type=int, help="epochs without improvement before halving (default 25)")
    fit.add_argument(
        "--patience",
        type=int,
        help="early stopping: stop after this many validations without improvement (default: off)",
    )
    fit.add_argument("--valid-every", type=int, help="validate every N epochs (default 1)")
    fit.add_argument("--ema-decay", type=float, help="decay of the weights' moving average, 0 = off (default 0.999)")
    fit.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    fit.add_argument("--no-progress", action="store_true", help="one line per epoch instead of progress bars")

    model = parser.add_argument_group("model")
    model.add_argument("--features", type=int, help="feature width F (default 132)")
    model.add_argument("--layers", type=int, help="number of So3krates layers (default 6)")
    model.add_argument("--degrees", type=degrees, help="SPHC degrees, e.g. 1,2,3 (default)")
    model.add_argument("--cutoff", type=float, help="cutoff radius r_cut in Å (default 5)")
    model.add_argument("--heads", type=int, help="attention heads of the feature block (default 4)")
    model.add_argument("--dtype", choices=("float32", "float64"), help="floating-point precision (default float32)")
    model.add_argument(
        "--nonlocal-correction",
        "--nonlocal",
        dest="nonlocal_correction",
        action="store_const",
        const=True,
        help="add the non-local geometric correction (eq. 14; O(n²) per structure)",
    )
    model.add_argument(
        "--kappa",
        "--nonlocal-kappa",
        dest="nonlocal_kappa",
        type=float,
        help="κ of the non-local correction: the SPHC-space cutoff is κ / n_atoms (default 1)",
    )
    model.add_argument(
        "--nonlocal-p",
        dest="nonlocal_p",
        type=int,
        help="p of the polynomial cutoff (eq. 29) of the non-local correction (default 6)",
    )
    model.add_argument(
        "--global-attention",
        choices=("efa",),
        help="global interactions at linear cost: efa = Euclidean fast attention (docs/efa.md), in every layer "
        "unless --efa-layers",
    )
    model.add_argument("--efa-qk-features", type=int, help="EFA query/key width, even (default 16)")
    model.add_argument("--efa-v-features", type=int, help="EFA value width (default 32)")
    model.add_argument("--efa-max-frequency", type=float, help="EFA largest ERoPE frequency b_max (default π)")
    model.add_argument(
        "--efa-max-length", type=float, help="EFA r_max in Å: the largest distance within a structure (default 15)"
    )
    model.add_argument("--efa-grid-size", type=int, help="EFA Lebedev directions; must integrate b_max (default 50)")
    model.add_argument("--efa-layers", type=layers, help="layers (0-based, comma-separated) with EFA (default all)")

    par = parser.add_argument_group("devices and processes (data-parallel training, docs/parallel.md)")
    par.add_argument(
        "--devices",
        type=int,
        help="devices to split each batch over (default: all that JAX sees when more than one; 1: one device)",
    )
    par.add_argument(
        "--coordinator",
        help="HOST:PORT of process 0 for a multi-process run (jax.distributed; or SO3KRATES_COORDINATOR)",
    )
    par.add_argument("--num-processes", type=int, help="number of processes (or SO3KRATES_NUM_PROCESSES)")
    par.add_argument("--process-id", type=int, help="this process's index, 0..N-1 (or SO3KRATES_PROCESS_ID)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line (None: not given)."""
    out = {option: getattr(args, dest) for dest, option in _OPTIONS.items() if getattr(args, dest, None) is not None}
    if "data" in out:
        out["data"] = str(Path(out["data"]).resolve())  # the saved config must work from any directory
    if args.no_progress or not sys.stderr.isatty():
        out["progress"] = False  # bars in a log file are noise: one line per epoch instead
    return out


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults < quick preset (no data anywhere) < --config YAML < flags."""
    base = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    overrides = _overrides(args)
    if base.data is None and "data" not in overrides:
        preset = dict(QUICK_PRESET)
        base_dict = base.to_dict()
        # The preset fills in what the YAML file left at the defaults; the YAML's own choices win.
        defaults = TrainConfig().to_dict()
        merged = {k: (preset[k] if k in preset and base_dict[k] == defaults[k] else base_dict[k]) for k in base_dict}
        merged["model"] = {
            k: (preset["model"].get(k, v) if v == defaults["model"][k] else v) for k, v in base_dict["model"].items()
        }
        base = TrainConfig.from_dict(merged)
    if base.data is not None and args.config:
        # A relative data path in a YAML file is relative to that file.
        path = Path(base.data)
        if not path.is_absolute():
            base = base.replace(data=str((Path(args.config).parent / path).resolve()))
    return base.replace(**overrides)


def _explicit_options(args: argparse.Namespace) -> dict[str, Any]:
    """Options the user stated: flags given, and the keys written in --config (not the defaults)."""
    explicit: dict[str, Any] = {}
    if args.config:
        import yaml

        raw = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
        stated = TrainConfig.from_yaml(args.config)
        if stated.data is not None and not Path(stated.data).is_absolute():
            stated = stated.replace(data=str((Path(args.config).parent / stated.data).resolve()))
        explicit.update({k: getattr(stated, k) for k in raw if k != "model"})
        explicit.update({k: getattr(stated.model, k) for k in raw.get("model") or {}})
    explicit.update(_overrides(args))
    return explicit


def _resume_config(args: argparse.Namespace, run_dir: Path) -> TrainConfig:
    """The run's saved configuration; only max_epochs/max_time/patience/progress (and a moved --data) may
    change, so that the original command with ``--resume`` appended continues the same run."""
    from so3krates.run_dir import read_config

    config = TrainConfig.from_dict(read_config(run_dir), where=str(run_dir / "config.yaml"))
    current = config.to_dict()
    flat = {**current, **current["model"]}
    allowed: dict[str, Any] = {}
    for option, value in _explicit_options(args).items():
        if option in _RESUMABLE:
            allowed[option] = value
            continue
        if option == "data":
            if value != config.data:
                allowed["data"] = value  # the file moved; its checksum is checked before training
            continue
        old = flat.get(option)
        if (list(value) if isinstance(value, tuple) else value) != old:
            raise ValueError(
                f"cannot change {option} when resuming (the run uses {old!r}, now {value!r}); "
                "start a new run with another --out"
            )
    return config.replace(**allowed)


def _default_out(config: TrainConfig) -> Path:
    """runs/<data name>, with _2, _3, … appended if taken."""
    stem = Path(config.data).name.split(".")[0] if config.data else "ethanol"
    candidate = Path("runs") / stem
    k = 2
    while candidate.exists():
        candidate = Path("runs") / f"{stem}_{k}"
        k += 1
    return candidate


def run(args: argparse.Namespace) -> int:
    from so3krates.train import parallel as par

    # Before anything asks JAX for its devices: a multi-process run sees the devices of every process.
    distributed = par.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    if distributed and not args.out:
        raise ValueError("a multi-process run needs --out RUN_DIR (the same directory for every process)")
    from so3krates.train.loop import train

    if args.resume:
        if not args.out:
            raise ValueError("--resume needs --out RUN_DIR (the run to continue)")
        run_dir = Path(args.out)
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"{run_dir} holds no training run to resume (no config.yaml)")
        config = _resume_config(args, run_dir)
        _check_same_data(config, run_dir)
    else:
        config = resolve_config(args)
        run_dir = Path(args.out) if args.out else _default_out(config)
        if config.data is None and par.is_writer():
            print("no --data given: quick demonstration on the bundled ethanol dataset (small model, few epochs)")
    result = train(config, run_dir, resume=args.resume, devices=args.devices)
    if not par.is_writer():
        return 0
    units = f"{config.energy_unit}, {config.energy_unit}/{config.length_unit}"
    valid = result.valid_metrics
    summary = ""
    if "energy_mae" in valid and "forces_mae" in valid:
        summary = f"; validation MAE energy {valid['energy_mae']:.4g}, forces {valid['forces_mae']:.4g} ({units})"
    print(
        f"stopped after {result.epochs} epochs ({result.stopped}, {result.wall_time:.0f} s); best epoch "
        f"{result.best_epoch}{summary}"
    )
    print(f"model saved to {run_dir}")
    print(f"evaluate it with: so3krates evaluate --model {run_dir} --split test")
    return 0


def _check_same_data(config: TrainConfig, run_dir: Path) -> None:
    """Refuse to resume on a file that is not the one the run started with (checksum)."""
    from so3krates.run_dir import read_metadata
    from so3krates.train.pipeline import default_dataset_path, file_sha256

    expected = read_metadata(run_dir).get("data_sha256")
    path = Path(config.data) if config.data else default_dataset_path()
    if path.is_dir():
        return  # a stream directory: the split's frame indices are checked against its length on resume
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the run's training file does not exist (moved? give --data)")
    if expected and file_sha256(path) != expected:
        raise ValueError(f"{path} is not the file {run_dir} was trained on (its checksum differs)")
