"""What a training run writes besides checkpoints: run files, metrics.csv, TensorBoard, the learning curve.

Every file is replaced atomically. Only the writing process (process 0) writes; the others get the same
objects with writing switched off, so that the loop does not branch on it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jax
import numpy as np

from so3krates import files
from so3krates import run_dir as rd
from so3krates.train.config import TrainConfig
from so3krates.train.pipeline import TrainingData, file_sha256, symbols

METRICS_FILE = "metrics.csv"
CURVE_FILE = "learning_curve.png"
TENSORBOARD_DIR = "tensorboard"


def finite_or_none(value: Any) -> Any:
    """``value``, or None for a NaN or infinite float (JSON and CSV have no such numbers)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class TrainResult:
    """Summary of a finished (or stopped) run.

    Attributes:
        run_dir: the model directory.  epochs: completed epochs.  best_epoch / best_loss: the saved model.
        stopped: "max_epochs", "early_stopping", "max_time" or "interrupted" (Ctrl-C or SIGTERM: ``signal``).
        wall_time: seconds spent in this call.  valid_metrics: validation errors of the saved model.
        energy_constant: c of A.14 in eV (0 unless β = 1).  history: per-epoch metrics.
    """

    run_dir: Path
    epochs: int
    best_epoch: int
    best_loss: float
    stopped: str
    wall_time: float
    valid_metrics: dict[str, Any]
    energy_constant: float
    history: list[dict[str, Any]] = field(default_factory=list)
    signal: int | None = None  # the signal that interrupted the run (SIGINT 2, SIGTERM 15); None otherwise


# -- run files ----------------------------------------------------------------------------------------


def run_metadata(config: TrainConfig, data: TrainingData, params: Any) -> dict[str, Any]:
    """``metadata.json`` of a run before training: elements, units, data source, split, parameter count."""
    return {
        "elements": data.elements,
        "element_symbols": symbols(data.elements),
        "units": {"energy": config.energy_unit, "length": config.length_unit},
        "model_units": {"energy": "eV", "length": "Å", "forces": "eV/Å", "stress": "eV/Å³"},
        "energy_constant": 0.0,
        "energy_constant_fitted": False,
        "data_source": str(data.path.resolve()),
        "data_sha256": file_sha256(data.path) if data.path.is_file() else None,
        "n_frames": len(data.frames),
        "keys": {"energy": config.energy_key, "forces": config.forces_key, "stress": config.stress_key},
        "split_file": rd.SPLIT_FILE,
        "split_sizes": {k: len(v) for k, v in data.split.items()},
        "seed": config.seed,
        "num_parameters": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params))),
    }


def start_run_directory(
    run_dir: Path,
    config: TrainConfig,
    split: dict[str, np.ndarray],
    metadata: dict[str, Any],
    resume: bool,
    writes: bool,
) -> dict[str, Any]:
    """Write the split, ``config.yaml`` and ``metadata.json`` of a new run; returns the run's metadata
    (of a resumed run: the saved one, updated with ``metadata`` except its parameter count)."""
    if resume and (run_dir / rd.CONFIG_FILE).exists():
        return {**rd.read_metadata(run_dir), **{k: v for k, v in metadata.items() if k != "num_parameters"}}
    if writes:
        run_dir.mkdir(parents=True, exist_ok=True)
        # config.yaml last: once it exists (what --resume looks for), the split and metadata.json do too;
        # metadata.json first: it marks a start-up that was killed, whose files a new run may replace.
        files.atomic_write_text(
            run_dir / rd.METADATA_FILE, json.dumps(stamped(metadata, started=now()), indent=2, ensure_ascii=False)
        )
        rd.save_split_file(run_dir / rd.SPLIT_FILE, split)
        files.atomic_write_text(run_dir / rd.CONFIG_FILE, _yaml(config.to_dict()))
    return metadata


