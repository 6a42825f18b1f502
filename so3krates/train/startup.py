"""Before the first epoch: the model, its normalisation and initial (or resumed) state, and the steps
placed on their devices."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

from so3krates import run_dir as rd
from so3krates.graph import collate
from so3krates.potential import Potential, traced_variables
from so3krates.train import parallel as par
from so3krates.train.batching import max_device_pad_sizes
from so3krates.train.checkpoint import CHECKPOINT_FILE, Checkpoint, load_checkpoint
from so3krates.train.config import TrainConfig, resume_config
from so3krates.train.loss import LossScales
from so3krates.train.normalization import normalization_from_frames
from so3krates.train.optim import LearningRateSchedule, make_optimizer
from so3krates.train.pipeline import BatchCollator, BatchShapes, TrainingData, default_dataset_path, file_sha256
from so3krates.train.preflight import check_output, remove_temporaries
from so3krates.train.steps import DeviceStep, TrainState, make_steps


def run_configuration(
    run_dir: Path, config: TrainConfig, resume: bool, overwrite: bool = False, writes: bool = True
) -> TrainConfig:
    """The configuration to train ``run_dir`` with, after the checks of the run directory
    (:func:`~so3krates.train.preflight.check_output`: a new run must not overwrite one or mix into other
    files unless ``overwrite``; a resumed run needs its checkpoint; every file can be written). A resumed
    run keeps its saved configuration except what may change on resume
    (:func:`~so3krates.train.config.resume_config` names every other option that differs)."""
    check_output(run_dir, resume, overwrite)
    if resume and (run_dir / rd.CONFIG_FILE).exists():
        saved = TrainConfig.from_dict(rd.read_config(run_dir), where=str(run_dir / rd.CONFIG_FILE))
        config = resume_config(saved, config)
        _check_same_data(config, run_dir)
    if writes:
        remove_temporaries(run_dir)  # a killed write's; the previous run of --overwrite goes just before writing
    return config


def _check_same_data(config: TrainConfig, run_dir: Path) -> None:
    """Refuse to resume on a file that is not the one the run started with (its checksum in metadata.json)."""
    expected = rd.read_metadata(run_dir).get("data_sha256") if (run_dir / rd.METADATA_FILE).exists() else None
    path = Path(config.data) if config.data else default_dataset_path()
    if path.is_dir():
        return  # a stream directory: the split's frame indices are checked against its length on resume
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the run's training file does not exist (moved? give --data)")
    if expected and file_sha256(path) != expected:
        raise ValueError(f"{path} is not the file {run_dir} was trained on (its checksum differs)")


@dataclass(frozen=True)
class TrainingSetup:
    """What a run trains: the potential, the optimiser, the normalisation and the initial weights.

    Attributes:
        potential: the model.  optimizer: clipped Adam's direction.
        normalization: the run's normalisation (float64 shifts, kept on the host).
        initial_params: freshly initialised weights (their count goes into the metadata).
        all_pairs: batches carry all atom pairs (non-local correction).
    """

    potential: Potential
    optimizer: optax.GradientTransformation
    normalization: dict[str, Any]
    initial_params: Any
    all_pairs: bool


@dataclass(frozen=True)
class Steps:
    """The steps of a run on their devices.

    Attributes:
        train: the train step on its devices.  evaluate: the single-device evaluation step.
        collator: index chunks → the batches ``train`` takes.
    """

    train: DeviceStep
    evaluate: Callable[[Any, Any], dict[str, Any]]
    collator: BatchCollator


def build_model(
    config: TrainConfig,
    data: TrainingData,
    shapes: BatchShapes,
    schedule: LearningRateSchedule,
    resume_dir: Path | None,
    log: Callable[[str], None],
) -> tuple[TrainingSetup, Checkpoint]:
    """The model with its normalisation from the training set, and the state to start from: fresh
    weights, or the checkpoint in ``resume_dir`` (whose schedule state is loaded into ``schedule``)."""
    potential = Potential(config.model)
    all_pairs = config.model.nonlocal_correction
    normalization = normalization_from_frames(
        data.frames, data.split["train"], config.model.max_atomic_number, config.model.dtype, config.seed
    )
    first = [data.train_graphs[k] for k in range(min(shapes.batch_size, len(data.train_graphs)))]
    init_batch = collate(first, shapes.sizes, all_pairs=all_pairs)
    params = jax.jit(potential.init)(jax.random.PRNGKey(config.seed), init_batch)["params"]
    optimizer = make_optimizer(config.grad_clip)
    opt_state = optimizer.init(params)
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
    if resume_dir is not None:
        ckpt = _resumed(resume_dir, ckpt, opt_state, schedule, log)
    return TrainingSetup(potential, optimizer, ckpt.normalization, params, all_pairs), ckpt


def _resumed(
    run_dir: Path, fresh: Checkpoint, opt_state: Any, schedule: LearningRateSchedule, log: Callable[[str], None]
) -> Checkpoint:
    """The run's checkpoint (``fresh`` if it has none yet), its schedule state loaded into ``schedule``."""
    path = run_dir / CHECKPOINT_FILE
    if not path.exists():  # run_configuration refused this if the run had completed an epoch
        log(f"{run_dir} has no checkpoint yet (no epoch was completed): starting its training from the beginning")
        return fresh
    ckpt = load_checkpoint(path, fresh.params, opt_state)
    if ckpt.seed != fresh.seed:
        raise ValueError(f"{path}: seed {ckpt.seed} differs from the configuration's {fresh.seed}")
    schedule.load_state_dict(ckpt.schedule)
    log(f"resuming {run_dir} after epoch {ckpt.epoch} (step {ckpt.step}, best epoch {ckpt.best_epoch})")
    return ckpt


