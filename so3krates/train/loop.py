"""The training loop: epochs of shuffled padded batches, EMA validation, checkpoints, resume.

Outline of :func:`train`:

1. read the data (data layer, eV/Å), split it (or reload the saved split on resume), build every
   neighbour list once;
2. normalisation from the training set (per-element shift, force-RMS scale; ``normalisation.py``);
3. one padded shape for every batch (the largest batch any epoch can draw), so the train step and the
   evaluation step compile once each;
4. per epoch: a permutation from ``default_rng([seed, epoch])``, one jitted step per batch (eq. 35 loss,
   gradient, clipped Adam, EMA), validation with the EMA weights, learning-rate schedule, best model
   (``model.safetensors``), early stopping, checkpoint, ``metrics.csv`` and TensorBoard;
5. at the end: the best EMA weights with the energy constant c of A.14 (β = 1) are saved as the model,
   with the learning curve as a PNG.

Data parallel (``devices``; automatic when JAX sees several devices, or several ``jax.distributed``
processes): each process owns a contiguous shard of the training set and draws its part of every global
batch from it; the part is split over its local devices and the step (``so3krates.train.parallel``) is
sharded over the global mesh. Validation runs on every process alike (so all take the same decisions);
only process 0 writes files. A stream directory (``so3krates prepare``) as data builds graphs on access in
a background thread instead of all up front.

Every file is replaced atomically. A run killed at any point continues with ``resume=True`` from its
last completed epoch with the same optimiser state, EMA, learning-rate state, random state and split.
"""

from __future__ import annotations

import csv
import io
import json
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from ase.data import chemical_symbols
from tqdm.auto import tqdm

from so3krates import run_dir as rd
from so3krates.compile import jit
from so3krates.data import Frames, make_split
from so3krates.data.stream import Prefetcher, StreamDataset
from so3krates.data.units import energy_factor, length_factor
from so3krates.graph import Batch, Graph, PadSizes, collate
from so3krates.potential import Potential, residual_energy_graphs, traced_variables
from so3krates.precision import enable_float64
from so3krates.train import parallel as par
from so3krates.train.checkpoint import CHECKPOINT_FILE, Checkpoint, load_checkpoint, save_checkpoint
from so3krates.train.config import TrainConfig
from so3krates.train.data import (
    LazyGraphs,
    build_graphs,
    default_dataset_path,
    elements_of,
    file_sha256,
    load_frames,
)
from so3krates.train.loss import UNIT_SCALES, LossScales, structure_errors, structure_loss
from so3krates.train.metrics import batches, error_metrics, max_pad_sizes, predict_graphs
from so3krates.train.normalisation import energy_constant, initial_normalization
from so3krates.train.optim import LearningRateSchedule, apply_learning_rate, ema_update, make_optimizer

Array = jax.Array
METRICS_FILE = "metrics.csv"
# The per-element energy shift and force scale are fitted on at most this many training frames (a
# random subset of a larger set): enough for a handful of numbers, and streams never load everything.
NORMALISATION_FRAMES = 50_000
CURVE_FILE = "learning_curve.png"
TENSORBOARD_DIR = "tensorboard"


class TrainState(flax.struct.PyTreeNode):
    """What one optimiser step changes: weights, their moving average, Adam's moments, step count."""

    params: Any
    ema: Any
    opt_state: Any
    step: Array


