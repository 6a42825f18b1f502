"""The training loop: epochs of shuffled padded batches, EMA validation, checkpoints, resume.

Outline of :func:`train`:

1. the data pipeline (``pipeline.py``): read the data (eV/Å), split it (or reload the saved split on
   resume), build every neighbour list once, and fix one padded shape for every batch (the largest batch
   any epoch can draw), so the train step and the evaluation step compile once each;
2. normalisation from the training set (per-element shift, force-RMS scale; ``normalization.py``), the
   initial weights, or the state of the checkpoint on resume (``checkpoint.py``);
3. the jitted steps (``steps.py``: eq. 35 loss, gradient, clipped Adam, EMA), on one device or sharded;
4. per epoch: a permutation from ``default_rng([seed, epoch])``, one step per batch, validation with the
   EMA weights, learning-rate schedule, best model (``model.safetensors``), early stopping, checkpoint,
   ``metrics.csv`` and TensorBoard (``records.py``); a time limit and SIGTERM stop between epochs;
5. at the end: the best EMA weights with the energy constant c of A.14 (β = 1) are saved as the model,
   with the learning curve as a PNG.

Data parallel (``devices``; automatic when JAX sees several devices, or several ``jax.distributed``
processes): each process owns a contiguous shard of the training set and draws its part of every global
batch from it; the part is split over its local devices and the step is sharded over the global mesh.
Validation runs on every process alike (so all take the same decisions); only process 0 writes files. A
stream directory (``so3krates prepare``) as data builds graphs on access in a background thread instead
of all up front.

Every file is replaced atomically. A run killed at any point continues with ``resume=True`` from its
last completed epoch with the same optimiser state, EMA, learning-rate state, random state and split.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from so3krates import run_dir as rd
from so3krates.data import Frames
from so3krates.data.stream import StreamDataset
from so3krates.data.units import energy_factor, length_factor
from so3krates.deprecation import moved
from so3krates.potential import traced_variables
from so3krates.precision import enable_float64
from so3krates.train import parallel as par
from so3krates.train.batching import epoch_chunks
from so3krates.train.checkpoint import CHECKPOINT_FILE, Checkpoint, Progress, save_checkpoint
from so3krates.train.config import TrainConfig
from so3krates.train.loss import UNIT_SCALES, LossScales
from so3krates.train.metrics import predict_graphs, validation_metrics
from so3krates.train.normalization import energy_constant_of_shards, residual_energies
from so3krates.train.optim import LearningRateSchedule
from so3krates.train.pipeline import BatchShapes, TrainingData, batch_shapes, open_training_data, prefetch, symbols
from so3krates.train.preflight import clear_previous_run
from so3krates.train.records import (
    EpochRecords,
    TrainResult,
    report_epoch,
    run_metadata,
    save_trained_model,
    start_run_directory,
    training_summary,
)
from so3krates.train.startup import Steps, TrainingSetup, build_model, place_steps, run_configuration
from so3krates.train.stopping import (
    Interrupted,
    early_stop,
    out_of_time,
    signal_number,
    sigterm_interrupts,
    write_failures,
)

__all__ = ["TrainResult", "TrainingDiverged", "train"]  # TrainResult lives in records


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite (a ValueError so that the CLI prints it without a traceback)."""


