"""Radial functions of a distance: cutoffs, the radial basis, the radial filters and their table.

The radial filters φ_r(θ(r_ij)) of eq. 16 are either the filter MLPs (:class:`RadialFilters`, training)
or, for inference with fixed weights, a table of the same functions (:class:`RadialTable`, built by
:func:`tabulate_radial_filters`). The rest of the model sees neither: :func:`layer_filters` gives every
layer an object whose ``for_edges``/``for_pairs`` return that layer's filters.
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from so3krates.model.config import ModelConfig

Array = jax.Array
Filters = tuple[Array, Array]  # one layer's radial filters (feature block, SPHC block), each (P, F)


# -- cutoffs and the radial basis ----------------------------------------------------------------------------


def cosine_cutoff(r: Array, r_cut: float) -> Array:
    """Cosine cutoff φ_rcut(r) = ½(cos(π r / r_cut) + 1) for r < r_cut, else 0 (paper eq. 31).

    Args:
        r: distances, any shape.
        r_cut: cutoff radius (Å).
    Returns:
        Array of r's shape, smooth (C¹) and exactly zero at and beyond r_cut.
    """
    inside = r < r_cut
    # Evaluate the cosine only inside so that gradients beyond the cutoff are exactly zero.
    r_safe = jnp.where(inside, r, 0.0)
    return jnp.where(inside, 0.5 * (jnp.cos(jnp.pi * r_safe / r_cut) + 1.0), 0.0)


def polynomial_cutoff(x: Array, p: int = 6) -> Array:
    """Polynomial cutoff φ(x) = 1 − (p+1)(p+2)/2 xᵖ + p(p+2) xᵖ⁺¹ − p(p+1)/2 xᵖ⁺² for x < 1 (eq. 29).

    Args:
        x: scaled distances (distance / cutoff), any shape, x ≥ 0.
        p: polynomial order (the paper uses 6).
    Returns:
        Array of x's shape; 1 at x = 0, 0 with vanishing first and second derivatives at x ≥ 1.
    """
    inside = x < 1.0
    xs = jnp.where(inside, x, 0.0)
    value = 1.0 - 0.5 * (p + 1) * (p + 2) * xs**p + p * (p + 2) * xs ** (p + 1) - 0.5 * p * (p + 1) * xs ** (p + 2)
    return jnp.where(inside, value, 0.0)


def physnet_radial_basis(r: Array, r_cut: float, num_basis: int = 32) -> Array:
    """PhysNet radial basis θ_k(r) = φ_rcut(r) · exp(−γ (exp(−r) − μ_k)²) (paper eq. 30).

    μ_k are evenly spaced between exp(−r_cut) and 1; γ = ((2/K)(1 − exp(−r_cut)))⁻².

    Args:
        r: distances, shape (...,).
        r_cut: cutoff radius (Å).
        num_basis: K, the number of basis functions.
    Returns:
        Array of shape (..., K).
    """
    mu = jnp.linspace(np.exp(-r_cut), 1.0, num_basis, dtype=r.dtype)
    gamma = ((2.0 / num_basis) * (1.0 - np.exp(-r_cut))) ** -2
    expanded = jnp.exp(-gamma * (jnp.exp(-r)[..., None] - mu) ** 2)
    return cosine_cutoff(r, r_cut)[..., None] * expanded


# -- the filter MLPs -----------------------------------------------------------------------------------------


class _DenseParameters(nn.Module):
    """The kernel and bias of a Dense layer, declared as :class:`flax.linen.Dense` declares them (same names,
    shapes and initialisers, hence the same parameter tree and initial values) but returned, not applied."""

    in_features: int
    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self) -> tuple[Array, Array]:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.in_features, self.features), self.dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.dtype)
        return kernel, bias


class RadialFilters(nn.Module):
    """The radial filters φ_r(θ(r_ij)) of every layer and block (eq. 16, A.3: MLP [radial_hidden, F]).

    The radial basis θ(r_ij) (eq. 30) is the same in every layer, so all 2·num_layers filters are computed
    here once per call, each as its own small MLP (P, K) → (P, C) → (P, F) with a contiguous (P, F) result
    (the fastest layout on CPU, docs/speed.md). The parameters are stored as one Dense layer ``hidden``
    and a stacked second layer (the parameter tree of earlier versions).

    Returns:
        For every layer the pair (feature filter, SPHC filter), each (P, F).
    """

    num_layers: int
    radial_hidden: int
    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, rbf: Array) -> list[Filters]:
        L, C, F = self.num_layers, self.radial_hidden, self.features
        hidden_kernel, hidden_bias = _DenseParameters(rbf.shape[-1], 2 * L * C, self.dtype, name="hidden")()
        hidden_kernel = hidden_kernel.reshape(-1, L, 2, C)
        hidden_bias = hidden_bias.reshape(L, 2, C)
        kernel = self.param("kernel", nn.initializers.lecun_normal(batch_axis=(0, 1)), (L, 2, C, F), self.dtype)
        bias = self.param("bias", nn.initializers.zeros, (L, 2, F), self.dtype)

        def mlp(t: int, b: int) -> Array:
            return nn.silu(rbf @ hidden_kernel[:, t, b] + hidden_bias[t, b]) @ kernel[t, b] + bias[t, b]

        return [(mlp(t, 0), mlp(t, 1)) for t in range(L)]


# -- the table -----------------------------------------------------------------------------------------------


@flax.struct.dataclass
class RadialTable:
    """Radial filters of all layers as a low-rank expansion φ_{t,b}(r) ≈ Σ_m u_m(r) V_{t,b,m,:} whose M
    basis functions u_m(r) are tabulated on a uniform grid over [0, r_cut] for cubic Hermite interpolation
    (built by :func:`tabulate_radial_filters`).

    The 2·num_layers filters are smooth functions of one variable, and together span few dimensions
    (M ≈ 70 of 12·F = 1,584 for the paper-size model): so per edge one gather of 4·M basis coefficients
    and one (M → F) product per filter replace twelve filter MLPs, or twelve gathers of 4·F coefficients.

    Attributes:
        spacing: grid spacing h.
        coefficients: (num_points − 1, 4, M) the cubic in t ∈ [0, 1] of every grid interval, values and
            exact slopes at both ends folded in (see :func:`hermite_coefficients`).
        projection: (num_layers, 2, M, F) the right factor V.
    """

    spacing: Array
    coefficients: Array
    projection: Array

    def layer(self, t: int) -> RadialTable:
        """The table of layer t alone: the shared basis, projection of shape (1, 2, M, F)."""
        return self.replace(projection=self.projection[t : t + 1])


def hermite_coefficients(spacing: float, values: np.ndarray, slopes: np.ndarray) -> np.ndarray:
    """Cubic Hermite coefficients per interval from values and slopes at the grid points, each of shape
    (num_points, M): p(t) = v₀ + m₀t + (3Δ − 2m₀ − m₁)t² + (m₀ + m₁ − 2Δ)t³ with m = h·slope and Δ = v₁ − v₀.

    Computed in float64 on the host, from float64 values and slopes: the t² and t³ coefficients are small
    differences of values, which carry the rounding error of the values divided by h into the forces
    (see :func:`tabulate_radial_filters`).

    Returns:
        (num_points − 1, 4, M): one contiguous row per interval, so that interpolation is one gather of
        rows followed by Horner's rule.
    """
    values, slopes = np.asarray(values, np.float64), np.asarray(slopes, np.float64)
    v0, v1 = values[:-1], values[1:]
    m0, m1 = spacing * slopes[:-1], spacing * slopes[1:]
    delta = v1 - v0
    return np.stack([v0, m0, 3 * delta - 2 * m0 - m1, m0 + m1 - 2 * delta], axis=-2)


def interpolate_radial_filters(r: Array, table: RadialTable) -> list[Filters]:
    """The tabulated radial filters at distances r (P,): for every layer the pair (feature filter, SPHC
    filter), each (P, F), as :class:`RadialFilters` returns them.

    Cubic Hermite interpolation of the basis functions, then one product per filter. Beyond the last grid
    point (r ≥ r_cut, where θ = 0 and the filter is constant) the last value is used. The interpolant is
    C¹, so forces stay continuous; its error is O(h⁴) plus the truncated rank.
    """
    intervals = table.coefficients.shape[0]
    x = jnp.clip(r / table.spacing, 0.0, float(intervals))
    k = jnp.minimum(jnp.floor(x).astype(jnp.int32), intervals - 1)
    t = (x - k)[:, None]
    c = table.coefficients[k]  # (P, 4, M)
    basis = c[:, 0] + t * (c[:, 1] + t * (c[:, 2] + t * c[:, 3]))
    num_layers, num_blocks = table.projection.shape[:2]
    return [tuple(basis @ table.projection[l, b] for b in range(num_blocks)) for l in range(num_layers)]


def tabulate_radial_filters(
    params: dict, config: ModelConfig, num_points: int = 1024, rank_tolerance: float | None = None
) -> RadialTable:
    """Tabulate the radial filters of a trained model (``params``: the model's parameters).

    The values and exact derivatives (forward-mode autodiff) of all 2·num_layers filters on a uniform grid
    over [0, r_cut] form a (num_points, 2·num_layers·F) matrix T. Its singular value decomposition
    T = U S Vᵀ, truncated where the singular values fall below ``rank_tolerance`` times the largest
    (default 1e-7 for float32 models, 1e-13 for float64), gives M basis functions U S on the grid, whose
    values and slopes (the derivatives projected on the same V) are tabulated for cubic Hermite
    interpolation. With the default 1024 points (spacing ≈ 0.005 Å at r_cut = 5 Å) energies and forces
    match the exact MLPs to about 1e-7 relative in float64 and to float32 rounding (~1e-6) in float32
    (tests/test_model_tabulation.py, benchmarks/table_accuracy.py).

    Runs on the host (NumPy's SVD; the rank is data-dependent), not inside ``jax.jit``. Re-tabulate after
    changing the weights.
    """
    L, F, r_cut = config.num_layers, config.features, config.r_cut
    dtype = jnp.dtype(config.dtype)
    if rank_tolerance is None:
        rank_tolerance = 1e-7 if dtype.itemsize <= 4 else 1e-13
    # In float64 whatever the model's dtype: interpolated slopes are differences of neighbouring values over
    # the spacing h, so float32 rounding of the values (~1e-7 of them) would become ~1e-7/h of the forces
    # (5e-5 relative for a trained float32 model at h = 0.004 Å, worse on finer grids).
    with jax.enable_x64(True):
        module = RadialFilters(L, config.radial_hidden, F, jnp.float64)
        params64 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), params["radial_filters"])
        grid = jnp.linspace(0.0, r_cut, num_points, dtype=jnp.float64)

        def stacked(r: Array) -> Array:  # (num_points, num_layers · 2 · F), layer-major
            filters = module.apply({"params": params64}, physnet_radial_basis(r, r_cut, config.num_radial))
            return jnp.concatenate([f for pair in filters for f in pair], axis=-1)

        values, slopes = jax.jvp(stacked, (grid,), (jnp.ones_like(grid),))
        values, slopes = np.asarray(values, np.float64), np.asarray(slopes, np.float64)
    _, singular, vt = np.linalg.svd(values, full_matrices=False)
    rank = max(1, int(np.sum(singular > rank_tolerance * singular[0])))
    v = vt[:rank].T  # (L·2·F, M), orthonormal columns
    spacing = r_cut / (num_points - 1)
    coefficients = hermite_coefficients(spacing, values @ v, slopes @ v)
    projection = v.T.reshape(rank, L, 2, F).transpose(1, 2, 0, 3)
    return RadialTable(
        spacing=jnp.asarray(spacing, dtype),
        coefficients=jnp.asarray(coefficients, dtype),
        projection=jnp.asarray(projection, dtype),
    )


# -- the seam: what a layer reads ----------------------------------------------------------------------------


def filter_edge_count(num_edges: int, paired: bool) -> int:
    """How many edges get their own filters (eq. 16): all of them, or with paired edges
    (``Batch.edges_paired``) the first half, whose filters serve the reverse edges too (w_ij = w_ji)."""
    return num_edges // 2 if paired else num_edges


@flax.struct.dataclass
class ComputedFilters:
    """One layer's radial filters, already evaluated for the edges and (non-local correction) the pairs."""

    edge: Filters
    pair: Filters | None = None

    def for_edges(self, r: Array) -> Filters:
        """The filters of the edges at distances r (they were computed for exactly those)."""
        return self.edge

    def for_pairs(self, r: Array) -> Filters:
        """The filters of the all-pairs list at distances r (they were computed for exactly those)."""
        assert self.pair is not None, "no pair filters: the model has no non-local correction"
        return self.pair


@flax.struct.dataclass
class TabulatedFilters:
    """One layer's radial filters as its table, interpolated where the layer asks (inside its remat region,
    so that the (P, F) filters of all layers and their cotangents are never alive at once)."""

    table: RadialTable

    def for_edges(self, r: Array) -> Filters:
        return interpolate_radial_filters(r, self.table)[0]

    def for_pairs(self, r: Array) -> Filters:
        return interpolate_radial_filters(r, self.table)[0]


LayerFilters = ComputedFilters | TabulatedFilters


def layer_filters(
    mlp: RadialFilters,
    table: RadialTable | None,
    edge_r: Array,
    edge_rbf: Array,
    pair_r: Array | None = None,
    pair_rbf: Array | None = None,
    per_layer: bool = False,
) -> list[LayerFilters]:
    """The radial filters of every layer, from the filter MLPs or, given ``table``, from the table.

    Args:
        mlp: the model's :class:`RadialFilters` (its parameters; not called when there is a table).
        table: the tabulated filters (inference), or None.
        edge_r, edge_rbf: (P,) distances and (P, K) radial basis of the edges that get filters.
        pair_r, pair_rbf: the same for the pairs of the non-local correction, or None.
        per_layer: with a table, leave the interpolation to each layer (``ModelConfig.remat``).
    Returns:
        One :data:`LayerFilters` per layer.
    """
    if table is not None and per_layer:
        return [TabulatedFilters(table.layer(t)) for t in range(table.projection.shape[0])]

    def evaluate(r: Array, rbf: Array) -> list[Filters]:
        return interpolate_radial_filters(r, table) if table is not None else mlp(rbf)

    edge = evaluate(edge_r, edge_rbf)
    pair = evaluate(pair_r, pair_rbf) if pair_r is not None else None
    return [ComputedFilters(edge[t], None if pair is None else pair[t]) for t in range(len(edge))]
