"""Rotation-group building blocks: spherical harmonics, Clebsch–Gordan, Wigner-D, norms, degree layouts.

Nothing here knows about neural networks (the cutoffs and the radial basis are in
:mod:`so3krates.model.radial`). Spherical harmonics, Clebsch–Gordan coefficients and
Wigner-D matrices come from e3x (``e3x.so3``) in its real, Racah-normalised convention
(Σ_m Y_lm(r̂)² = 1 for every degree), used consistently everywhere in the package.

SPHCs are stored as one flat vector per atom holding only the degrees in ``degrees`` (for example
(1, 2, 3) gives 3 + 5 + 7 = 15 entries); :class:`DegreeLayout` maps between that layout and
per-degree quantities.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import e3x
import jax
import jax.numpy as jnp
import numpy as np

from so3krates.deprecation import moved

Array = jax.Array


@dataclass(frozen=True)
class DegreeLayout:
    """Index bookkeeping for SPHCs that hold the degrees ``degrees`` in one flat vector.

    Attributes:
        degrees: the SPHC degrees L, sorted, e.g. (1, 2, 3).
    """

    degrees: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.degrees or sorted(set(self.degrees)) != list(self.degrees) or min(self.degrees) < 0:
            raise ValueError(f"degrees must be a sorted tuple of distinct non-negative ints, got {self.degrees}")

    @property
    def max_degree(self) -> int:
        return self.degrees[-1]

    @property
    def num_degrees(self) -> int:
        return len(self.degrees)

    @property
    def dim(self) -> int:
        """Length of the flat SPHC vector, Σ_l (2l + 1)."""
        return sum(2 * l + 1 for l in self.degrees)

    @functools.cached_property
    def e3x_index(self) -> np.ndarray:
        """Positions of our flat entries inside e3x's (max_degree + 1)² layout (index l² + l + m)."""
        return np.concatenate([np.arange(l * l, (l + 1) * (l + 1)) for l in self.degrees])

    @functools.cached_property
    def degree_of_entry(self) -> np.ndarray:
        """For each flat entry, the position (0..|L|−1) of its degree in ``degrees``; shape (dim,)."""
        return np.concatenate([np.full(2 * l + 1, k) for k, l in enumerate(self.degrees)])

    @functools.cached_property
    def entry_to_degree(self) -> np.ndarray:
        """One-hot (dim, |L|) matrix: χ² @ P sums squares per degree; b @ Pᵀ repeats per-degree scalars."""
        return np.eye(self.num_degrees)[self.degree_of_entry]

    @functools.cached_property
    def orthonormal_scale(self) -> np.ndarray:
        """(dim,) factors √((2l+1)/4π) that take e3x's Racah-normalised entries (Σ_m Y_lm² = 1) to the
        paper's orthonormal spherical harmonics (∫ Y_lm² dΩ = 1, Σ_m Y_lm² = (2l+1)/4π)."""
        return np.concatenate([np.full(2 * l + 1, np.sqrt((2 * l + 1) / (4 * np.pi))) for l in self.degrees])

    def slice(self, l: int) -> slice:
        """The slice of the flat vector holding degree ``l``."""
        start = sum(2 * k + 1 for k in self.degrees if k < l)
        return slice(start, start + 2 * l + 1)

    def coupling_paths(self) -> list[tuple[int, int, int]]:
        """All (l1, l2, l) with l1 < l2 in L, l in L and |l1 − l2| ≤ l ≤ l1 + l2 (the sum in eq. 19)."""
        return [
            (l1, l2, l)
            for i, l1 in enumerate(self.degrees)
            for l2 in self.degrees[i + 1 :]
            for l in self.degrees
            if abs(l1 - l2) <= l <= l1 + l2
        ]

    def coupling_tensor(self) -> np.ndarray:
        """Clebsch–Gordan blocks of every coupling path, shape (n_paths, dim, dim, dim).

        Entry [p, a, b, c] is C^{l1 l2 l}_{m1 m2 m} for path p = (l1, l2, l) with a, b, c the flat
        positions of (l1, m1), (l2, m2), (l, m); zero elsewhere. Contracting with learnable per-path
        weights k gives the (dim, dim, dim) tensor of eq. 19 once per call.
        """
        lmax = self.max_degree
        cg = np.asarray(e3x.so3.clebsch_gordan(lmax, lmax, lmax), dtype=np.float64)
        paths = self.coupling_paths()
        tensor = np.zeros((len(paths), self.dim, self.dim, self.dim))
        for p, (l1, l2, l) in enumerate(paths):
            block = cg[l1 * l1 : (l1 + 1) ** 2, l2 * l2 : (l2 + 1) ** 2, l * l : (l + 1) ** 2]
            tensor[p, self.slice(l1), self.slice(l2), self.slice(l)] = block
        return tensor

    def path_parities(self) -> np.ndarray:
        """+1 for coupling paths with l1 + l2 + l even (true tensors), −1 for odd (pseudotensors)."""
        return np.array([1 if (l1 + l2 + l) % 2 == 0 else -1 for l1, l2, l in self.coupling_paths()])


