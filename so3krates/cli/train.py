"""Train a So3krates force field on reference energies and forces.

Options come from the defaults (the paper's MD17 setting: Adam lr 1e-3, beta 0.99, batch 8, EMA 0.999,
gradient clipping at norm 1), then --config FILE.yaml, then the flags below. The run directory
receives the model (config.yaml, model.safetensors, metadata.json, split.npz), metrics.csv,
TensorBoard events, learning_curve.png and checkpoint_latest.msgpack. To continue a stopped or
killed run, repeat the command with --resume (only --max-epochs, --max-time, --patience,
--no-progress and the path of the same --data file may change). Without --data, a quick
demonstration trains a small model on the bundled ethanol dataset in a few minutes. Example:
so3krates train --data md17_ethanol.npz --energy-unit kcal/mol --loss-units eV --n-train 1000
--n-valid 500 --out runs/ethanol; then: so3krates evaluate --model runs/ethanol.

--out must be a new or empty directory: one that holds a run needs --resume (to continue it) or
--overwrite (to replace that run's files: model, checkpoint, config, metadata, split, metrics, curve,
TensorBoard events), and one that holds other files needs --overwrite (they are left alone, never
deleted). The folder is probed for writing before any data is read. model.safetensors and the
checkpoint carry a SHA-256 checksum: a damaged file is refused, named, on loading and on --resume; so
is --resume of a run that completed epochs but lost its checkpoint. Exit status: 0 done; 2 bad input,
an unusable --out or a failed write (e.g. a full disk: the last checkpoint stays intact, continue with
--resume); 130 after Ctrl-C and 143 after SIGTERM, once the checkpoint of the last completed epoch is
on disk (the message names the epoch; continue with --resume).
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
from pathlib import Path
from typing import Any

from so3krates.options import add_config_arguments, deep_merge, leaves, merge, overrides_from_args
from so3krates.train.config import TrainConfig, resume_config, yaml_options

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The configuration's flags (from TrainConfig's field options), then the run's own flags."""
    groups = add_config_arguments(parser, TrainConfig)
    groups["data"].add_argument(
        "--out", help="run directory for the model, metrics and checkpoints (default: runs/<data name>, made unique)"
    )
    groups["data"].add_argument("--config", help="YAML file of training options (flags override it)")
    groups["training"].add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    groups["data"].add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in --out even though it holds a run (whose files are replaced) or other files "
        "(which are left alone)",
    )

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
    """The options given as flags, nested like the configuration (``model`` under its key)."""
    out = overrides_from_args(args, TrainConfig)
    if "data" in out:
        out["data"] = str(Path(out["data"]).resolve())  # the saved config must work from any directory
    if not sys.stderr.isatty():
        out["progress"] = False  # bars in a log file are noise: one line per epoch instead
    return out


def _explicit_options(args: argparse.Namespace) -> dict[str, Any]:
    """Options the user stated: the keys written in --config, then the flags given (not the defaults)."""
    return deep_merge(yaml_options(args.config) if args.config else {}, _overrides(args))


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults < quick preset (no data anywhere) < --config YAML < flags."""
    stated = yaml_options(args.config) if args.config else {}
    flags = _overrides(args)
    preset = QUICK_PRESET if stated.get("data") is None and "data" not in flags else {}
    try:
        return merge(TrainConfig, preset, stated, flags, where="config", kind="training")
    except ValueError as err:
        raise ValueError(_with_flags(str(err))) from None


def _with_flags(message: str) -> str:
    """``message`` with the flag of each option it names (``num_layers`` → ``num_layers (--layers)``)."""
    for leaf in leaves(TrainConfig):
        name = leaf.path[-1]
        if leaf.flags and f"({leaf.flags[0]})" not in message:
            message = re.sub(rf"(?<![\w-]){name}(?![\w-])", f"{name} ({leaf.flags[0]})", message, count=1)
    return message


def _resume_config(args: argparse.Namespace, run_dir: Path) -> TrainConfig:
    """The run's saved configuration with what the user stated merged in, if only options that may
    change on resume changed (max_epochs, max_time, patience, progress, and a moved --data), so that the
    original command with ``--resume`` appended continues the same run."""
    from so3krates.run_dir import read_config

    saved = TrainConfig.from_dict(read_config(run_dir), where=str(run_dir / "config.yaml"))
    return resume_config(saved, _explicit_options(args))


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
        config = _resume_config(args, run_dir)  # train() checks the data is the run's (checksum)
    else:
        config = resolve_config(args)
        run_dir = Path(args.out) if args.out else _default_out(config)
        if config.data is None and par.is_writer():
            print("no --data given: quick demonstration on the bundled ethanol dataset (small model, few epochs)")
    try:
        result = train(config, run_dir, resume=args.resume, devices=args.devices, overwrite=args.overwrite)
    except KeyboardInterrupt as err:  # before the first epoch, or while saving the final model
        return _interrupted(run_dir, err)
    if not par.is_writer():
        return 0
    if result.stopped == "interrupted":
        print(f"model of the best epoch so far ({result.best_epoch}) saved to {run_dir}")
        return _interrupted(run_dir, result.signal)
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


def _interrupted(run_dir: Path, cause: BaseException | int | None) -> int:
    """Ctrl-C or SIGTERM: say which epoch's checkpoint is on disk; exit 128 + the signal (130, 143)."""
    from so3krates.train.checkpoint import CHECKPOINT_FILE, checkpoint_epoch
    from so3krates.train.stopping import signal_number

    signum = cause if isinstance(cause, int) else signal_number(cause) if cause else signal.SIGINT
    try:
        epoch = checkpoint_epoch(run_dir / CHECKPOINT_FILE)
    except (OSError, ValueError):
        epoch = 0
    name = signal.Signals(signum).name
    if epoch:
        print(
            f"so3krates train: interrupted ({name}) after epoch {epoch}; its checkpoint is "
            f"{run_dir / CHECKPOINT_FILE}: resume with --resume --out {run_dir}",
            file=sys.stderr,
        )
    else:
        print(f"so3krates train: interrupted ({name}) before any epoch was done; nothing to resume", file=sys.stderr)
    return 128 + int(signum)