@dataclass
class _Run:
    """What the epochs need, fixed before the first one."""

    config: TrainConfig
    run_dir: Path
    data: TrainingData
    shapes: BatchShapes
    model: TrainingSetup
    steps: Steps
    scales: LossScales  # the user's units: reported errors
    log: Callable[[str], None]
    writes: bool

    def validate(self, variables: Any) -> dict[str, Any]:
        """Loss and errors of ``variables`` on the validation set (empty without validation frames)."""
        if not self.data.valid_graphs:
            return {}
        evaluate, s = self.steps.evaluate, self.shapes
        return validation_metrics(
            evaluate, variables, self.data.valid_graphs, s.valid_sizes, s.valid_batch, self.model.all_pairs, self.scales
        )


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    frames: Frames | StreamDataset | None = None,
    log: Callable[[str], None] = print,
    devices: int | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train a So3krates model as configured and write the model directory ``run_dir``.

    Args:
        config: every option (see :class:`TrainConfig`); ``config.data`` None means the bundled dataset.
        run_dir: output directory (created). Must be missing or empty, or hold this run when ``resume``
            (then it must have its checkpoint if it completed an epoch); checked, with a write probe,
            before any data is read.
        resume: continue the run in ``run_dir`` from ``checkpoint_latest.msgpack`` (with its split).
            ``config`` must equal the run's saved one except in what may change on resume (max_epochs,
            max_time, patience, progress, the data's path); anything else is refused, naming it.
        frames: already-read data (eV, Å) or an open stream; by default ``config.data`` is read with the
            data layer (a stream directory is opened memory-mapped).
        log: where progress lines go (tqdm bars go to stderr when ``config.progress``).
        devices: number of devices for data-parallel training (None: all, when JAX sees more than one;
            1: a single device). With several processes (``jax.distributed``) all devices are used.
        overwrite: a new run may go into a ``run_dir`` holding a run (whose own files are replaced) or
            other files (left alone).
    Returns:
        A :class:`TrainResult` (``stopped == "interrupted"`` after Ctrl-C or SIGTERM between epochs).
    Raises:
        Interrupted: Ctrl-C or SIGTERM before the first epoch was completed (nothing to resume).
        OSError: a write failed (a full disk): it names the file and the checkpoint that is intact.
    """
    clock = time.perf_counter()
    run_dir, writes = Path(run_dir), par.is_writer()
    config = run_configuration(run_dir, config, resume, overwrite, writes)
    par.sync_processes("so3krates train: start")  # all have checked run_dir before process 0 writes into it
    if not writes:
        log, config = _silent, config.replace(progress=False)
    if config.model.dtype == "float64":
        enable_float64()  # the configuration asks for a float64 model; before any array exists

    data = open_training_data(config, run_dir, resume, frames, log, jax.process_index(), jax.process_count())
    shapes = batch_shapes(config, data, jax.process_count())
    scales = LossScales.from_units(energy_factor(config.energy_unit), length_factor(config.length_unit))
    loss_scales = UNIT_SCALES if config.loss_units == "eV" else scales  # what the loss is computed in
    schedule = LearningRateSchedule.from_config(config)
    model, ckpt = build_model(config, data, shapes, schedule, run_dir if resume else None, log)
    if overwrite and writes:
        clear_previous_run(run_dir)  # only now: a bad --data or model leaves the previous run as it was
    metadata = start_run_directory(
        run_dir, config, data.split, run_metadata(config, data, model.initial_params), resume, writes
    )
    steps, state = place_steps(model, config, data, shapes, ckpt, scales, loss_scales, devices, log)
    run = _Run(config, run_dir, data, shapes, model, steps, scales, log, writes)
    progress = Progress.from_checkpoint(ckpt)
    records = EpochRecords(run_dir, progress.history, ckpt.epoch, writes)
    log(
        f"training {metadata['num_parameters']:,} parameters on {len(data.split['train'])} structures "
        f"(validation {len(data.valid_graphs)}), batch {shapes.batch_size}, padded to {shapes.sizes.n_atoms} atoms / "
        f"{shapes.sizes.n_edges} edges; elements {' '.join(symbols(data.elements))}; units {config.energy_unit}, "
        f"{config.length_unit}" + ("; loss in eV, Å" if config.loss_units == "eV" else "")
    )
    with write_failures(run_dir, lambda: progress.saved_epoch):
        stopped, signum = _run_epochs(run, state, progress, schedule, records, clock)
        return _finish(run, progress, metadata, stopped, signum, clock)


def _finish(
    run: _Run, progress: Progress, metadata: dict[str, Any], stopped: str, signum: int | None, clock: float
) -> TrainResult:
    """The saved model (the best EMA weights, c of A.14 fitted), its metadata and learning curve."""
    if progress.epoch == 0:
        if signum is not None:
            raise Interrupted(signum, "before the first epoch was completed: nothing was saved")
        raise ValueError(f"{run.run_dir}: no epoch was completed (stopped: {stopped}); no model was saved")
    variables, c = _final_variables(run, progress.best_ema)
    valid_metrics = run.validate(variables)
    wall = time.perf_counter() - clock
    summary = training_summary(
        progress.epoch, progress.best_epoch, progress.best_loss, stopped, wall, valid_metrics, progress.history
    )
    metadata.update(energy_constant=float(c), energy_constant_fitted=_fits_constant(run), training=summary)
    if run.writes:
        save_trained_model(run.run_dir, run.config, variables, metadata, run.data.split, progress.history)
    return TrainResult(
        run_dir=run.run_dir,
        epochs=progress.epoch,
        best_epoch=progress.best_epoch,
        best_loss=progress.best_loss,
        stopped=stopped,
        wall_time=wall,
        valid_metrics=valid_metrics,
        energy_constant=c,
        history=progress.history,
        signal=signum,
    )


# -- epochs -------------------------------------------------------------------------------------------


def _run_epochs(
    run: _Run, state: Any, progress: Progress, schedule: LearningRateSchedule, records: EpochRecords, clock: float
) -> tuple[str, int | None]:
    """Train until ``max_epochs``, early stopping, the time limit, Ctrl-C or SIGTERM; returns why it stopped
    and the signal that interrupted it (None: none did)."""
    config = run.config
    stopped, signum = "max_epochs", None
    last_epoch_seconds: float | None = None
    outer = tqdm(
        total=config.max_epochs, initial=progress.epoch, unit="epoch", disable=not config.progress, dynamic_ncols=True
    )
    try:
        with sigterm_interrupts():
            while progress.epoch < config.max_epochs:
                if out_of_time(config.max_time, time.perf_counter() - clock, last_epoch_seconds):
                    stopped = "max_time"
                    break
                state, row, validated = _epoch(run, state, progress, schedule)
                _save_progress(run, state, progress, schedule)
                records.write(progress.history)
                last_epoch_seconds = row["time_s"]
                report_epoch(row, outer, run.log, config)
                if early_stop(config.patience, progress.bad_epochs, validated):
                    stopped = "early_stopping"
                    break
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (Interrupted): the checkpoint on disk is whole
        stopped, signum = "interrupted", signal_number(err)
        run.log(f"interrupted after epoch {progress.saved_epoch} (its checkpoint is saved); saving the best model")
    finally:
        outer.close()
        records.close()
    return stopped, signum


def _epoch(
    run: _Run, state: Any, progress: Progress, schedule: LearningRateSchedule
) -> tuple[Any, dict[str, Any], bool]:
    """Train one epoch, validate (every ``valid_every`` epochs and at the last), keep the best model,
    step the schedule; appends the epoch's row to the history. Returns the state, the row and whether
    it validated."""
    t0 = time.perf_counter()
    lr = schedule.lr
    state, row = _train_epoch(run, state, progress, lr)
    progress.epoch = epoch = row["epoch"]
    validate = epoch % run.config.valid_every == 0 or epoch == run.config.max_epochs
    criterion = _validate_epoch(run, state, progress, row) if validate else row["train_loss"]
    schedule.end_epoch(epoch, criterion if validate else None)
    row["best"] = int(validate and progress.best_epoch == epoch)
    row["time_s"] = time.perf_counter() - t0
    row["elapsed_s"] = (progress.history[-1]["elapsed_s"] if progress.history else 0.0) + row["time_s"]
    progress.history.append(row)
    return state, row, validate


def _train_epoch(run: _Run, state: Any, progress: Progress, lr: float) -> tuple[Any, dict[str, Any]]:
    """One pass over this process's shard in the epoch's order; the epoch's training row."""
    config, shapes, step = run.config, run.shapes, run.steps.train
    n_proc, epoch = jax.process_count(), progress.epoch
    n_graphs, seed, rank = len(run.data.train_graphs), config.seed, jax.process_index()
    chunks = epoch_chunks(n_graphs, shapes.local_batch, shapes.steps_per_epoch, seed, epoch, rank, n_proc)
    total, desc = len(run.data.split["train"]), f"epoch {epoch + 1}"
    bar = tqdm(total=total, unit="struct", leave=False, desc=desc, disable=not config.progress, dynamic_ncols=True)
    lr_device, stats = step.learning_rate(lr), []
    with prefetch(run.steps.collator, chunks) as loader:
        for n_chunk, batch in loader:
            state, step_stats = step(state, batch, lr_device)
            stats.append(step_stats)
            bar.update(n_chunk * n_proc)
    stats = step.host(stats)
    bar.close()
    totals = {k: float(np.sum([s[k] for s in stats])) for k in stats[0]}
    train_loss = totals["loss_sum"] / max(totals["n_structures"], 1)
    if not math.isfinite(train_loss):
        raise TrainingDiverged(
            f"training diverged at epoch {epoch + 1} (loss {train_loss}); try a smaller --lr or check the data"
        )
    if _fits_constant(run) and totals["n_energy"]:
        progress.provisional_c = totals["energy_diff_sum"] / totals["n_energy"]
    n_e, n_f = totals["n_energy"], totals["n_force_components"]
    return state, {
        "epoch": epoch + 1,
        "time_s": 0.0,
        "elapsed_s": 0.0,
        "lr": lr,
        "train_loss": train_loss,
        "train_energy_mae": totals["energy_abs_sum"] / n_e if n_e else None,
        "train_forces_mae": totals["forces_abs_sum"] / n_f if n_f else None,
        "grad_norm_max": float(np.max([s["grad_norm"] for s in stats])),
    }