def place_steps(
    model: TrainingSetup,
    config: TrainConfig,
    data: TrainingData,
    shapes: BatchShapes,
    ckpt: Checkpoint,
    scales: LossScales,
    loss_scales: LossScales,
    devices: int | None,
    log: Callable[[str], None],
) -> tuple[Steps, Any]:
    """The steps on one device, or sharded over a mesh of ``devices`` (None: all, when JAX sees several;
    always all with several processes), and the train state of ``ckpt`` placed for them."""
    compute_stress = config.stress_weight > 0 and data.frames.stress is not None
    n_proc = jax.process_count()
    parallel = n_proc > 1 or (len(jax.devices()) > 1 if devices is None else devices > 1)
    mesh = par.make_mesh(par.select_devices(devices)) if parallel else None
    train_step, eval_step = make_steps(
        model.potential, config, scales, model.optimizer, compute_stress, loss_scales, mesh
    )
    state = TrainState(ckpt.params, ckpt.ema, ckpt.opt_state, jnp.asarray(ckpt.step, jnp.int32))
    # The device sees the per-element scale only; the float64 shifts stay on the host (residual labels).
    norm_device = traced_variables({"params": None, "normalization": model.normalization})["normalization"]
    step = DeviceStep(train_step, jax.tree_util.tree_map(jnp.asarray, norm_device), mesh)
    collator = BatchCollator(data.train_graphs, model.normalization, shapes.sizes, model.all_pairs)
    if mesh is not None:
        n_local = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
        per_device = math.ceil(shapes.local_batch / n_local)
        device_sizes = par.agree_pad_sizes(max_device_pad_sizes(data.size_source, per_device, model.all_pairs))
        collator = BatchCollator(data.train_graphs, model.normalization, device_sizes, model.all_pairs, n_local)
        log(
            f"data parallel over {mesh.devices.size} device(s) in {n_proc} process(es): "
            f"{per_device} structures per device, padded to {device_sizes.n_atoms} atoms / "
            f"{device_sizes.n_edges} edges"
        )
    state = step.place(state)
    return Steps(step, eval_step, collator), state
