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

from so3krates.deprecation import moved
from so3krates.model.radial import LayerFilters, filter_edge_count
from so3krates.so3 import DegreeLayout, smooth_norm

Array = jax.Array


@flax.struct.dataclass
class Pairs:
    """Geometry of a list of atom pairs (i, j): the edges within r_cut, or all pairs (eq. 14).

    Attributes:
        i, j: (P,) centre and neighbour atom.  mask: (P,) real pairs.  r: (P,) distances.
        cutoff: (P,) φ_rcut(r_ij) (eq. 31), zero for masked pairs and beyond r_cut.
        rbf: (P, K) PhysNet basis θ(r_ij) (eq. 30).  sph: (P, dim) Y^(l)(r̂_ij) for l ∈ L.
    """

    i: Array
    j: Array
    mask: Array
    r: Array
    cutoff: Array
    rbf: Array
    sph: Array


def segment_sum(values: Array, segments: Array, num_segments: int) -> Array:
    """Σ over pairs grouped by centre atom (the neighbour sums of eqs. 11–14)."""
    return jax.ops.segment_sum(values, segments, num_segments=num_segments)


def per_degree_norm(chi: Array, layout: DegreeLayout) -> Array:
    """[‖χ^(l)‖]_{l∈L}: per-degree smooth norms (:func:`so3krates.so3.smooth_norm`) of flat SPHC vectors,
    shape (..., |L|).

    Smooth because a degree's SPHC vanishes by symmetry (the l = 1, 2 SPHCs of the carbon of CH4, atoms of a
    perfect cubic crystal, χ_j − χ_i of equivalent atoms), where the plain norm is a cusp and forces jump.
    Written with static slices rather than a small matrix product so that XLA fuses it with its
    neighbours (on CPU every unfused op costs a dispatch, which dominates for small molecules).
    """
    return jnp.stack([smooth_norm(chi[..., layout.slice(l)], axis=-1) for l in layout.degrees], axis=-1)


def repeat_per_degree(values: Array, layout: DegreeLayout) -> Array:
    """Spread one scalar per degree, (..., |L|), over that degree's 2l + 1 entries: (..., dim)."""
    parts = [
        jnp.broadcast_to(values[..., k : k + 1], (*values.shape[:-1], 2 * l + 1)) for k, l in enumerate(layout.degrees)
    ]
    return jnp.concatenate(parts, axis=-1)


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


def block_diagonal(blocks: Array) -> Array:
    """(H, w, w) blocks → the (H·w, H·w) block-diagonal matrix (so that heads run as one product).

    Built as the blocks tiled along the columns times a constant 0/1 mask: one element-wise kernel, where
    an einsum with an identity matrix compiles on CPU to a transposing copy (docs/speed.md).
    """
    num, width, _ = blocks.shape
    mask = np.kron(np.eye(num), np.ones((width, width)))
    return jnp.tile(blocks.reshape(num * width, width), (1, num)) * jnp.asarray(mask, blocks.dtype)


class HeadDense(nn.Module):
    """Per-head affine projection (W_q, W_k or W_v of eqs. 32–34 with a bias), block diagonal over H heads.

    Each head h maps its own slice x^h ∈ R^{F/H} with its own (F/H × F/H) matrix and adds its own bias
    (F/H,). This is how the authors' release (v0.1) projects queries, keys and values: a biased Dense layer
    per head; it reproduces the parameter counts of the paper's Table 4 (fewer parameters with more SPHC
    heads), see docs/parameters.md.

    Returns the (F, F) block-diagonal kernel and the (F,) bias rather than applying them, so that a layer
    can apply all its projections to x in one matrix product.
    """

    features: int
    num_heads: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self) -> tuple[Array, Array]:
        width = self.features // self.num_heads
        kernel = self.param(
            "kernel",
            nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=1, out_axis=2),
            (self.num_heads, width, width),
            self.dtype,
        )
        bias = self.param("bias", nn.initializers.zeros, (self.num_heads, width), self.dtype)
        return block_diagonal(kernel), bias.reshape(self.features)