def _validate_epoch(run: _Run, state: Any, progress: Progress, row: dict[str, Any]) -> float:
    """Validate the EMA weights (adds ``valid_*`` to ``row``), save them as the model when the criterion
    (validation loss, or training loss without validation frames) improved; returns the criterion."""
    step = run.steps.train
    normalization = {**run.model.normalization, "energy_offset": np.asarray(progress.provisional_c, np.float64)}
    ema = state.ema if step.mesh is None else step.host(state.ema)
    valid = run.validate({"params": ema, "normalization": normalization})
    row.update({f"valid_{k}": v for k, v in valid.items()})
    criterion = valid.get("loss", row["train_loss"])
    if criterion < progress.best_loss:
        progress.best_loss, progress.best_epoch, progress.bad_epochs = criterion, progress.epoch, 0
        progress.best_ema = step.host(state.ema)
        if run.writes:
            rd.save_weights(run.run_dir, {"params": progress.best_ema, "normalization": _host(normalization)})
    else:
        progress.bad_epochs += 1
    return criterion


def _save_progress(run: _Run, state: Any, progress: Progress, schedule: LearningRateSchedule) -> None:
    """The checkpoint after an epoch (process 0 only)."""
    if not run.writes:
        return
    host = run.steps.train.host
    save_checkpoint(
        run.run_dir / CHECKPOINT_FILE,
        Checkpoint(
            params=host(state.params),
            ema=host(state.ema),
            best_ema=progress.best_ema,
            opt_state=host(state.opt_state),
            normalization=run.model.normalization,
            epoch=progress.epoch,
            step=int(host(state.step)),
            schedule=schedule.state_dict(),
            best_loss=progress.best_loss,
            best_epoch=progress.best_epoch,
            bad_epochs=progress.bad_epochs,
            seed=run.config.seed,
            history=progress.history,
        ),
    )
    progress.saved_epoch = progress.epoch


