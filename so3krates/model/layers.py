"""The building blocks of a So3krates layer, one paper equation per function or module.

Notation as in the paper: atoms i (centre) and j (neighbour), invariant features x_i ∈ R^F, SPHCs
χ_i = [χ_i^(l)]_{l∈L} stored flat (see :class:`so3krates.so3.DegreeLayout`). Pairs (i, j) come as index
arrays with a mask; sums over neighbours are segment sums over the centre index.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from so3krates.so3 import DegreeLayout, polynomial_cutoff, safe_norm

Array = jax.Array


@flax.struct.dataclass
class Pairs:
    """Geometry of a list of atom pairs (i, j): the edges within r_cut, or all pairs (eq. 14).

    Attributes:
        i, j: (P,) centre and neighbour atom.  mask: (P,) real pairs.
        cutoff: (P,) φ_rcut(r_ij) (eq. 31), zero for masked pairs and beyond r_cut.
        rbf: (P, K) PhysNet basis θ(r_ij) (eq. 30).  sph: (P, dim) Y^(l)(r̂_ij) for l ∈ L.
    """

    i: Array
    j: Array
    mask: Array
    cutoff: Array
    rbf: Array
    sph: Array


def segment_sum(values: Array, segments: Array, num_segments: int) -> Array:
    """Σ over pairs grouped by centre atom (the neighbour sums of eqs. 11–14)."""
    return jax.ops.segment_sum(values, segments, num_segments=num_segments)


def per_degree_norm(chi: Array, layout: DegreeLayout) -> Array:
    """[‖χ^(l)‖₂]_{l∈L}: per-degree norms of flat SPHC vectors, shape (..., |L|), safe at zero."""
    sq = chi**2 @ jnp.asarray(layout.entry_to_degree, chi.dtype)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def init_sphc(pairs: Pairs, num_atoms: int) -> Array:
    """SPHC initialisation χ_i^(l) = Σ_j φ(r_ij) Y^(l)(r̂_ij) / C_i with C_i = Σ_j φ(r_ij) (paper eq. 11).

    The guard: the denominator is C_i where C_i ≥ 1 (eq. 11 exactly, the case of any atom with a bonded
    neighbour) and ½ + C_i²/2 below, a C¹ continuation bounded away from zero. Without it, an atom whose
    only neighbour crosses r_cut would jump from χ_i = 0 to χ_i = Y(r̂_ij) (the ratio φY/φ does not vanish
    with φ), making the energy discontinuous at the cutoff; isolated atoms get χ_i = 0 instead of 0/0.

    Returns:
        (num_atoms, dim) SPHCs.
    """
    numerator = segment_sum(pairs.cutoff[:, None] * pairs.sph, pairs.i, num_atoms)
    c = segment_sum(pairs.cutoff, pairs.i, num_atoms)
    denominator = jnp.where(c >= 1.0, c, 0.5 + 0.5 * c * c)
    return numerator / denominator[:, None]


class HeadDense(nn.Module):
    """Linear map applied per attention head: x (…, F) → (…, F), block diagonal over H heads.

    Each head h maps its own slice x^h ∈ R^{F/H} with its own (F/H × F/H) matrix. This is how the
    authors' release projects queries, keys and values; it reproduces the parameter counts of the
    paper's Table 4 (fewer parameters with more SPHC heads), see docs/parameters.md.
    """

    features: int
    num_heads: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        width = self.features // self.num_heads
        kernel = self.param(
            "kernel",
            nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=1, out_axis=2),
            (self.num_heads, width, width),
            self.dtype,
        )
        heads = x.reshape(*x.shape[:-1], self.num_heads, width)
        return jnp.einsum("...hf,hfg->...hg", heads, kernel).reshape(x.shape)


class MLP(nn.Module):
    """Two Dense layers with SiLU in between (the filter and output MLPs of A.3)."""

    hidden: int
    out: int
    dtype: jnp.dtype = jnp.float32
    use_last_bias: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = nn.Dense(self.hidden, dtype=self.dtype, param_dtype=self.dtype, name="dense_0")(x)
        x = nn.silu(x)
        return nn.Dense(
            self.out, dtype=self.dtype, param_dtype=self.dtype, use_bias=self.use_last_bias, name="dense_1"
        )(x)


class RadialSphericalFilter(nn.Module):
    """Filter w_ij = φ_r(θ(r_ij)) + φ_s([χ_ij^(l)]_l) (paper eq. 16, A.3).

    φ_r: radial filter, MLP [radial_hidden, F] on the PhysNet basis; φ_s: spherical filter,
    MLP [spherical_hidden, F] on the per-degree SPHC distances χ_ij^(l) = ‖χ_j^(l) − χ_i^(l)‖.
    """

    features: int
    radial_hidden: int = 128
    spherical_hidden: int = 32
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, rbf: Array, sphc_distances: Array) -> Array:
        radial = MLP(self.radial_hidden, self.features, self.dtype, name="radial")(rbf)
        spherical = MLP(self.spherical_hidden, self.features, self.dtype, name="spherical")(sphc_distances)
        return radial + spherical


def attention_coefficients(q_i: Array, k_j: Array, w_ij: Array, num_heads: int) -> Array:
    """Multi-head attention α^h_ij = q_i^h · (w_ij^h ⊙ k_j^h) / √(F/H) (paper eqs. 15, 32).

    No softmax: the coefficients are unnormalised, as in the paper.

    Args:
        q_i, k_j, w_ij: (P, F) queries of the centres, keys of the neighbours, filters.
    Returns:
        (P, H) coefficients.
    """
    width = q_i.shape[-1] // num_heads
    prod = (q_i * w_ij * k_j).reshape(*q_i.shape[:-1], num_heads, width)
    return prod.sum(-1) / jnp.sqrt(jnp.asarray(width, q_i.dtype))


def sphc_pair_distances(chi: Array, pairs: Pairs, layout: DegreeLayout) -> Array:
    """Per-degree SPHC distances [χ_ij^(l)]_l = [‖χ_j^(l) − χ_i^(l)‖]_l, shape (P, |L|) (eq. 16)."""
    return per_degree_norm(chi[pairs.j] - chi[pairs.i], layout)


class FeatureAttention(nn.Module):
    """Feature update Δx_i = Σ_j φ(r_ij) α^h_ij (W_v x_j)^h, heads concatenated (eqs. 12, 33).

    Returns the update only; the caller adds it to x.
    """

    features: int
    num_heads: int
    radial_hidden: int
    spherical_hidden: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, pairs: Pairs, sphc_distances: Array) -> Array:
        w = RadialSphericalFilter(self.features, self.radial_hidden, self.spherical_hidden, self.dtype, name="filter")(
            pairs.rbf, sphc_distances
        )
        q = HeadDense(self.features, self.num_heads, self.dtype, name="query")(x)
        k = HeadDense(self.features, self.num_heads, self.dtype, name="key")(x)
        v = HeadDense(self.features, self.num_heads, self.dtype, name="value")(x)
        alpha = attention_coefficients(q[pairs.i], k[pairs.j], w, self.num_heads)  # (P, H)
        weight = alpha * pairs.cutoff[:, None]
        v_j = v[pairs.j].reshape(-1, self.num_heads, self.features // self.num_heads)
        messages = (weight[:, :, None] * v_j).reshape(-1, self.features)
        return segment_sum(messages, pairs.i, x.shape[0])


def sphc_neighbourhood_weight(chi: Array, pairs: Pairs, n_atoms_of_centre: Array, kappa: float, p: int) -> Array:
    """Spherical neighbourhood φ_χcut(χ̃_ij) of the non-local correction (paper eq. 14, A.2, eq. 29).

    χ_ij = ‖χ_i − χ_j‖ over all degrees; χ̃ = softmax over j of χ_ij within each row i (the pairs must be
    all ordered pairs of each structure); then the polynomial cutoff (eq. 29) at χ_cut = κ / n_atoms.

    Args:
        chi: (N, dim) SPHCs.  pairs: all pairs within each structure.
        n_atoms_of_centre: (P,) number of atoms of the structure of pair (i, j).
    Returns:
        (P,) weights in [0, 1], zero for masked pairs.
    """
    d = safe_norm(chi[pairs.j] - chi[pairs.i], axis=-1)
    d = jnp.where(pairs.mask, d, -jnp.inf)
    num_atoms = chi.shape[0]
    # Row-wise softmax over j; the max is held constant (stop_gradient) as usual for stability.
    row_max = jax.lax.stop_gradient(jax.ops.segment_max(d, pairs.i, num_segments=num_atoms))
    e = jnp.where(pairs.mask, jnp.exp(d - row_max[pairs.i]), 0.0)
    row_sum = segment_sum(e, pairs.i, num_atoms)
    softmax = e / jnp.where(row_sum > 0, row_sum, 1.0)[pairs.i]
    chi_cut = kappa / n_atoms_of_centre.astype(chi.dtype)
    return jnp.where(pairs.mask, polynomial_cutoff(softmax / chi_cut, p), 0.0)


class SphcAttention(nn.Module):
    """SPHC update Δχ_i^(l) = Σ_j φ(r_ij) α^(l)_ij Y^(l)(r̂_ij), one head per degree (eqs. 13, 34).

    With ``nonlocal_weight`` (the spherical neighbourhood of eq. 14) the sum runs over all pairs of the
    structure with weight φ(r_ij) + φ_χcut(χ̃_ij): local in R³ plus local in SPHC space.
    """

    features: int
    layout: DegreeLayout
    radial_hidden: int
    spherical_hidden: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, pairs: Pairs, sphc_distances: Array, nonlocal_weight: Array | None = None) -> Array:
        num_heads = self.layout.num_degrees
        w = RadialSphericalFilter(self.features, self.radial_hidden, self.spherical_hidden, self.dtype, name="filter")(
            pairs.rbf, sphc_distances
        )
        q = HeadDense(self.features, num_heads, self.dtype, name="query")(x)
        k = HeadDense(self.features, num_heads, self.dtype, name="key")(x)
        alpha = attention_coefficients(q[pairs.i], k[pairs.j], w, num_heads)  # (P, |L|)
        weight = pairs.cutoff if nonlocal_weight is None else pairs.cutoff + nonlocal_weight
        per_entry = (alpha * weight[:, None]) @ jnp.asarray(self.layout.entry_to_degree.T, self.dtype)
        return segment_sum(per_entry * pairs.sph, pairs.i, x.shape[0])


class CrossDegreeCoupling(nn.Module):
    """χ̃_i^(l) = Σ_{l1<l2} k_{l1,l2,l} (χ_i^(l1) ⊗_l χ_i^(l2)) with learnable k ~ N(0, 0.1) (eq. 19).

    Paths with l1 + l2 + l odd produce pseudotensors (e.g. the cross product for 1 ⊗ 1 → 1): they keep
    rotation equivariance but flip sign under inversion, which makes the energy sensitive to chirality.
    With ``parity_even_only`` those paths are left out and the model becomes O(3)-invariant.
    """

    layout: DegreeLayout
    parity_even_only: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, chi: Array) -> Array:
        tensor = self.layout.coupling_tensor()
        if self.parity_even_only:
            tensor = tensor[self.layout.path_parities() > 0]
        if tensor.shape[0] == 0:  # a single degree has no l1 < l2 pair
            return jnp.zeros_like(chi)
        k = self.param("coupling", nn.initializers.normal(0.1), (tensor.shape[0],), self.dtype)
        cg = jnp.einsum("p,pabc->abc", k, jnp.asarray(tensor, self.dtype))
        return jnp.einsum("na,nb,abc->nc", chi, chi, cg)


class InteractionBlock(nn.Module):
    """Atomwise interaction of features and SPHCs (paper eqs. 17–19, Fig. 5).

    One Dense layer maps [x_i, ‖χ_i^(l)‖_l] to (a1, a2 ∈ R^F, b1, b2 ∈ R^|L|); a3 = Dense([‖χ̃_i^(l)‖_l]);
    x_i ← (x_i + a1 + a2 ⊙ a3) / √3 and χ_i^(l) ← χ_i^(l) + b1^(l) χ_i^(l) + b2^(l) χ̃_i^(l).
    """

    features: int
    layout: DegreeLayout
    parity_even_only: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, chi: Array) -> tuple[Array, Array]:
        F, nL = self.features, self.layout.num_degrees
        chi_coupled = CrossDegreeCoupling(self.layout, self.parity_even_only, self.dtype, name="coupling")(chi)
        inputs = jnp.concatenate([x, per_degree_norm(chi, self.layout)], axis=-1)
        out = nn.Dense(2 * F + 2 * nL, dtype=self.dtype, param_dtype=self.dtype, name="mix")(inputs)
        a1, a2, b1, b2 = jnp.split(out, [F, 2 * F, 2 * F + nL], axis=-1)
        a3 = nn.Dense(F, use_bias=False, dtype=self.dtype, param_dtype=self.dtype, name="coupled")(
            per_degree_norm(chi_coupled, self.layout)
        )
        x = (x + a1 + a2 * a3) / jnp.sqrt(jnp.asarray(3.0, self.dtype))
        repeat = jnp.asarray(self.layout.entry_to_degree.T, self.dtype)
        chi = chi + (b1 @ repeat) * chi + (b2 @ repeat) * chi_coupled
        return x, chi


class So3kratesLayer(nn.Module):
    """One So3krates layer: feature and SPHC attention read the same (x, χ), then the interaction block.

    ``sphc_pairs`` are the pairs the SPHC attention runs over: the local edges, or all pairs of each
    structure when the non-local correction (eq. 14) is on, in which case ``nonlocal_fn`` gives the
    spherical-neighbourhood weights from the current SPHCs.
    """

    features: int
    num_heads: int
    layout: DegreeLayout
    radial_hidden: int
    spherical_hidden: int
    parity_even_only: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: Array,
        chi: Array,
        edges: Pairs,
        sphc_pairs: Pairs | None = None,
        nonlocal_fn: Callable[[Array], Array] | None = None,
    ) -> tuple[Array, Array]:
        edge_distances = sphc_pair_distances(chi, edges, self.layout)
        dx = FeatureAttention(
            self.features,
            self.num_heads,
            self.radial_hidden,
            self.spherical_hidden,
            self.dtype,
            name="feature_attention",
        )(x, edges, edge_distances)
        if sphc_pairs is None:
            sphc_pairs, pair_distances, nonlocal_weight = edges, edge_distances, None
        else:
            pair_distances = sphc_pair_distances(chi, sphc_pairs, self.layout)
            nonlocal_weight = nonlocal_fn(chi) if nonlocal_fn is not None else None
        dchi = SphcAttention(
            self.features,
            self.layout,
            self.radial_hidden,
            self.spherical_hidden,
            self.dtype,
            name="sphc_attention",
        )(x, sphc_pairs, pair_distances, nonlocal_weight)
        return InteractionBlock(self.features, self.layout, self.parity_even_only, self.dtype, name="interaction")(
            x + dx, chi + dchi
        )


def element_table(values: np.ndarray | Array, numbers: Array) -> Array:
    """Look up per-element constants (scale, shift) for each atom: values[z_i]."""
    return jnp.asarray(values)[numbers]