class MLP(nn.Module):
    """Two Dense layers with SiLU in between (the output MLP of A.3)."""

    hidden: int
    out: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = nn.Dense(self.hidden, dtype=self.dtype, param_dtype=self.dtype, name="dense_0")(x)
        x = nn.silu(x)
        return nn.Dense(self.out, dtype=self.dtype, param_dtype=self.dtype, name="dense_1")(x)


class RadialSphericalFilter(nn.Module):
    """Filter w_ij = φ_r(θ(r_ij)) + φ_s([χ_ij^(l)]_l) (paper eq. 16, A.3).

    φ_r, the radial filter, comes in computed (:mod:`so3krates.model.radial`); φ_s, the spherical
    filter, MLP [spherical_hidden, F] on the per-degree SPHC distances χ_ij^(l) = ‖χ_j^(l) − χ_i^(l)‖, is
    applied here to its hidden activations (its first layer is shared with the layer's other filter).
    """

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, radial: Array, spherical_hidden: Array) -> Array:
        spherical = nn.Dense(self.features, dtype=self.dtype, param_dtype=self.dtype, name="spherical")(
            spherical_hidden
        )
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


def feature_messages(alpha: Array, cutoff: Array, v_j: Array) -> Array:
    """Messages φ(r_ij) α^h_ij (W_v x_j)^h of the feature update (eqs. 12, 33), heads concatenated.

    Args:
        alpha: (P, H).  cutoff: (P,).  v_j: (P, F) values of the neighbours.
    Returns:
        (P, F); their segment sum over j is Δx_i.
    """
    num_heads = alpha.shape[-1]
    v = v_j.reshape(v_j.shape[0], num_heads, -1)
    return ((alpha * cutoff[:, None])[:, :, None] * v).reshape(v_j.shape)


def sphc_messages(alpha: Array, weight: Array, sph: Array, layout: DegreeLayout) -> Array:
    """Messages weight_ij α^(l)_ij Y^(l)(r̂_ij) of the SPHC update (eqs. 13, 34; eq. 14 with the
    non-local weight), one head per degree.

    Args:
        alpha: (P, |L|).  weight: (P,) φ(r_ij), plus φ_χcut(χ̃_ij) with the correction.  sph: (P, dim).
    Returns:
        (P, dim); their segment sum over j is Δχ_i.
    """
    return repeat_per_degree(alpha * weight[:, None], layout) * sph


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
        chi = chi + repeat_per_degree(b1, self.layout) * chi + repeat_per_degree(b2, self.layout) * chi_coupled
        return x, chi