# -- the model ----------------------------------------------------------------------------------------


def _fits_constant(run: _Run) -> bool:
    """Whether c of A.14 is fitted: β = 1 (no energy in the loss) and the data has energies."""
    return run.config.beta >= 1.0 and run.data.frames.energy is not None


def _final_variables(run: _Run, best_ema: Any) -> tuple[dict[str, Any], float]:
    """The saved model's variables (the best EMA weights) and c of A.14, fitted on the training set."""
    normalization = {k: np.asarray(v) for k, v in run.model.normalization.items()}
    variables = {"params": best_ema, "normalization": normalization}
    if not _fits_constant(run):
        return variables, 0.0
    run.log("fitting the energy constant c (A.14) on the training set")
    data, shapes, eval_step = run.data, run.shapes, run.steps.evaluate
    pred = predict_graphs(
        lambda b: eval_step(traced_variables(variables), b),
        data.train_graphs,
        shapes.valid_sizes,
        shapes.valid_batch,
        all_pairs=run.model.all_pairs,
    )  # interaction energies: c is fitted to the residuals E − Σ_i shift[z_i], in float64
    reference = residual_energies(data.frames, data.local_train, normalization["shift"])
    c = energy_constant_of_shards(reference, pred["energy"])  # A.14: mean(E_ref − E_pred) over the training set
    normalization["energy_offset"] = np.asarray(c, np.float64)
    return variables, c


def _host(tree: Any) -> Any:
    return jax.tree_util.tree_map(np.asarray, tree)


def _silent(line: str) -> None:
    """The log of processes other than 0: their lines would repeat process 0's."""


_OLD_NAMES = {"make_steps": "so3krates.train.steps", "TrainState": "so3krates.train.steps"}
_OLD_NAMES["NORMALISATION_FRAMES"] = "so3krates.train.normalization:NORMALIZATION_FRAMES"
for _name in ("write_metrics_csv", "plot_learning_curve", "METRICS_FILE", "CURVE_FILE", "TENSORBOARD_DIR"):
    _OLD_NAMES[_name] = "so3krates.train.records"
__getattr__ = moved(__name__, _OLD_NAMES)
