"""Every training option in one dataclass: defaults, YAML files, command-line overrides, validation.

Precedence: dataclass defaults < ``--config`` YAML < command-line flags. The resolved configuration
(with the model hyperparameters under ``model``) is saved as ``config.yaml`` in the run directory, so
a run can be repeated or resumed from it alone.

Defaults follow the paper's MD17 setting (A.13, Table 7): Adam, lr 1e-3, β = 0.99, batch 8, learning
rate × 0.5 every 1000 epochs, gradient clipping at global norm 1, EMA 0.999 of the weights.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from so3krates.model.config import ModelConfig

SCHEDULES = ("exponential", "plateau", "constant")


LOSS_UNITS = ("data", "eV")


@dataclass
class TrainConfig:
    """Training options (units: the user's, as named by ``energy_unit`` / ``length_unit``).

    Attributes:
        data: training file (any format the data layer reads); None: the bundled default dataset.
        energy_unit, length_unit: units of the file; errors are reported in them. The saved model
            predicts eV and Å.
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

    data: str | None = None
    energy_unit: str = "eV"
    length_unit: str = "Å"
    loss_units: str = "data"
    energy_key: str | None = None
    forces_key: str | None = None
    stress_key: str | None = None
    n_train: int | float = 0.8
    n_valid: int | float = 0.1
    n_test: int | float | None = None
    seed: int = 0
    batch_size: int = 8
    max_epochs: int = 1000
    max_time: float | None = None
    patience: int | None = None
    beta: float = 0.99
    stress_weight: float = 0.0
    lr: float = 1e-3
    schedule: str = "exponential"
    decay_factor: float = 0.5
    decay_epochs: int = 1000
    plateau_patience: int = 25
    plateau_factor: float = 0.5
    min_lr: float = 1e-6
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    valid_every: int = 1
    valid_batch_size: int | None = None
    progress: bool = True
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
        if self.lr <= 0 or self.min_lr < 0:
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
        from so3krates.data.units import energy_unit_name, length_unit_name

        # Canonical spellings ("kcal/mol", "Å"), so that reports and the saved config use one name.
        self.energy_unit = energy_unit_name(self.energy_unit)
        self.length_unit = length_unit_name(self.length_unit)

    # -- conversions --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON ready), the model hyperparameters under ``model``."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> TrainConfig:
        """Build from a dict (e.g. parsed YAML); unknown options are an error naming them."""
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a mapping of options, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{where}: unknown training options {unknown}; known: {sorted(known)}")
        values = {k: _coerce(k, v, where) for k, v in d.items() if k != "model"}
        model = d.get("model") or {}
        if isinstance(model, ModelConfig):
            model_config = model
        else:
            try:
                model_config = ModelConfig.from_dict({k: _coerce_model(k, v) for k, v in dict(model).items()})
            except (TypeError, ValueError) as err:
                raise ValueError(f"{where}: model: {err}") from None
        return cls(**values, model=model_config)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Read a YAML file of options (any subset; the rest keep their defaults)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        try:
            d = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML: {err}") from None
        return cls.from_dict(d, where=str(path))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``; keys of ModelConfig go into ``model``; None values are ignored."""
        model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
        top = {k: v for k, v in changes.items() if v is not None and k not in model_fields}
        model = {k: v for k, v in changes.items() if v is not None and k in model_fields}
        d = self.to_dict()
        d.update(top)
        d["model"] = {**d["model"], **model}
        return TrainConfig.from_dict(d)


_INT = {"seed", "batch_size", "max_epochs", "decay_epochs", "plateau_patience", "valid_every"}
_OPT_INT = {"patience", "valid_batch_size"}
_FLOAT = {"beta", "stress_weight", "lr", "decay_factor", "plateau_factor", "min_lr", "ema_decay"}
_OPT_FLOAT = {"max_time", "grad_clip"}
_COUNTS = {"n_train", "n_valid", "n_test"}


def _coerce(name: str, value: Any, where: str) -> Any:
    """YAML gives ``1e-3`` as a string and users write ``0.8`` or ``800``: convert by option type."""
    try:
        if name in _INT:
            return _to_int(value)
        if name in _OPT_INT:
            return None if value is None else _to_int(value)
        if name in _FLOAT:
            return float(value)
        if name in _OPT_FLOAT:
            return None if value is None else (parse_duration(value) if name == "max_time" else float(value))
        if name in _COUNTS:
            return None if value is None else parse_count(value)
        if name == "progress":
            return bool(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: option {name} = {value!r}: {err}") from None
    return value


def _coerce_model(name: str, value: Any) -> Any:
    if name == "degrees":
        return parse_degrees(value)
    if name in ("features", "num_layers", "num_heads", "num_radial", "radial_hidden", "spherical_hidden"):
        return _to_int(value)
    if name in ("r_cut", "nonlocal_kappa"):
        return float(value)
    return value


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("expected an integer")
        return int(value)
    return int(str(value).strip())


def parse_count(value: Any) -> int | float:
    """A frame count or a fraction, as the data layer's ``make_split`` takes them.

    ``"1000"`` → 1000 frames, ``"0.8"`` → fraction 0.8, ``"1.0"`` → fraction 1.0 (all frames);
    integral floats above 1 (``1e3`` in YAML) are counts.
    """
    if isinstance(value, bool):
        raise ValueError("expected a frame count or a fraction")
    if isinstance(value, int):
        return value
    if not isinstance(value, float):
        text = str(value).strip()
        value = int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
        if isinstance(value, int):
            return value
    if value > 1:
        if value.is_integer():
            return int(value)
        raise ValueError(f"{value} is neither a frame count (integer) nor a fraction (≤ 1)")
    return value


def parse_degrees(value: Any) -> tuple[int, ...]:
    """``"1,2,3"``, ``[1, 2, 3]`` or ``3`` → (1, 2, 3) / (3,)."""
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,\s]+", value.strip("[]() ")) if p]
        return tuple(int(p) for p in parts)
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


def parse_duration(value: Any) -> float:
    """Seconds from ``3600``, ``"90s"``, ``"40m"``, ``"40min"``, ``"2h"`` or ``"1h30m"``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip().lower().replace(" ", "")
    try:
        return float(text)
    except ValueError:
        pass
    units = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0, "d": 86400.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)([a-z]+)", text)
    if not parts or "".join(n + u for n, u in parts) != text or any(u not in units for _, u in parts):
        raise ValueError(f"cannot read the duration {value!r}; use seconds or e.g. 90s, 40m, 2h, 1h30m")
    return sum(float(n) * units[u] for n, u in parts)