class So3kratesLayer(nn.Module):
    """One So3krates layer: feature and SPHC self-attention read the same (x, χ), then the interaction.

    Feature attention (eqs. 12, 15, 32, 33) runs over the local edges; SPHC attention (eqs. 13, 34) over
    the same edges, or, with the non-local correction (eq. 14), over all pairs of each structure
    (``sphc_pairs``) with the spherical-neighbourhood weights given by ``nonlocal_fn(χ)``. The radial
    filters come as ``radial`` (:func:`so3krates.model.radial.layer_filters`): the layer asks it for the
    filters of its edges and pairs, whether computed or tabulated.

    For speed, all five projections (W_q, W_k, W_v of the feature block; W_q, W_k of the SPHC block) are
    one matrix product, and each per-edge quantity is gathered by itself (docs/speed.md).
    """

    features: int
    num_heads: int
    layout: DegreeLayout
    spherical_hidden: int
    parity_even_only: bool = False
    dtype: jnp.dtype = jnp.float32
    paired_edges: bool = False  # Batch.edges_paired: the edges' second half reverses the first

    @nn.compact
    def __call__(
        self,
        x: Array,
        chi: Array,
        edges: Pairs,
        radial: LayerFilters,
        sphc_pairs: Pairs | None = None,
        nonlocal_fn: Callable[[Array], Array] | None = None,
    ) -> tuple[Array, Array]:
        F, H, layout = self.features, self.num_heads, self.layout
        num_atoms = x.shape[0]
        kernels, biases = zip(
            HeadDense(F, H, self.dtype, name="feature_query")(),
            HeadDense(F, H, self.dtype, name="feature_key")(),
            HeadDense(F, H, self.dtype, name="feature_value")(),
            HeadDense(F, layout.num_degrees, self.dtype, name="sphc_query")(),
            HeadDense(F, layout.num_degrees, self.dtype, name="sphc_key")(),
            strict=True,
        )
        projected = x @ jnp.concatenate(kernels, axis=1) + jnp.concatenate(biases)
        q_f, k_f, v_f, q_s, k_s = jnp.split(projected, 5, axis=-1)
        spherical_first = nn.Dense(
            2 * self.spherical_hidden, dtype=self.dtype, param_dtype=self.dtype, name="spherical"
        )
        feature_filter = RadialSphericalFilter(F, self.dtype, name="feature_filter")
        sphc_filter = RadialSphericalFilter(F, self.dtype, name="sphc_filter")
        sh = self.spherical_hidden

        # Centre i and neighbour j quantities of every edge, one gather each: XLA fuses each into its
        # consumers, where gathering one concatenated array and splitting it cost a copy per part.
        q_f_i, q_s_i = q_f[edges.i], q_s[edges.i]
        k_f_j, v_f_j, k_s_j = k_f[edges.j], v_f[edges.j], k_s[edges.j]
        # The filters (eq. 16) are symmetric, w_ij = w_ji: with paired edges they are computed for the first
        # half (one direction of every pair) and used for both.
        filter_edges = filter_edge_count(edges.i.shape[0], self.paired_edges)
        edge_radial = radial.for_edges(edges.r[:filter_edges])
        chi_ij = chi[edges.j[:filter_edges]] - chi[edges.i[:filter_edges]]
        spherical_h = nn.silu(spherical_first(per_degree_norm(chi_ij, layout)))  # eq. 16 input

        def both_directions(w: Array) -> Array:
            return jnp.concatenate([w, w]) if self.paired_edges else w

        w_f = both_directions(feature_filter(edge_radial[0], spherical_h[:, :sh]))
        messages = feature_messages(attention_coefficients(q_f_i, k_f_j, w_f, H), edges.cutoff, v_f_j)

        if sphc_pairs is None:  # local SPHC attention on the same edges
            w_s = both_directions(sphc_filter(edge_radial[1], spherical_h[:, sh:]))
            alpha_s = attention_coefficients(q_s_i, k_s_j, w_s, layout.num_degrees)
            dx = segment_sum(messages, edges.i, num_atoms)
            dchi = segment_sum(sphc_messages(alpha_s, edges.cutoff, edges.sph, layout), edges.i, num_atoms)
        else:  # non-local correction: SPHC attention over all pairs (eq. 14)
            dx = segment_sum(messages, edges.i, num_atoms)
            q_s_i, chi_i = q_s[sphc_pairs.i], chi[sphc_pairs.i]
            k_s_j, chi_j = k_s[sphc_pairs.j], chi[sphc_pairs.j]
            pair_h = nn.silu(spherical_first(per_degree_norm(chi_j - chi_i, layout)))
            w_s = sphc_filter(radial.for_pairs(sphc_pairs.r)[1], pair_h[:, sh:])
            alpha_s = attention_coefficients(q_s_i, k_s_j, w_s, layout.num_degrees)
            weight = sphc_pairs.cutoff + (nonlocal_fn(chi) if nonlocal_fn is not None else 0.0)
            dchi = segment_sum(sphc_messages(alpha_s, weight, sphc_pairs.sph, layout), sphc_pairs.i, num_atoms)
        return InteractionBlock(F, layout, self.parity_even_only, self.dtype, name="interaction")(x + dx, chi + dchi)


__getattr__ = moved(
    "so3krates.model.layers",
    {
        "RadialFilters": "so3krates.model.radial",
        "RadialTable": "so3krates.model.radial",
        "hermite_coefficients": "so3krates.model.radial",
        "interpolate_radial_filters": "so3krates.model.radial",
        "sphc_distances": "so3krates.model.nonlocal_correction",
        "sphc_neighbourhood_weight": "so3krates.model.nonlocal_correction",
    },
)