@dataclass
class TrainResult:
    """Summary of a finished (or stopped) run.

    Attributes:
        run_dir: the model directory.  epochs: completed epochs.  best_epoch / best_loss: the saved model.
        stopped: "max_epochs", "early_stopping", "max_time" or "interrupted".
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


# -- jitted steps -------------------------------------------------------------------------------------


def make_steps(
    potential: Potential,
    config: TrainConfig,
    scales: LossScales,
    optimizer: optax.GradientTransformation,
    compute_stress: bool,
    loss_scales: LossScales | None = None,
) -> tuple[Callable, Callable]:
    """The jitted ``train_step(state, normalization, batch, lr)`` and ``eval_step(variables, batch)``.

    ``scales``: the file's units, in which the error sums of the statistics are reported; ``loss_scales``:
    the units of the loss (``config.loss_units``; default ``scales``)."""
    loss_scales = scales if loss_scales is None else loss_scales
    beta, stress_weight, ema_decay = config.beta, config.stress_weight, config.ema_decay

    def per_structure(params: Any, normalization: Any, batch: Batch) -> tuple[Array, dict[str, Array], Any]:
        pred = potential.predict({"params": params, "normalization": normalization}, batch, compute_stress)
        errors = structure_errors(pred, batch, loss_scales)
        return structure_loss(errors, beta, stress_weight), pred, errors

    def loss_fn(params: Any, normalization: Any, batch: Batch) -> tuple[Array, tuple[dict[str, Array], Array]]:
        per, pred, _ = per_structure(params, normalization, batch)
        n_real = jnp.maximum(jnp.sum(batch.graph_mask), 1)
        return jnp.sum(jnp.where(batch.graph_mask, per, 0.0)) / n_real, (pred, n_real)

    def train_step(
        state: TrainState, normalization: Any, batch: Batch, lr: Array
    ) -> tuple[TrainState, dict[str, Array]]:
        (loss, (pred, n_real)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, normalization, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, apply_learning_rate(updates, lr))
        ema = ema_update(state.ema, params, ema_decay, state.step) if ema_decay > 0 else params
        # Sums over the batch, reduced per epoch on the host (one transfer per epoch, not per step).
        has_e = batch.graph_mask & batch.has_energy
        e_diff = jnp.where(has_e, batch.energy - pred["interaction_energy"], 0.0)  # labels are residuals
        atom_ok = batch.node_mask & batch.has_forces[batch.node_graph]
        f_abs = jnp.where(atom_ok[:, None], jnp.abs(pred["forces"] - batch.forces), 0.0)
        stats = {
            "loss_sum": loss * n_real,
            "n_structures": n_real,
            "energy_abs_sum": jnp.sum(jnp.abs(e_diff)) / scales.energy,
            "energy_diff_sum": jnp.sum(e_diff),  # eV: the running estimate of c (A.14) for β = 1
            "n_energy": jnp.sum(has_e),
            "forces_abs_sum": jnp.sum(f_abs) / scales.forces,
            "n_force_components": 3 * jnp.sum(atom_ok),
            "grad_norm": optax.tree.norm(grads),
        }
        return TrainState(params, ema, opt_state, state.step + 1), stats

    def eval_step(variables: Any, batch: Batch) -> dict[str, Array]:
        """Interaction energies as ``energy`` (to compare with residual labels), forces[, stress], loss."""
        per, pred, _ = per_structure(variables["params"], variables["normalization"], batch)
        out = {"energy": pred["interaction_energy"], "forces": pred["forces"], "loss": per}
        return {**out, "stress": pred["stress"]} if "stress" in pred else out

    return jit(train_step), jit(eval_step)


# -- run directory helpers ----------------------------------------------------------------------------


def _sanitize(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.csv`` from the whole history (atomic; consistent with the checkpoint on resume)."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if _sanitize(v) is None else v) for k, v in row.items()})
    rd.atomic_write_text(path, buffer.getvalue())


def plot_learning_curve(path: Path, history: list[dict[str, Any]], energy_unit: str, length_unit: str) -> None:
    """Loss and validation MAEs against epoch, log scale (matplotlib, Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]

    def series(key: str) -> list[float]:
        return [float(row[key]) if _sanitize(row.get(key)) is not None else np.nan for row in history]

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
    rd.atomic_write_bytes(path, buffer.getvalue())


def _symbols(elements: list[int]) -> list[str]:
    return [chemical_symbols[z] for z in elements]


