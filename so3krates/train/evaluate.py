"""Error figures of a trained model on labelled data: metrics JSON, predictions npz, parity plot.

Used by ``so3krates evaluate`` and the benchmarks. When the data file is the one the model was trained
on (recognised by its SHA-256 recorded in ``metadata.json``), ``split="test"`` evaluates exactly the
held-out frames saved in ``split.npz``; other files are evaluated whole (``split="all"``).

All figures are in the user's units (by default those the model was trained in): energy MAE/RMSE
(total and per atom), force MAE/RMSE per Cartesian component, stress if labelled, and the
per-structure averaged MAE of the paper's Table 4 (the mean over chemical formulas of each formula's MAE).
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from so3krates import files, validation
from so3krates import run_dir as rd
from so3krates.data import Frames
from so3krates.data.npz import declared_units
from so3krates.data.units import energy_factor, length_factor, resolve_units
from so3krates.inference import load_force_field
from so3krates.train.batching import max_pad_sizes
from so3krates.train.loss import LossScales
from so3krates.train.metrics import error_metrics, predict_graphs
from so3krates.train.pipeline import build_graphs, default_dataset_path, file_sha256, load_frames

SPLITS = ("test", "valid", "train", "all")


@dataclass
class Evaluation:
    """Result of :func:`evaluate_model`.

    Attributes:
        metrics: the error figures (see :func:`~so3krates.train.metrics.error_metrics`) plus context.
        indices: frame indices of the evaluated structures in the data file.
        out_dir: where metrics.json, predictions.npz and parity.png went (None: not written).
    """

    metrics: dict[str, Any]
    indices: np.ndarray
    out_dir: Path | None


def check_known_elements(frames: Frames, indices: np.ndarray, elements: list[int] | None) -> None:
    """Refuse structures with elements the model never saw: its predictions for them are meaningless."""
    if not elements:
        return
    for i in indices:
        validation.check_known_elements(frames.numbers[int(i)], elements, None, f"{frames.source}: frame {int(i)}")


def evaluate_model(
    model_dir: str | Path,
    data: str | Path | None = None,
    split: str | None = None,
    out_dir: str | Path | None = None,
    energy_unit: str | None = None,
    length_unit: str | None = None,
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
    batch_size: int = 16,
    plot: bool = True,
    write: bool = True,
    dtype: str | None = None,
) -> Evaluation:
    """Evaluate the model in ``model_dir`` on ``data`` (default: its training file).

    Args:
        model_dir: a run directory written by ``so3krates train``.
        data: labelled data file; None: the file the model was trained on.
        split: "test", "valid", "train" (saved split of the training file) or "all"; None: "test" for
            the training file, "all" otherwise.
        out_dir: where to write results; None: ``<model_dir>/evaluation_<split>`` (or ``_<file name>``).
        energy_unit, length_unit, energy_key, forces_key, stress_key: how to read ``data``; None: as
            in training (a unit: the file's own, an sGDML ``e_unit``/``r_unit``, if it has one).
        batch_size: structures per evaluation batch.
        plot: write the parity plot.  write: write any file at all.
        dtype: run the model in "float32" or "float64"; None: as trained (float64 needs JAX's 64-bit
            mode, :mod:`so3krates.precision`). Energies are float64 sums either way.
    Raises:
        ValueError: a split of a file the model was not trained on, unknown elements, unlabelled data.
    """
    model_dir = Path(model_dir)
    force_field = load_force_field(model_dir, dtype)
    potential, variables, metadata = force_field.potential, force_field.variables, force_field.metadata
    train_config = rd.read_config(model_dir)
    units = metadata.get("units", {})
    given = {"energy_key": energy_key, "forces_key": forces_key, "stress_key": stress_key}
    keys = [key or train_config.get(name) for name, key in given.items()]  # None: as in training
    data = Path(data if data is not None else (train_config.get("data") or default_dataset_path()))
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not data.is_file():
        raise FileNotFoundError(f"{data}: no such data file")
    # the user's units, else the file's own (sGDML e_unit/r_unit), else the training units
    training_units = (units.get("energy", "eV"), units.get("length", "Å"))
    energy_unit, length_unit, _ = resolve_units(
        energy_unit, length_unit, declared_units(data), str(data), default=training_units
    )
    is_training_file = _same_file(data, metadata)
    split = split or ("test" if is_training_file else "all")
    frames = load_frames(data, energy_unit, length_unit, *keys)
    if frames.energy is None and frames.forces is None:
        raise ValueError(f"{data}: no energies and no forces: nothing to compare the predictions with")
    indices = _split_indices(model_dir, data, len(frames), split, is_training_file, metadata)
    check_known_elements(frames, indices, metadata.get("elements"))
    compute_stress = frames.stress is not None and bool(frames.pbc[indices].any())
    pred, seconds = _predict(potential, variables, frames, indices, batch_size, compute_stress)
    scales = LossScales.from_units(energy_factor(energy_unit), length_factor(length_unit))
    numbers = [frames.numbers[int(i)] for i in indices]
    energy_ref = None if frames.energy is None else frames.energy[indices]
    forces_ref = None if frames.forces is None else [frames.forces[int(i)] for i in indices]
    stress_ref = frames.stress[indices] if compute_stress else None
    units = {"energy": energy_unit, "length": length_unit}
    where = {"model": str(model_dir), "data": str(data), "split": split, "units": units, "prediction_seconds": seconds}
    metrics = {**where, **_error_figures(numbers, scales, energy_ref, forces_ref, stress_ref, pred)}
    if not write:
        return Evaluation(metrics=metrics, indices=np.asarray(indices), out_dir=None)
    if out_dir is None:
        out_dir = model_dir / (f"evaluation_{split}" if is_training_file else f"evaluation_{data.name.split('.')[0]}")
    result_dir = Path(out_dir)
    result_dir.mkdir(parents=True, exist_ok=True)
    files.atomic_write_text(result_dir / "metrics.json", json.dumps(_finite(metrics), indent=2, ensure_ascii=False))
    _write_predictions(result_dir / "predictions.npz", indices, numbers, scales, energy_ref, forces_ref, pred)
    if plot:
        parity_plot(result_dir / "parity.png", scales, energy_unit, length_unit, energy_ref, forces_ref, pred)
    return Evaluation(metrics=metrics, indices=np.asarray(indices), out_dir=result_dir)


def _error_figures(
    numbers: list[np.ndarray],
    scales: LossScales,
    energy_ref: np.ndarray | None,
    forces_ref: list[np.ndarray] | None,
    stress_ref: np.ndarray | None,
    pred: dict[str, Any],
) -> dict[str, Any]:
    """:func:`~so3krates.train.metrics.error_metrics` of the labels present, per formula too."""
    return error_metrics(
        numbers,
        scales,
        energy_ref=energy_ref,
        energy_pred=pred["energy"] if energy_ref is not None else None,
        forces_ref=forces_ref,
        forces_pred=pred["forces"] if forces_ref is not None else None,
        stress_ref=stress_ref,
        stress_pred=pred.get("stress") if stress_ref is not None else None,
        per_formula=True,
    )


def _split_indices(
    model_dir: Path, data: Path, n_frames: int, split: str, is_training_file: bool, metadata: dict[str, Any]
) -> np.ndarray:
    """Frame indices of ``split`` ("all": every frame; else the run's saved split of its training file)."""
    if split == "all":
        return np.arange(n_frames)
    if not is_training_file:
        raise ValueError(
            f"{data} is not the file {model_dir} was trained on ({metadata.get('data_source')}): "
            f"its '{split}' split is not defined; use --split all"
        )
    indices = rd.read_split(model_dir)[split]
    if len(indices) and int(indices.max()) >= n_frames:
        raise ValueError(f"{model_dir / rd.SPLIT_FILE} refers to frame {int(indices.max())} beyond {data}")
    if len(indices) == 0:
        raise ValueError(f"the '{split}' split of {model_dir} is empty")
    return indices


def _predict(
    potential: Any, variables: Any, frames: Frames, indices: np.ndarray, batch_size: int, compute_stress: bool
) -> tuple[dict[str, Any], float]:
    """Predictions for the frames at ``indices`` in padded batches, and the seconds they took."""
    config = potential.config
    graphs = build_graphs(frames, indices, config.r_cut)
    batch_size = max(1, min(batch_size, len(graphs)))
    sizes = max_pad_sizes(graphs, batch_size, config.nonlocal_correction)
    start = time.perf_counter()
    pred = predict_graphs(
        lambda b: potential.energy_forces(variables, b, compute_stress=compute_stress),
        graphs,
        sizes,
        batch_size,
        all_pairs=config.nonlocal_correction,
    )
    return pred, time.perf_counter() - start


def _same_file(path: Path, metadata: dict[str, Any]) -> bool:
    """Is ``path`` the training file? By checksum if recorded, else by resolved path."""
    if metadata.get("data_sha256"):
        return file_sha256(path) == metadata["data_sha256"]
    return bool(metadata.get("data_source")) and Path(metadata["data_source"]).resolve() == path.resolve()


def _finite(obj: Any) -> Any:
    """NaN/inf → None: strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def _write_predictions(
    path: Path,
    indices: np.ndarray,
    numbers: list[np.ndarray],
    scales: LossScales,
    energy_ref: np.ndarray | None,
    forces_ref: list[np.ndarray] | None,
    pred: dict[str, Any],
) -> None:
    """predictions.npz in the user's units: per-structure energies, per-atom forces (concatenated)."""
    arrays: dict[str, np.ndarray] = {
        "indices": np.asarray(indices, np.int64),
        "n_atoms": np.array([len(z) for z in numbers], np.int64),
        "numbers": np.concatenate(numbers).astype(np.int64),
        "energy_pred": pred["energy"] / scales.energy,
        "forces_pred": np.concatenate(pred["forces"]) / scales.forces,
    }
    if energy_ref is not None:
        arrays["energy_ref"] = np.asarray(energy_ref) / scales.energy
    if forces_ref is not None:
        arrays["forces_ref"] = np.concatenate(forces_ref) / scales.forces
    if "stress" in pred:
        arrays["stress_pred"] = pred["stress"] / scales.stress

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    files.atomic_write_bytes(path, buffer.getvalue())


def parity_plot(
    path: Path,
    scales: LossScales,
    energy_unit: str,
    length_unit: str,
    energy_ref: np.ndarray | None,
    forces_ref: list[np.ndarray] | None,
    pred: dict[str, Any],
) -> None:
    """Predicted against reference energies and force components (PNG, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    if energy_ref is not None:
        ref = np.asarray(energy_ref) / scales.energy
        offset = float(np.mean(ref))  # total energies are large; plot them relative to the mean
        panels.append(
            ("energy", ref - offset, pred["energy"] / scales.energy - offset, f"E − {offset:.6g} ({energy_unit})")
        )
    if forces_ref is not None:
        panels.append(
            (
                "forces",
                np.concatenate(forces_ref).reshape(-1) / scales.forces,
                np.concatenate(pred["forces"]).reshape(-1) / scales.forces,
                f"force components ({energy_unit}/{length_unit})",
            )
        )
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.6), squeeze=False)
    for ax, (title, ref, prd, label) in zip(axes[0], panels, strict=True):
        ax.scatter(ref, prd, s=3, alpha=0.5, rasterized=True)
        lo, hi = float(min(ref.min(), prd.min())), float(max(ref.max(), prd.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        mae = float(np.mean(np.abs(prd - ref)))
        ax.set(xlabel=f"reference {label}", ylabel=f"predicted {label}", title=f"{title}: MAE {mae:.4g}")
        ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    files.atomic_write_bytes(path, buffer.getvalue())


def format_table(metrics: dict[str, Any]) -> str:
    """The metrics as a text table (user's units)."""
    e_unit = metrics["units"]["energy"]
    f_unit = f"{e_unit}/{metrics['units']['length']}"
    lines = [
        f"{metrics['model']} on {metrics['data']} [{metrics['split']}]: {metrics['n_structures']} structures, "
        f"{metrics['n_atoms']} atoms",
        f"{'quantity':<38}{'MAE':>12}{'RMSE':>12}",
    ]
    rows = [
        ("energy", f"{e_unit}", "energy_mae", "energy_rmse"),
        ("energy per atom", f"{e_unit}", "energy_per_atom_mae", "energy_per_atom_rmse"),
        ("forces (per component)", f_unit, "forces_mae", "forces_rmse"),
        ("stress", f"{e_unit}/{metrics['units']['length']}³", "stress_mae", "stress_rmse"),
    ]
    for name, unit, mae, rmse in rows:
        if mae in metrics:
            lines.append(f"{name + ' [' + unit + ']':<38}{metrics[mae]:>12.5g}{metrics[rmse]:>12.5g}")
    per_formula = metrics.get("per_formula", {})
    if per_formula:
        parts = []
        if "structure_averaged_energy_mae" in metrics:
            parts.append(f"energy {metrics['structure_averaged_energy_mae']:.5g} {e_unit}")
        if "structure_averaged_forces_mae" in metrics:
            parts.append(f"forces {metrics['structure_averaged_forces_mae']:.5g} {f_unit}")
        lines.append(f"per-structure averaged MAE over {len(per_formula)} formula(s): " + ", ".join(parts))
    return "\n".join(lines)