def stamped(metadata: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """``metadata`` with the run-directory format and package versions first, and ``extra`` last."""
    from so3krates import __version__

    return {"format_version": rd.FORMAT_VERSION, "so3krates_version": __version__, **metadata, **extra}


def _yaml(d: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True)


# -- per-epoch records --------------------------------------------------------------------------------


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.csv`` from the whole history (atomic; consistent with the checkpoint on resume)."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if finite_or_none(v) is None else v) for k, v in row.items()})
    files.atomic_write_text(path, buffer.getvalue())


class EpochRecords:
    """``metrics.csv`` and the TensorBoard events of a run, written after every epoch.

    Opening rewrites ``metrics.csv`` from ``history`` (dropping rows of epochs a resumed checkpoint does
    not have) and purges TensorBoard events after ``start_epoch``.
    """

    def __init__(self, run_dir: Path, history: list[dict[str, Any]], start_epoch: int, writes: bool) -> None:
        self.path = run_dir / METRICS_FILE
        self.tensorboard = None
        if writes:
            from tensorboardX import SummaryWriter

            write_metrics_csv(self.path, history)
            purge = start_epoch + 1 if start_epoch else None
            self.tensorboard = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=purge)

    def write(self, history: list[dict[str, Any]]) -> None:
        """Rewrite ``metrics.csv`` and add the last row's numbers to TensorBoard."""
        if self.tensorboard is None:
            return
        write_metrics_csv(self.path, history)
        row = history[-1]
        for key, value in row.items():
            if key != "epoch" and isinstance(value, int | float) and finite_or_none(value) is not None:
                self.tensorboard.add_scalar(key, value, row["epoch"])
        self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def epoch_line(row: dict[str, Any], config: TrainConfig) -> str:
    """The epoch's losses, validation MAEs and learning rate, comma separated."""
    e_unit, l_unit = config.energy_unit, config.length_unit
    parts = [f"loss {row['train_loss']:.4g}"]
    if "valid_loss" in row:
        parts.append(f"valid {row['valid_loss']:.4g}")
    if "valid_energy_mae" in row:
        parts.append(f"E MAE {row['valid_energy_mae']:.4g} {e_unit}")
    if "valid_forces_mae" in row:
        parts.append(f"F MAE {row['valid_forces_mae']:.4g} {e_unit}/{l_unit}")
    parts.append(f"lr {row['lr']:.2e}")
    return ", ".join(parts)


def report_epoch(row: dict[str, Any], bar: Any, log: Callable[[str], None], config: TrainConfig) -> None:
    """One line per epoch without progress bars; the epoch bar's postfix with them."""
    line = epoch_line(row, config)
    if config.progress:
        bar.set_postfix_str(line, refresh=False)
        bar.update(1)
    else:
        best = " *" if row.get("best") else ""
        log(f"epoch {row['epoch']}/{config.max_epochs}: {line} ({row['time_s']:.1f} s){best}")


# -- the end of a run ---------------------------------------------------------------------------------


def plot_learning_curve(path: Path, history: list[dict[str, Any]], energy_unit: str, length_unit: str) -> None:
    """Loss and validation MAEs against epoch, log scale (matplotlib, Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]

    def series(key: str) -> list[float]:
        return [float(row[key]) if finite_or_none(row.get(key)) is not None else np.nan for row in history]

    fig, (ax_loss, ax_mae) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, series("train_loss"), label="train")
    ax_loss.plot(epochs, series("valid_loss"), label="valid (EMA)")
    ax_loss.set(xlabel="epoch", ylabel="loss (eq. 35)", yscale="log", title="loss")
    ax_loss.legend()
    ax_mae.plot(epochs, series("valid_energy_mae"), label=f"energy MAE ({energy_unit})")
    ax_mae.plot(epochs, series("valid_forces_mae"), label=f"force MAE ({energy_unit}/{length_unit})")
    ax_mae.set(xlabel="epoch", ylabel="validation MAE", yscale="log", title="validation")
    ax_mae.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    files.atomic_write_bytes(path, buffer.getvalue())


def training_summary(
    epochs: int,
    best_epoch: int,
    best_loss: float,
    stopped: str,
    wall_time: float,
    valid_metrics: dict[str, Any],
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """The ``training`` entry of ``metadata.json``: epochs, the best one, why it stopped, time, errors."""
    return {
        "epochs": epochs,
        "best_epoch": best_epoch,
        "best_valid_loss": finite_or_none(best_loss),
        "stopped": stopped,
        "wall_time_s": (history[-1]["elapsed_s"] if history else wall_time),
        "valid_metrics": valid_metrics,
        "finished": now(),
    }


def save_trained_model(
    run_dir: Path,
    config: TrainConfig,
    variables: Any,
    metadata: dict[str, Any],
    split: dict[str, np.ndarray],
    history: list[dict[str, Any]],
) -> None:
    """The model directory's weights, configuration, metadata and split, and the learning-curve PNG."""
    rd.save_model(run_dir, config.to_dict(), variables, stamped(metadata), split=split)
    if history:
        plot_learning_curve(run_dir / CURVE_FILE, history, config.energy_unit, config.length_unit)