# -- the loop -----------------------------------------------------------------------------------------


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite (a ValueError so that the CLI prints it without a traceback)."""


class _Interrupted(Exception):
    """SIGTERM arrived: stop like Ctrl-C, keeping the best model."""


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    frames: Frames | StreamDataset | None = None,
    log: Callable[[str], None] = print,
    devices: int | None = None,
) -> TrainResult:
    """Train a So3krates model as configured and write the model directory ``run_dir``.

    Args:
        config: every option (see :class:`TrainConfig`); ``config.data`` None means the bundled dataset.
        run_dir: output directory (created). Must not already hold a run unless ``resume``.
        resume: continue the run in ``run_dir`` from ``checkpoint_latest.msgpack`` (with its split).
            The caller passes the run's saved configuration (possibly with a new max_epochs/max_time).
        frames: already-read data (eV, Å) or an open stream; by default ``config.data`` is read with the
            data layer (a stream directory is opened memory-mapped).
        log: where progress lines go (tqdm bars go to stderr when ``config.progress``).
        devices: number of devices for data-parallel training (None: all, when JAX sees more than one;
            1: a single device). With several processes (``jax.distributed``) all devices are used.
    Returns:
        A :class:`TrainResult`.
    """
    clock = time.perf_counter()
    run_dir = Path(run_dir)
    checkpoint_path = run_dir / CHECKPOINT_FILE
    n_proc, writes = jax.process_count(), par.is_writer()
    if not resume and any((run_dir / name).exists() for name in (CHECKPOINT_FILE, rd.WEIGHTS_FILE, rd.CONFIG_FILE)):
        raise ValueError(f"{run_dir} already contains a training run; use --resume to continue it or another --out")
    if n_proc > 1:
        from jax.experimental import multihost_utils

        # Every process has checked the run directory before process 0 writes anything into it.
        multihost_utils.sync_global_devices("so3krates train: start")
    if not writes:
        log = _silent
        config = config.replace(progress=False)
    if config.model.dtype == "float64":
        enable_float64()  # the configuration asks for a float64 model; before any array exists

    # -- data and split --------------------------------------------------------------------------
    data_path = Path(config.data) if config.data else default_dataset_path()
    if frames is None:
        frames = load_frames(
            data_path,
            config.energy_unit,
            config.length_unit,
            config.energy_key,
            config.forces_key,
            config.stress_key,
            require_energy=config.beta < 1.0,
            require_forces=config.beta > 0.0,
        )
    if config.beta < 1.0 and frames.energy is None:
        raise ValueError(f"{data_path}: no energies in the data, but beta = {config.beta} < 1 needs them")
    if config.beta > 0.0 and frames.forces is None:
        raise ValueError(f"{data_path}: no forces in the data, but beta = {config.beta} > 0 needs them")
    if resume and (run_dir / rd.SPLIT_FILE).exists():
        split = rd.read_split(run_dir)
        top = max((int(v.max()) for v in split.values() if len(v)), default=-1)
        if top >= len(frames):
            raise ValueError(
                f"{run_dir / rd.SPLIT_FILE} refers to frame {top} but {data_path} has {len(frames)} frames: "
                "the data changed since the run started"
            )
    else:
        split = make_split(len(frames), config.n_train, config.n_valid, config.n_test, seed=config.seed)
    if len(split["train"]) == 0:
        raise ValueError(f"{data_path}: the split leaves no training frames")
    if len(split["train"]) < n_proc:
        raise ValueError(f"{data_path}: {len(split['train'])} training frames cannot be shared by {n_proc} processes")

    elements = elements_of(frames, split["train"])
    unseen = sorted(set(elements_of(frames, split["valid"])) - set(elements))
    if unseen:
        raise ValueError(
            f"{data_path}: element(s) {_symbols(unseen)} occur in validation frames but in no training frame; "
            "use more training frames or another --seed"
        )
    unseen_test = sorted(set(elements_of(frames, split["test"])) - set(elements))
    if unseen_test:
        log(
            f"warning: element(s) {_symbols(unseen_test)} occur only in test frames; the model will not know them "
            "and evaluation will refuse those frames"
        )
    if max(elements) > config.model.max_atomic_number:
        raise ValueError(f"{data_path}: atomic number {max(elements)} exceeds the model's max_atomic_number")

    potential = Potential(config.model)
    r_cut = config.model.r_cut
    all_pairs = config.model.nonlocal_correction
    # This process's shard of the training set (all of it with one process).
    local_train = par.process_shard(split["train"], jax.process_index(), n_proc)
    streamed = isinstance(frames, StreamDataset)
    if streamed:
        log(f"streaming {data_path}: neighbour lists (r_cut = {r_cut} Å) are built batch by batch")
        train_graphs: Any = LazyGraphs(frames, local_train, r_cut)
        valid_graphs: Any = LazyGraphs(frames, split["valid"], r_cut)
        log(f"counting atoms and edges of {len(train_graphs) + len(valid_graphs)} structures for the padded shape")
        size_source = train_graphs.sizes() + valid_graphs.sizes()
    else:
        log(f"building neighbour lists (r_cut = {r_cut} Å) for {len(local_train) + len(split['valid'])} structures")
        train_graphs = build_graphs(frames, local_train, r_cut)
        valid_graphs = build_graphs(frames, split["valid"], r_cut)
        size_source = train_graphs + valid_graphs
    batch_size = min(config.batch_size, len(split["train"]))
    valid_batch = config.valid_batch_size or config.batch_size
    sizes = _agree(max_pad_sizes(size_source, batch_size, all_pairs))
    # The evaluation step also runs over the training set (energy constant), so it must fit both.
    valid_sizes = sizes if valid_batch == batch_size else _agree(max_pad_sizes(size_source, valid_batch, all_pairs))
    scales = LossScales.from_units(energy_factor(config.energy_unit), length_factor(config.length_unit))
    loss_scales = UNIT_SCALES if config.loss_units == "eV" else scales  # what the loss is computed in
    compute_stress = config.stress_weight > 0 and frames.stress is not None

    # -- model, optimiser, state -----------------------------------------------------------------
    norm_idx = split["train"]
    if len(norm_idx) > NORMALISATION_FRAMES:
        norm_idx = np.sort(np.random.default_rng(config.seed).choice(norm_idx, NORMALISATION_FRAMES, replace=False))
    normalization = initial_normalization(
        [frames.numbers[int(i)] for i in norm_idx],
        None if frames.energy is None else np.asarray(frames.energy[norm_idx]),
        None if frames.forces is None else [frames.forces[int(i)] for i in norm_idx],
        config.model.max_atomic_number,
        config.model.dtype,
    )
    first = [train_graphs[k] for k in range(min(batch_size, len(train_graphs)))]
    init_batch = collate(first, sizes, all_pairs=all_pairs)
    params = jax.jit(potential.init)(jax.random.PRNGKey(config.seed), init_batch)["params"]
    optimizer = make_optimizer(config.grad_clip)
    opt_state = optimizer.init(params)
    schedule = LearningRateSchedule.from_config(config)
    ckpt = Checkpoint(
        params=params,
        ema=params,
        best_ema=params,
        opt_state=opt_state,
        normalization=normalization,
        epoch=0,
        step=0,
        schedule=schedule.state_dict(),
        best_loss=math.inf,
        best_epoch=0,
        bad_epochs=0,
        seed=config.seed,
    )
    if resume and checkpoint_path.exists():
        ckpt = load_checkpoint(checkpoint_path, params, opt_state)
        if ckpt.seed != config.seed:
            raise ValueError(f"{checkpoint_path}: seed {ckpt.seed} differs from the configuration's {config.seed}")
        schedule.load_state_dict(ckpt.schedule)
        normalization = ckpt.normalization
        log(f"resuming {run_dir} after epoch {ckpt.epoch} (step {ckpt.step}, best epoch {ckpt.best_epoch})")
    elif resume:
        log(f"{run_dir} has no checkpoint yet: starting its training from the beginning")

    source = str(data_path.resolve())
    metadata: dict[str, Any] = {
        "elements": elements,
        "element_symbols": _symbols(elements),
        "units": {"energy": config.energy_unit, "length": config.length_unit},
        "model_units": {"energy": "eV", "length": "Å", "forces": "eV/Å", "stress": "eV/Å³"},
        "energy_constant": 0.0,
        "energy_constant_fitted": False,
        "data_source": source,
        "data_sha256": file_sha256(data_path) if data_path.is_file() else None,
        "n_frames": len(frames),
        "keys": {"energy": config.energy_key, "forces": config.forces_key, "stress": config.stress_key},
        "split_file": rd.SPLIT_FILE,
        "split_sizes": {k: len(v) for k, v in split.items()},
        "seed": config.seed,
        "num_parameters": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params))),
    }
    fresh = not resume or not (run_dir / rd.CONFIG_FILE).exists()
    if fresh and writes:
        run_dir.mkdir(parents=True, exist_ok=True)
        rd.save_split_file(run_dir / rd.SPLIT_FILE, split)
        rd.atomic_write_text(run_dir / rd.CONFIG_FILE, _yaml(config.to_dict()))
        rd.atomic_write_text(
            run_dir / rd.METADATA_FILE, json.dumps(_metadata(metadata, started=_now()), indent=2, ensure_ascii=False)
        )
    elif not fresh:
        metadata = {**rd.read_metadata(run_dir), **{k: v for k, v in metadata.items() if k != "num_parameters"}}

    train_step, eval_step = make_steps(potential, config, scales, optimizer, compute_stress, loss_scales)
    state = TrainState(
        params=ckpt.params, ema=ckpt.ema, opt_state=ckpt.opt_state, step=jnp.asarray(ckpt.step, jnp.int32)
    )
    # The device sees the per-element scale only; the float64 shifts stay on the host (residual labels).
    norm_device = traced_variables({"params": None, "normalization": normalization})["normalization"]
    norm_device = jax.tree_util.tree_map(jnp.asarray, norm_device)
    parallel = n_proc > 1 or (len(jax.devices()) > 1 if devices is None else devices > 1)
    host: Callable[[Any], Any] = jax.device_get
    local_batch = math.ceil(batch_size / n_proc)  # this process's part of each global batch
    steps_per_epoch = math.ceil(math.ceil(len(split["train"]) / n_proc) / local_batch)  # the largest shard's
    if parallel:
        mesh = par.make_mesh(par.select_devices(devices))
        n_local = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
        device_sizes = _agree(par.max_device_pad_sizes(size_source, math.ceil(local_batch / n_local), all_pairs))
        train_step = par.make_parallel_train_step(
            potential,
            optimizer,
            par.eq35_structure_loss(config.beta, config.stress_weight, loss_scales),
            mesh,
            compute_stress=compute_stress,
            ema_decay=config.ema_decay,
            scales=scales,
        )
        # Validation keeps the single-device eval_step: one device per process, the same on every process.
        state = par.replicate(state, mesh)
        norm_sharded = par.replicate(norm_device, mesh)
        host = par.to_host
        log(
            f"data parallel over {mesh.devices.size} device(s) in {n_proc} process(es): "
            f"{math.ceil(local_batch / n_local)} structures per device, padded to {device_sizes.n_atoms} atoms / "
            f"{device_sizes.n_edges} edges"
        )

    def make_batch(chunk: np.ndarray) -> tuple[int, Batch]:
        """A training batch from indices into this process's graphs (runs in the prefetch thread)."""
        members = residual_energy_graphs([train_graphs[int(k)] for k in chunk], normalization)
        if parallel:
            return len(chunk), par.stack_batches(par.split_for_devices(members, n_local), device_sizes, all_pairs)
        return len(chunk), collate(members, sizes, all_pairs=all_pairs)

    history = list(ckpt.history)
    if writes:
        write_metrics_csv(run_dir / METRICS_FILE, history)  # drops rows of epochs the checkpoint does not have
    from tensorboardX import SummaryWriter

    writer = (
        SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=ckpt.epoch + 1 if ckpt.epoch else None)
        if writes
        else _NoWriter()
    )
    log(
        f"training {metadata['num_parameters']:,} parameters on {len(split['train'])} structures "
        f"(validation {len(valid_graphs)}), batch {batch_size}, padded to {sizes.n_atoms} atoms / "
        f"{sizes.n_edges} edges; elements {' '.join(_symbols(elements))}; units {config.energy_unit}, "
        f"{config.length_unit}" + ("; loss in eV, Å" if config.loss_units == "eV" else "")
    )

    epoch, best_loss, best_epoch, bad_epochs = ckpt.epoch, ckpt.best_loss, ckpt.best_epoch, ckpt.bad_epochs
    best_ema = ckpt.best_ema
    provisional_c = 0.0
    fit_constant = config.beta >= 1.0 and frames.energy is not None
    stopped = "max_epochs"
    last_epoch_seconds: float | None = None
    outer = tqdm(total=config.max_epochs, initial=epoch, unit="epoch", disable=not config.progress, dynamic_ncols=True)
    previous_sigterm = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise _Interrupted()

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        previous_sigterm = None

    try:
        while epoch < config.max_epochs:
            elapsed = time.perf_counter() - clock
            if config.max_time is not None and last_epoch_seconds is not None:
                if elapsed + last_epoch_seconds > config.max_time:
                    stopped = "max_time"
                    break
            t0 = time.perf_counter()
            lr = schedule.lr
            # With one process: the permutation of the whole training set, as without data parallelism.
            seed_seq = [config.seed, epoch] if n_proc == 1 else [config.seed, epoch, jax.process_index()]
            order = np.random.default_rng(seed_seq).permutation(len(train_graphs))
            chunks = batches(order, local_batch)
            # Every process takes the same number of steps; a shorter shard ends with empty parts.
            chunks += [order[:0]] * (steps_per_epoch - len(chunks))
            stats: list[Any] = []
            inner = tqdm(
                total=len(split["train"]),
                unit="struct",
                leave=False,
                desc=f"epoch {epoch + 1}",
                disable=not config.progress,
                dynamic_ncols=True,
            )
            # A host scalar for the sharded step (replicated by jit), a device scalar otherwise.
            lr_device = np.float32(lr) if parallel else jnp.asarray(lr, jnp.float32)
            with Prefetcher(make_batch, chunks, depth=2) as loader:
                for n_chunk, batch in loader:
                    if parallel:
                        state, step_stats = train_step(state, norm_sharded, par.shard_batch(batch, mesh), lr_device)
                    else:
                        state, step_stats = train_step(state, norm_device, batch, lr_device)
                    stats.append(step_stats)
                    inner.update(n_chunk * n_proc)
            stats = host(stats)
            totals = {k: float(np.sum([s[k] for s in stats])) for k in stats[0]}
            inner.close()
            epoch += 1
            train_seconds = time.perf_counter() - t0
            train_loss = totals["loss_sum"] / max(totals["n_structures"], 1)
            if not math.isfinite(train_loss):
                raise TrainingDiverged(
                    f"training diverged at epoch {epoch} (loss {train_loss}); try a smaller --lr or check the data"
                )
            if fit_constant and totals["n_energy"]:
                provisional_c = totals["energy_diff_sum"] / totals["n_energy"]
            row: dict[str, Any] = {
                "epoch": epoch,
                "time_s": 0.0,
                "elapsed_s": 0.0,
                "lr": lr,
                "train_loss": train_loss,
                "train_energy_mae": totals["energy_abs_sum"] / totals["n_energy"] if totals["n_energy"] else None,
                "train_forces_mae": (
                    totals["forces_abs_sum"] / totals["n_force_components"] if totals["n_force_components"] else None
                ),
                "grad_norm_max": float(np.max([s["grad_norm"] for s in stats])),
            }

            validate = epoch % config.valid_every == 0 or epoch == config.max_epochs
            criterion = train_loss
            improved = False
            if validate:
                ema_vars = {
                    "params": host(state.ema) if parallel else state.ema,
                    "normalization": {**normalization, "energy_offset": np.asarray(provisional_c, np.float64)},
                }
                if valid_graphs:
                    valid = _validate(eval_step, ema_vars, valid_graphs, valid_sizes, valid_batch, all_pairs, scales)
                    row.update({f"valid_{k}": v for k, v in valid.items()})
                    criterion = valid["loss"]
                if criterion < best_loss:
                    best_loss, best_epoch, bad_epochs, improved = criterion, epoch, 0, True
                    best_ema = host(state.ema)
                    if writes:
                        rd.save_weights(
                            run_dir, {"params": best_ema, "normalization": _host(ema_vars["normalization"])}
                        )
                else:
                    bad_epochs += 1
            schedule.end_epoch(epoch, criterion if validate else None)
            row["best"] = int(improved)
            row["time_s"] = time.perf_counter() - t0
            row["elapsed_s"] = (history[-1]["elapsed_s"] if history else 0.0) + row["time_s"]
            history.append(row)

            if writes:
                save_checkpoint(
                    checkpoint_path,
                    Checkpoint(
                        params=host(state.params),
                        ema=host(state.ema),
                        best_ema=best_ema,
                        opt_state=host(state.opt_state),
                        normalization=normalization,
                        epoch=epoch,
                        step=int(host(state.step)),
                        schedule=schedule.state_dict(),
                        best_loss=best_loss,
                        best_epoch=best_epoch,
                        bad_epochs=bad_epochs,
                        seed=config.seed,
                        history=history,
                    ),
                )
                write_metrics_csv(run_dir / METRICS_FILE, history)
            for key, value in row.items():
                if key != "epoch" and isinstance(value, int | float) and _sanitize(value) is not None:
                    writer.add_scalar(key, value, epoch)
            writer.flush()
            last_epoch_seconds = row["time_s"]
            _report(row, outer, log, config, train_seconds)

            if config.patience is not None and bad_epochs >= config.patience and validate:
                stopped = "early_stopping"
                break
    except (KeyboardInterrupt, _Interrupted):
        stopped = "interrupted"
        log("interrupted: saving the best model so far")
    finally:
        outer.close()
        writer.close()
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)

    # -- the model ---------------------------------------------------------------------------------
    if epoch == 0:
        raise ValueError(f"{run_dir}: no epoch was completed (stopped: {stopped}); no model was saved")
    final_norm = {k: np.asarray(v) for k, v in normalization.items()}
    final_vars = {"params": best_ema, "normalization": final_norm}
    c = 0.0
    if fit_constant:
        # A.14: c = mean(E_ref − E_pred) over the training set with the final weights (eq. 37).
        log("fitting the energy constant c (A.14) on the training set")
        pred = predict_graphs(
            lambda b: eval_step(traced_variables(final_vars), b),
            train_graphs,
            valid_sizes,
            valid_batch,
            all_pairs=all_pairs,
        )  # interaction energies: c is fitted to the residuals E − Σ_i shift[z_i], in float64
        shift = np.asarray(final_norm["shift"], np.float64)
        reference = np.asarray(frames.energy[local_train], np.float64) - np.array(
            [shift[frames.numbers[int(k)]].sum() for k in local_train]
        )
        if n_proc == 1:
            c = energy_constant(reference, pred["energy"])
        else:  # the mean over every process's shard
            from jax.experimental import multihost_utils

            sums = multihost_utils.process_allgather(np.array([np.sum(reference - pred["energy"]), len(reference)]))
            c = float(np.sum(sums[:, 0]) / max(np.sum(sums[:, 1]), 1))
        final_norm["energy_offset"] = np.asarray(c, np.float64)
    valid_metrics = {}
    if valid_graphs:
        valid_metrics = _validate(eval_step, final_vars, valid_graphs, valid_sizes, valid_batch, all_pairs, scales)
    wall = time.perf_counter() - clock
    metadata.update(
        energy_constant=float(c),
        energy_constant_fitted=fit_constant,
        training={
            "epochs": epoch,
            "best_epoch": best_epoch,
            "best_valid_loss": _sanitize(best_loss),
            "stopped": stopped,
            "wall_time_s": (history[-1]["elapsed_s"] if history else wall),
            "valid_metrics": valid_metrics,
            "finished": _now(),
        },
    )
    if writes:
        rd.save_model(run_dir, config.to_dict(), final_vars, _metadata(metadata), split=split)
    if history and writes:
        plot_learning_curve(run_dir / CURVE_FILE, history, config.energy_unit, config.length_unit)
    return TrainResult(
        run_dir=run_dir,
        epochs=epoch,
        best_epoch=best_epoch,
        best_loss=best_loss,
        stopped=stopped,
        wall_time=wall,
        valid_metrics=valid_metrics,
        energy_constant=c,
        history=history,
    )