def spherical_harmonics(unit_vectors: Array, layout: DegreeLayout) -> Array:
    """Real, Racah-normalised spherical harmonics Y^(l)(r̂) for the degrees of ``layout`` (e3x).

    Args:
        unit_vectors: shape (..., 3), unit length.
    Returns:
        Array of shape (..., layout.dim), degrees concatenated in the order of ``layout.degrees``.
    """
    y = e3x.so3.spherical_harmonics(unit_vectors, layout.max_degree, r_is_normalized=True)
    return y[..., layout.e3x_index]


def wigner_d(rotation: Array, layout: DegreeLayout) -> Array:
    """Block-diagonal Wigner-D matrix D(R) acting on flat SPHC vectors, e3x's row-vector convention.

    Y(r̂ @ R) = Y(r̂) @ D(R): when positions are rotated as ``positions @ R``, SPHCs transform as
    ``chi @ wigner_d(R, layout)``.

    Args:
        rotation: rotation matrices, shape (..., 3, 3).
    Returns:
        Array of shape (..., dim, dim).
    """
    d = e3x.so3.wigner_d(rotation, layout.max_degree)
    idx = layout.e3x_index
    return d[..., idx[:, None], idx[None, :]]


def safe_norm(x: Array, axis: int = -1, keepdims: bool = False) -> Array:
    """Euclidean norm with a finite (zero) gradient at x = 0, where √ has an infinite one.

    For interatomic distances only, whose argument cannot vanish for two distinct atoms (padding pairs get
    a dummy vector): at x = 0 this is the cusp |x|. Wherever a norm's argument can vanish by symmetry
    (SPHCs) use :func:`smooth_norm`.
    """
    sq = jnp.sum(x * x, axis=axis, keepdims=keepdims)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


# ε of :func:`smooth_norm`, in units of a Racah-normalised SPHC (‖Y^(l)(r̂)‖ = 1, so ‖χ_i^(l)‖ ≤ 1 after
# eq. 11). Why 0.05: near a symmetric point an atom's SPHC norm grows like ~0.6·δ/Å with its displacement δ
# (the carbon of CH4), so the energy is rounded off over δ ≈ ε/0.6 ≈ 0.08 Å: several MD steps' worth of
# displacement (≈ 0.01 Å per 0.5 fs step for hydrogen at 300 K) and far more than a relaxation's last
# steps, so integrators and optimisers see a smooth minimum rather than a kink; and the norm of a typical
# SPHC (0.2–1) moves by less than ε, a shift the next Dense layer's bias absorbs (docs/model.md).
SMOOTH_NORM_EPSILON = 0.05


def smooth_norm(x: Array, axis: int = -1, keepdims: bool = False, epsilon: float = SMOOTH_NORM_EPSILON) -> Array:
    """Smooth norm n_ε(x) = √(‖x‖² + ε²) − ε, infinitely differentiable everywhere, x = 0 included.

    The plain norm ‖x‖ is a cusp at x = 0, which is where SPHCs sit by symmetry (the l = 1, 2 SPHCs of the
    carbon of CH4, every atom of a perfect cubic crystal, differences χ_j − χ_i of equivalent atoms): the
    forces would jump there. n_ε(0) = 0, n_ε(x) = ‖x‖ − ε + O(ε²/‖x‖) away from zero, and its gradient
    x / √(‖x‖² + ε²) never exceeds one. ε: :data:`SMOOTH_NORM_EPSILON`.
    """
    sq = jnp.sum(x * x, axis=axis, keepdims=keepdims)
    # Written as ‖x‖² / (√(‖x‖² + ε²) + ε), the same number without the cancellation that would cost
    # float32 its digits for ‖x‖ ≪ ε.
    return sq / (jnp.sqrt(sq + epsilon * epsilon) + epsilon)


__getattr__ = moved(
    "so3krates.so3",
    {name: "so3krates.model.radial" for name in ("cosine_cutoff", "polynomial_cutoff", "physnet_radial_basis")},
)
