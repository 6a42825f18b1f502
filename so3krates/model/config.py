"""Hyperparameters of the So3krates model, one frozen dataclass (hashable, so usable as a jit static)."""

from __future__ import annotations

import math
import warnings
from dataclasses import InitVar, asdict, dataclass, fields
from typing import Any

GLOBAL_ATTENTION = (None, "efa", "efa-control")


@dataclass(frozen=True)
class ModelConfig:
    """So3krates hyperparameters (defaults: the paper's MD17 model, Table 7).

    Attributes:
        features: F, width of the invariant features.
        num_layers: number of So3krates layers.
        degrees: SPHC degrees L, e.g. (1, 2, 3); degree 0 carries no geometry and is usually left out.
        num_heads: heads of the feature self-attention (the SPHC attention has one head per degree).
        r_cut: cutoff radius in Å.
        num_radial: K, number of PhysNet radial basis functions.
        radial_hidden: hidden width of the radial filter MLP.
        spherical_hidden: hidden width of the spherical filter MLP.
        max_atomic_number: size of the element embedding is max_atomic_number + 1.
        dtype: "float32" or "float64" (float64 needs ``jax.config.update("jax_enable_x64", True)``).
        nonlocal_correction: add the SPHC-space geometric correction (eq. 14, A.2).
        nonlocal_kappa: κ, the spherical cutoff is κ / n_atoms.
        nonlocal_p: p of the polynomial cutoff (eq. 29).
        nonlocal_normalization: the spherical harmonics eq. 14's SPHC distances are measured in:
            "orthonormal" (the paper's and its authors' release's, the default) or "racah" (e3x's,
            √(4π/(2l+1)) times larger; what this package used before, kept for comparisons, docs/cumulene.md).
        global_attention: None; "efa" for Euclidean fast attention (docs/efa.md); "efa-control" for its
            matched local control: the same branch with the attention replaced by its value projection
            (a Dense layer of the same inputs), no grid, no global interaction.
        pseudotensor_paths: keep the Clebsch–Gordan paths with l1 + l2 + l odd in eq. 19 (the paper's
            "all valid combinations"); False makes the energy invariant under inversion too.
        efa_qk_features: F_qk, width of the EFA queries and keys (even: ERoPE rotates channel pairs).
        efa_v_features: F_v, width of the EFA values.
        efa_max_frequency: b_max, the largest ERoPE frequency is θ_max = b_max / r_max (dimensionless).
        efa_max_length: r_max in Å, should cover the largest distance within any structure.
        efa_grid_size: M, number of Lebedev directions; must be a Lebedev size whose safe frequency
            (docs/efa.md) covers b_max.
        efa_layers: layers t that get an EFA update; None: all of them.
        efa_max_degree: highest degree of the EFA queries, keys and values: 0 (invariant, the EFA of
            issue #7), 1 or 2 (equivariant EFA, docs/efa.md: built from the SPHCs χ^(l), l ≤ this degree,
            which must all be among ``degrees``; the l ≥ 1 output updates χ).
        remat: rematerialise each So3krates layer (``flax.linen.remat``) so that the backward pass that
            gives forces may keep only each layer's inputs and recompute its per-edge activations; with a
            tabulated radial filter each layer interpolates its own filters inside the rematerialised
            region. Same results and the same parameters either way (a pure execution setting). The
            saving is XLA's to realise: on CPU it cut the compiled temp memory of an F = 132, 6-layer MD
            step on 1,000 waters by only 11 % (docs/md.md), because XLA's scheduling keeps much of the
            per-edge work of several layers alive at once.
    """

    features: int = 132
    num_layers: int = 6
    degrees: tuple[int, ...] = (1, 2, 3)
    num_heads: int = 4
    r_cut: float = 5.0
    num_radial: int = 32
    radial_hidden: int = 128
    spherical_hidden: int = 32
    max_atomic_number: int = 118
    dtype: str = "float32"
    nonlocal_correction: bool = False
    nonlocal_kappa: float = 1.0
    nonlocal_p: int = 6
    nonlocal_normalization: str = "orthonormal"
    global_attention: str | None = None
    pseudotensor_paths: bool = True
    efa_qk_features: int = 16
    efa_v_features: int = 32
    efa_max_frequency: float = math.pi
    efa_max_length: float = 15.0
    efa_grid_size: int = 50
    efa_layers: tuple[int, ...] | None = None
    efa_max_degree: int = 0
    remat: bool = False
    # The spelling before issue #20, accepted as a keyword for one release (not a field: never saved).
    nonlocal_normalisation: InitVar[str | None] = None

    def __post_init__(self, nonlocal_normalisation: str | None = None) -> None:
        if nonlocal_normalisation is not None:
            warnings.warn(
                "ModelConfig(nonlocal_normalisation=...) is deprecated and goes in the next release: use "
                "nonlocal_normalization",
                DeprecationWarning,
                stacklevel=3,
            )
            object.__setattr__(self, "nonlocal_normalization", nonlocal_normalisation)
        object.__setattr__(self, "degrees", tuple(sorted(int(l) for l in self.degrees)))
        object.__setattr__(self, "remat", bool(self.remat))
        self._check_sizes()
        if self.features % self.num_heads:
            raise ValueError(f"features ({self.features}) must be divisible by num_heads ({self.num_heads})")
        if self.features % len(self.degrees):
            raise ValueError(
                f"features ({self.features}) must be divisible by the number of SPHC degrees "
                f"({len(self.degrees)}): the SPHC attention has one head per degree"
            )
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        if self.nonlocal_normalization not in ("orthonormal", "racah"):
            raise ValueError(
                f"nonlocal_normalization must be 'orthonormal' or 'racah', got {self.nonlocal_normalization!r}"
            )
        if self.global_attention not in GLOBAL_ATTENTION:
            raise ValueError(f"global_attention must be None, 'efa' or 'efa-control', got {self.global_attention!r}")
        self._check_efa()

    def _check_sizes(self) -> None:
        """Counts and widths ≥ 1, degrees ≥ 0, a positive finite cutoff: before any division by them."""
        for name in ("features", "num_layers", "num_heads", "num_radial", "radial_hidden", "spherical_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not value >= 1 or int(value) != value:
                raise ValueError(f"{name} must be a whole number ≥ 1, got {value!r}")
        if self.max_atomic_number < 1:
            raise ValueError(f"max_atomic_number must be ≥ 1, got {self.max_atomic_number}")
        if not self.degrees or any(l < 0 for l in self.degrees) or len(set(self.degrees)) < len(self.degrees):
            raise ValueError(f"degrees must be distinct whole numbers ≥ 0, at least one, got {list(self.degrees)}")
        if not (math.isfinite(self.r_cut) and self.r_cut > 0):
            raise ValueError(f"r_cut must be positive, got {self.r_cut}")
        if not (math.isfinite(self.nonlocal_kappa) and self.nonlocal_kappa > 0) or self.nonlocal_p < 1:
            raise ValueError(
                f"nonlocal_kappa must be positive and nonlocal_p ≥ 1, got {self.nonlocal_kappa} and {self.nonlocal_p}"
            )

    def _check_efa(self) -> None:
        """EFA hyperparameters; the grid/frequency rule only when EFA is switched on."""
        if self.efa_max_degree not in (0, 1, 2) or isinstance(self.efa_max_degree, bool):
            raise ValueError(f"efa_max_degree must be 0, 1 or 2, got {self.efa_max_degree!r}")
        for name in ("efa_qk_features", "efa_v_features", "efa_grid_size", "efa_max_degree"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("efa_max_frequency", "efa_max_length"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.efa_layers is not None:
            object.__setattr__(self, "efa_layers", tuple(sorted({int(t) for t in self.efa_layers})))
            bad = [t for t in self.efa_layers if not 0 <= t < self.num_layers]
            if bad:
                raise ValueError(f"efa_layers {bad} outside the {self.num_layers} layers 0..{self.num_layers - 1}")
        if self.efa_qk_features < 2 or self.efa_qk_features % 2:
            raise ValueError(f"efa_qk_features must be even and ≥ 2 (ERoPE rotates pairs), got {self.efa_qk_features}")
        if self.efa_v_features < 1:
            raise ValueError(f"efa_v_features must be positive, got {self.efa_v_features}")
        if not (self.efa_max_frequency > 0 and self.efa_max_length > 0):
            raise ValueError(
                f"efa_max_frequency and efa_max_length must be positive, got "
                f"{self.efa_max_frequency} and {self.efa_max_length}"
            )
        missing = [l for l in range(1, self.efa_max_degree + 1) if l not in self.degrees]
        if self.global_attention is not None and missing:
            raise ValueError(
                f"efa_max_degree = {self.efa_max_degree} builds the EFA queries, keys and values of degree "
                f"{missing} from the SPHCs of that degree, but degrees = {list(self.degrees)} has none: add "
                f"{missing} to degrees or lower efa_max_degree"
            )
        if self.global_attention == "efa":
            from so3krates.model.lebedev import check_grid  # lazy: keeps jax out of importing the config

            check_grid(self.efa_grid_size, self.efa_max_frequency, exact_size=True)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["degrees"] = list(self.degrees)
        if self.efa_layers is not None:
            d["efa_layers"] = list(self.efa_layers)  # YAML/JSON friendly, like degrees
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known - {"nonlocal_normalisation"}
        if unknown:
            raise ValueError(f"unknown model options: {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        if "nonlocal_normalisation" in d:  # the spelling of configurations written before issue #20
            d.setdefault("nonlocal_normalization", d.pop("nonlocal_normalisation"))
        if "degrees" in d:
            d["degrees"] = tuple(d["degrees"])
        return cls(**d)