def _validate(
    eval_step: Callable,
    variables: Any,
    graphs: list[Graph],
    sizes: PadSizes,
    batch_size: int,
    all_pairs: bool,
    scales: LossScales,
) -> dict[str, Any]:
    """Eq. 35 loss and error figures (user's units) of ``variables`` on ``graphs``.

    Energies are compared as residuals E − (Σ_i shift[z_i] + c) (float64 on the host) with the model's
    interaction energies: the same errors as of the totals, without float32's rounding of the totals.
    """
    graphs = residual_energy_graphs(graphs, variables["normalization"])
    traced = traced_variables(variables)
    pred = predict_graphs(lambda b: eval_step(traced, b), graphs, sizes, batch_size, all_pairs=all_pairs)
    has_e = graphs[0].energy is not None
    has_f = graphs[0].forces is not None
    has_s = graphs[0].stress is not None and "stress" in pred
    metrics = error_metrics(
        [g.numbers for g in graphs],
        scales,
        energy_ref=np.array([g.energy for g in graphs]) if has_e else None,
        energy_pred=pred["energy"] if has_e else None,
        forces_ref=[g.forces for g in graphs] if has_f else None,
        forces_pred=pred["forces"] if has_f else None,
        stress_ref=np.array([g.stress for g in graphs]) if has_s else None,
        stress_pred=pred.get("stress") if has_s else None,
    )
    metrics.pop("n_structures", None)
    metrics.pop("n_atoms", None)
    return {"loss": float(np.mean(pred["loss"])), **metrics}


