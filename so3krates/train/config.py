"""Every training option in one dataclass: defaults, YAML files, command-line overrides, validation.

Precedence: dataclass defaults < ``--config`` YAML < command-line flags. The resolved configuration
(with the model hyperparameters under ``model``) is saved as ``config.yaml`` in the run directory, so
a run can be repeated or resumed from it alone.

Defaults follow the paper's MD17 setting (A.13, Table 7): Adam, lr 1e-3, β = 0.99, batch 8, learning
rate × 0.5 every 1000 epochs, gradient clipping at global norm 1, EMA 0.999 of the weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from so3krates.data.npz import declared_units
from so3krates.data.units import ENERGY_UNIT_NAMES, LENGTH_UNIT_NAMES, resolve_units
from so3krates.model.config import ModelConfig
from so3krates.option_values import duration, layers, parse_count, parse_degrees, parse_duration
from so3krates.options import (
    FIXED,
    FREE,
    MOVED,
    Option,
    leaves,
    merge,
    option,
    register_options,
    resume_merge,
    set_path,
    to_plain,
)

__all__ = ["TrainConfig", "resume_config", "yaml_options", "parse_count", "parse_degrees", "parse_duration"]

SCHEDULES = ("exponential", "plateau", "constant")
LOSS_UNITS = ("data", "eV")
DATA, FIT, MODEL = "data", "training", "model"  # argparse groups of the flags


@dataclass
class TrainConfig:
    """Training options (units: the user's, as named by ``energy_unit`` / ``length_unit``).

    Each field's metadata (:func:`so3krates.options.option`) gives its command-line flag, help and
    whether it may change when a run is resumed; the model's are in the table below the class.

    Attributes:
        data: training file (any format the data layer reads); None: the bundled default dataset.
        energy_unit, length_unit: units of the file; errors are reported in them. The saved model
            predicts eV and Å. None (not given): the file's own (an sGDML npz's ``e_unit``/``r_unit``),
            else eV and Å; resolved when the configuration is built, so the saved config.yaml and
            metadata.json name the unit used. A unit that contradicts the file's is refused on reading.
        loss_units: "data": the loss is computed in the file's units; "eV": in eV and Å whatever the
            file's units, as the authors' release trained MD17 (it converts kcal/mol on load). The units
            set how hard the gradient-clipping norm binds and what β balances (docs/training.md).
        energy_key, forces_key, stress_key: names of the labels in the file (None: the reader's default).
        n_train, n_valid, n_test: frame counts (int) or fractions of the file (float ≤ 1; 1.0 is all
            frames); n_test None takes every remaining frame.
        seed: seeds the split, the initial weights and the per-epoch shuffling.
        batch_size: structures per batch.
        max_epochs: stop after this many epochs.
        max_time: stop before an epoch that would end after this many seconds of training (None: no limit).
        patience: early stopping, epochs without a better validation loss (None: off).
        beta: β of eq. 35, weight of the forces (1: forces only; the energy constant c of A.14 is then
            fitted after training).
        stress_weight: weight of the mean squared stress error (periodic data with stress labels).
        lr: initial learning rate of Adam.
        schedule: "exponential" (× decay_factor every decay_epochs epochs, smooth), "plateau" (×
            plateau_factor after plateau_patience epochs without improvement) or "constant".
        min_lr: floor of the learning rate for both schedules.
        grad_clip: maximal global gradient norm (None: no clipping).
        ema_decay: decay of the exponential moving average of the weights used for validation and
            saved as the model (0: no averaging).
        valid_every: validate (and possibly save the best model) every this many epochs.
        valid_batch_size: structures per validation batch (None: batch_size).
        progress: show tqdm progress bars.
        model: the model hyperparameters.
    """

    data: str | None = field(
        default=None,
        metadata=option(
            MOVED,  # the file may have moved: the caller checks its checksum
            DATA,
            "training file: .npz (sGDML R/z/E/F or positions/atomic_numbers/energy/forces) or any ASE "
            "format (extxyz, .gz, db, traj), or a stream directory from `so3krates prepare` (read memory-mapped, "
            "neighbour lists built batch by batch: for data larger than memory); default: the bundled ethanol "
            "dataset with a quick preset",
        ),
    )
    energy_unit: str | None = field(
        default=None,
        metadata=option(
            FIXED,
            DATA,
            f"energy unit of the file: {', '.join(ENERGY_UNIT_NAMES)} (default: the file's e_unit if it "
            "has one, else eV); forces are in energy unit / length unit. Errors are reported in these units",
        ),
    )
    length_unit: str | None = field(
        default=None,
        metadata=option(
            FIXED,
            DATA,
            f"length unit of the file: {', '.join(LENGTH_UNIT_NAMES)} (default: the file's r_unit if it has one, "
            "else Å)",
        ),
    )
    loss_units: str = field(
        default="data",
        metadata=option(
            FIXED,
            DATA,
            "compute the loss in the file's units (data, the default) or in eV and Å (eV: as the authors' "
            "release trained MD17; the units set how hard grad_clip in --config binds)",
            choices=LOSS_UNITS,
        ),
    )
    energy_key: str | None = field(
        default=None, metadata=option(FIXED, DATA, "name of the energy label in the file (default: the format's own)")
    )
    forces_key: str | None = field(default=None, metadata=option(FIXED, DATA, "name of the forces label in the file"))
    stress_key: str | None = field(
        default=None, metadata=option(FIXED, DATA, "name of the stress label in the file (periodic data)")
    )
    n_train: int | float = field(
        default=0.8, metadata=option(FIXED, DATA, "training frames: a count, or a fraction ≤ 1 (default 0.8)")
    )
    n_valid: int | float = field(
        default=0.1, metadata=option(FIXED, DATA, "validation frames: count or fraction (default 0.1)")
    )
    n_test: int | float | None = field(
        default=None, metadata=option(FIXED, DATA, "test frames: count or fraction (default: all the rest)")
    )
    seed: int = field(
        default=0, metadata=option(FIXED, DATA, "seed of the split, initial weights and shuffling (default 0)")
    )
    batch_size: int = field(default=8, metadata=option(FIXED, FIT, "structures per batch (default 8)"))
    max_epochs: int = field(default=1000, metadata=option(FREE, FIT, "maximum number of epochs (default 1000)"))
    max_time: float | None = field(
        default=None,
        metadata=option(
            FREE,
            FIT,
            "wall-time limit: seconds or e.g. 40m, 2h, 1h30m; no epoch is "
            "started that would end after it (default: none)",
            type=duration,
        ),
    )
    patience: int | None = field(
        default=None,
        metadata=option(
            FREE, FIT, "early stopping: stop after this many validations without improvement (default: off)"
        ),
    )
    beta: float = field(
        default=0.99, metadata=option(FIXED, FIT, "β of eq. 35, weight of the forces; 1 = forces only (default 0.99)")
    )
    stress_weight: float = field(
        default=0.0, metadata=option(FIXED, FIT, "weight of the stress error in the loss (default 0)")
    )
    lr: float = field(default=1e-3, metadata=option(FIXED, FIT, "initial Adam learning rate (default 1e-3)"))
    schedule: str = field(
        default="exponential",
        metadata=option(
            FIXED,
            FIT,
            "learning-rate schedule: exponential (×0.5 every --decay-epochs), "
            "plateau (×0.5 after --plateau-patience epochs without improvement) or constant (default exponential)",
            choices=SCHEDULES,
        ),
    )
    decay_factor: float = field(default=0.5, metadata=option(FIXED, flags=()))
    decay_epochs: int = field(
        default=1000, metadata=option(FIXED, FIT, "epochs per halving of the exponential schedule (default 1000)")
    )
    plateau_patience: int = field(
        default=25, metadata=option(FIXED, FIT, "epochs without improvement before halving (default 25)")
    )
    plateau_factor: float = field(default=0.5, metadata=option(FIXED, flags=()))
    min_lr: float = field(default=1e-6, metadata=option(FIXED, flags=()))
    grad_clip: float | None = field(default=1.0, metadata=option(FIXED, flags=()))
    ema_decay: float = field(
        default=0.999, metadata=option(FIXED, FIT, "decay of the weights' moving average, 0 = off (default 0.999)")
    )
    valid_every: int = field(default=1, metadata=option(FIXED, FIT, "validate every N epochs (default 1)"))
    valid_batch_size: int | None = field(default=None, metadata=option(FIXED, flags=()))
    progress: bool = field(
        default=True,
        metadata=option(
            FREE,
            FIT,
            "one line per epoch instead of progress bars",
            flags=("--no-progress",),
            dest="progress",
            const=False,
        ),
    )
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        self.validate()

    # -- checks -------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError naming the first invalid option."""
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")
        if self.stress_weight < 0:
            raise ValueError(f"stress_weight must be ≥ 0, got {self.stress_weight}")
        for name in ("batch_size", "max_epochs", "decay_epochs", "plateau_patience", "valid_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.valid_batch_size is not None and self.valid_batch_size < 1:
            raise ValueError(f"valid_batch_size must be ≥ 1, got {self.valid_batch_size}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be ≥ 1 epoch, got {self.patience}")
        if not self.lr > 0 or not self.min_lr >= 0:
            raise ValueError(f"lr must be positive and min_lr ≥ 0, got lr={self.lr}, min_lr={self.min_lr}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for name in ("decay_factor", "plateau_factor"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive (or null for none), got {self.grad_clip}")
        if self.max_time is not None and self.max_time <= 0:
            raise ValueError(f"max_time must be positive, got {self.max_time}")
        for name in ("n_train", "n_valid", "n_test"):
            value = getattr(self, name)
            if value is None and name == "n_test":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a count (int) or a fraction (float ≤ 1), got {value!r}")
            if isinstance(value, float) and value > 1.0:
                raise ValueError(f"{name} = {value}: a fraction must be ≤ 1 (give a count as an integer)")
        if self.n_train == 0:
            raise ValueError("n_train must be at least 1 frame")
        if self.loss_units not in LOSS_UNITS:
            raise ValueError(f"loss_units must be one of {', '.join(LOSS_UNITS)}, got {self.loss_units!r}")
        # Canonical spellings ("kcal/mol", "Å"), so that reports and the saved config use one name; a unit
        # not given is the data file's own (sGDML e_unit/r_unit), else eV and Å.
        declared = declared_units(self.data) if self.data and None in (self.energy_unit, self.length_unit) else {}
        self.energy_unit, self.length_unit, _ = resolve_units(
            self.energy_unit, self.length_unit, declared, str(self.data)
        )

    # -- conversions --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON ready), the model hyperparameters under ``model``."""
        return to_plain(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "config") -> TrainConfig:
        """Build from a dict (e.g. parsed YAML); values are converted by field type (YAML reads ``1e-3``
        as a string), unknown options are an error naming them."""
        return merge(cls, d, where=where, kind="training")

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Read a YAML file of options (any subset; the rest keep their defaults)."""
        return cls.from_dict(_read_yaml(path), where=str(path))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``; keys of ModelConfig go into ``model``; None values are ignored."""
        paths: dict[str, tuple[str, ...]] = {}
        for leaf in sorted(leaves(TrainConfig), key=lambda leaf: len(leaf.path)):
            paths.setdefault(leaf.path[-1], leaf.path)  # the outermost field of that name
        layer: dict[str, Any] = {}
        for name, value in changes.items():
            if value is not None:
                set_path(layer, paths.get(name, (name,)), value)
        return merge(self, layer)


# The model's options, next to the training ones (ModelConfig's own module stays free of the CLI).
register_options(
    ModelConfig,
    {
        "features": Option(FIXED, MODEL, "feature width F (default 132)"),
        "num_layers": Option(FIXED, MODEL, "number of So3krates layers (default 6)", flags=("--layers",)),
        "degrees": Option(FIXED, MODEL, "SPHC degrees, e.g. 1,2,3 (default)"),
        "num_heads": Option(FIXED, MODEL, "attention heads of the feature block (default 4)", flags=("--heads",)),
        "r_cut": Option(FIXED, MODEL, "cutoff radius r_cut in Å (default 5)", flags=("--cutoff",)),
        "num_radial": Option(FIXED, flags=()),
        "radial_hidden": Option(FIXED, flags=()),
        "spherical_hidden": Option(FIXED, flags=()),
        "max_atomic_number": Option(FIXED, flags=()),
        "dtype": Option(FIXED, MODEL, "floating-point precision (default float32)", choices=("float32", "float64")),
        "nonlocal_correction": Option(
            FIXED,
            MODEL,
            "add the non-local geometric correction (eq. 14; O(n²) per structure)",
            flags=("--nonlocal-correction", "--nonlocal"),
        ),
        "nonlocal_kappa": Option(
            FIXED,
            MODEL,
            "κ of the non-local correction: the SPHC-space cutoff is κ / n_atoms (default 1)",
            flags=("--kappa", "--nonlocal-kappa"),
            dest="nonlocal_kappa",
        ),
        "nonlocal_p": Option(
            FIXED, MODEL, "p of the polynomial cutoff (eq. 29) of the non-local correction (default 6)"
        ),
        "nonlocal_normalization": Option(FIXED, flags=()),
        "global_attention": Option(
            FIXED,
            MODEL,
            "global interactions at linear cost: efa = Euclidean fast attention (docs/efa.md), in every layer "
            "unless --efa-layers; efa-control = its matched local control (the attention replaced by a Dense layer)",
            choices=("efa", "efa-control"),
        ),
        "pseudotensor_paths": Option(FIXED, flags=()),
        "efa_qk_features": Option(FIXED, MODEL, "EFA query/key width, even (default 16)"),
        "efa_v_features": Option(FIXED, MODEL, "EFA value width (default 32)"),
        "efa_max_frequency": Option(FIXED, MODEL, "EFA largest ERoPE frequency b_max (default π)"),
        "efa_max_length": Option(FIXED, MODEL, "EFA r_max in Å: the largest distance within a structure (default 15)"),
        "efa_grid_size": Option(FIXED, MODEL, "EFA Lebedev directions; must integrate b_max (default 50)"),
        "efa_layers": Option(FIXED, MODEL, "layers (0-based, comma-separated) with EFA (default all)", type=layers),
        "efa_max_degree": Option(
            FIXED,
            MODEL,
            "EFA query/key/value degree: 0 invariant (default), 1 or 2 equivariant from the SPHCs, whose l ≥ 1 "
            "output updates the SPHCs",
        ),
        "remat": Option(FIXED, flags=()),
    },
)


def resume_config(saved: TrainConfig, requested: TrainConfig | Mapping[str, Any]) -> TrainConfig:
    """The configuration that resumes a run saved with ``saved``.

    ``requested`` is a full configuration (Python API) or a nested mapping of only the options the user
    stated (command line and ``--config``). Only options declared FREE (max_epochs, max_time, patience,
    progress) or MOVED (data: the caller checks the file's checksum) may differ; otherwise ValueError
    names each option that differs with the run's value and the requested one.
    """
    return resume_merge(saved, requested)


def _read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a mapping of options, got {type(d).__name__}")
    return d


def yaml_options(path: str | Path) -> dict[str, Any]:
    """The options written in a YAML file, checked (errors name the file), as a layer for
    :func:`so3krates.options.merge`; a relative ``data`` path is taken relative to the file."""
    d = _read_yaml(path)
    TrainConfig.from_dict(d, where=str(path))
    if d.get("data") is not None and not Path(d["data"]).is_absolute():
        d["data"] = str((Path(path).parent / d["data"]).resolve())
    return d