def _report(row: dict[str, Any], bar: Any, log: Callable[[str], None], config: TrainConfig, seconds: float) -> None:
    """One line per epoch without bars; the epoch bar's postfix with them."""
    e_unit, l_unit = config.energy_unit, config.length_unit
    parts = [f"loss {row['train_loss']:.4g}"]
    if "valid_loss" in row:
        parts.append(f"valid {row['valid_loss']:.4g}")
    if "valid_energy_mae" in row:
        parts.append(f"E MAE {row['valid_energy_mae']:.4g} {e_unit}")
    if "valid_forces_mae" in row:
        parts.append(f"F MAE {row['valid_forces_mae']:.4g} {e_unit}/{l_unit}")
    parts.append(f"lr {row['lr']:.2e}")
    if config.progress:
        bar.set_postfix_str(", ".join(parts), refresh=False)
        bar.update(1)
    else:
        best = " *" if row.get("best") else ""
        log(f"epoch {row['epoch']}/{config.max_epochs}: " + ", ".join(parts) + f" ({row['time_s']:.1f} s){best}")


def _host(tree: Any) -> Any:
    return jax.tree_util.tree_map(np.asarray, tree)


def _agree(sizes: PadSizes) -> PadSizes:
    """The same padded sizes on every process (the largest of each), so that global arrays line up."""
    if jax.process_count() == 1:
        return sizes
    from jax.experimental import multihost_utils

    mine = np.array([sizes.n_atoms, sizes.n_edges, sizes.n_graphs, sizes.n_pairs], np.int64)
    top = np.max(multihost_utils.process_allgather(mine), axis=0)
    return PadSizes(int(top[0]), int(top[1]), int(top[2]), int(top[3]))


def _silent(line: str) -> None:
    """The log of processes other than 0: their lines would repeat process 0's."""


class _NoWriter:
    """TensorBoard stand-in on processes that do not write."""

    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _metadata(metadata: dict[str, Any], **extra: Any) -> dict[str, Any]:
    from so3krates import __version__

    return {"format_version": rd.FORMAT_VERSION, "so3krates_version": __version__, **metadata, **extra}


def _yaml(d: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True)
