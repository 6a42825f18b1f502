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

from so3krates.so3 import DegreeLayout, polynomial_cutoff, smooth_norm

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

    Built as the blocks tiled along the columns times a constant 0/1 mask: one element-wise kernel. The
    equivalent einsum with an identity matrix compiled on CPU to a transposing copy per projection, ~2 ms of
    fixed cost per call (30 projections) that dominated nothing but small molecules (docs/speed.md).
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
    here once per call, each as its own small MLP (P, K) → (P, C) → (P, F) with a contiguous (P, F) result.
    That is what makes it fast on CPU: written as one (K → 2·num_layers·C) product followed by a batched
    one, XLA transposed the (P, 2·num_layers·C) hidden activations in a copy that cost 15 of 50 ms of the
    Table 3 toluene call; stacking the results into one array costs a zero-padded copy per filter in the
    backward pass (docs/speed.md). The parameters are stored as one Dense layer ``hidden`` and a stacked
    second layer (the parameter tree of earlier versions). The filters depend on the distance alone, which
    is what :func:`tabulate_radial_filters` exploits for inference.

    Returns:
        For every layer the pair (feature filter, SPHC filter), each (P, F).
    """

    num_layers: int
    radial_hidden: int
    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, rbf: Array) -> list[tuple[Array, Array]]:
        L, C, F = self.num_layers, self.radial_hidden, self.features
        hidden_kernel, hidden_bias = _DenseParameters(rbf.shape[-1], 2 * L * C, self.dtype, name="hidden")()
        hidden_kernel = hidden_kernel.reshape(-1, L, 2, C)
        hidden_bias = hidden_bias.reshape(L, 2, C)
        kernel = self.param("kernel", nn.initializers.lecun_normal(batch_axis=(0, 1)), (L, 2, C, F), self.dtype)
        bias = self.param("bias", nn.initializers.zeros, (L, 2, F), self.dtype)

        def mlp(t: int, b: int) -> Array:
            return nn.silu(rbf @ hidden_kernel[:, t, b] + hidden_bias[t, b]) @ kernel[t, b] + bias[t, b]

        return [(mlp(t, 0), mlp(t, 1)) for t in range(L)]


@flax.struct.dataclass
class RadialTable:
    """Radial filters of all layers as a low-rank expansion φ_{t,b}(r) ≈ Σ_m u_m(r) V_{t,b,m,:} whose M
    basis functions u_m(r) are tabulated on a uniform grid over [0, r_cut] for cubic Hermite interpolation
    (built by :func:`so3krates.model.so3krates.tabulate_radial_filters`).

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


def hermite_coefficients(spacing: float, values: np.ndarray, slopes: np.ndarray) -> np.ndarray:
    """Cubic Hermite coefficients per interval from values and slopes at the grid points, each of shape
    (num_points, M): p(t) = v₀ + m₀t + (3Δ − 2m₀ − m₁)t² + (m₀ + m₁ − 2Δ)t³ with m = h·slope and Δ = v₁ − v₀.

    Computed in float64 on the host, from float64 values and slopes: the t² and t³ coefficients are small
    differences of values, which carry the rounding error of the values divided by h into the forces
    (see :func:`so3krates.model.so3krates.tabulate_radial_filters`).

    Returns:
        (num_points − 1, 4, M): one contiguous row per interval, so that interpolation is one gather of
        rows followed by Horner's rule.
    """
    values, slopes = np.asarray(values, np.float64), np.asarray(slopes, np.float64)
    v0, v1 = values[:-1], values[1:]
    m0, m1 = spacing * slopes[:-1], spacing * slopes[1:]
    delta = v1 - v0
    return np.stack([v0, m0, 3 * delta - 2 * m0 - m1, m0 + m1 - 2 * delta], axis=-2)


def interpolate_radial_filters(r: Array, table: RadialTable) -> list[tuple[Array, Array]]:
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


def filter_edge_count(num_edges: int, paired: bool) -> int:
    """How many edges get their own filters (eq. 16): all of them, or with paired edges
    (``Batch.edges_paired``) the first half, whose filters serve the reverse edges too (w_ij = w_ji)."""
    return num_edges // 2 if paired else num_edges


class RadialSphericalFilter(nn.Module):
    """Filter w_ij = φ_r(θ(r_ij)) + φ_s([χ_ij^(l)]_l) (paper eq. 16, A.3).

    φ_r, the radial filter, comes in computed (:class:`RadialFilters`, or its table); φ_s, the spherical
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


def sphc_distances(chi_i: Array, chi_j: Array, layout: DegreeLayout, orthonormal: bool = True) -> Array:
    """SPHC distances χ_ij = ‖χ_j − χ_i‖ over all degrees, in the paper's normalisation (eq. 14).

    The softmax of eq. 14 is a fixed function of these distances, so their scale matters (unlike
    everywhere else, where learnable weights absorb it): they are computed for orthonormal spherical
    harmonics as in the paper and the authors' release, e3x's Racah-normalised entries times
    √((2l+1)/4π) (with e3x's own scale the l = 1, 2, 3 distances would be 2.05×, 1.59×, 1.34× larger).
    A smooth norm, because χ_j − χ_i vanishes for atoms of equivalent environments.

    Args:
        chi_i, chi_j: (P, dim) SPHCs of the centres and the partners, e3x's normalisation.
        orthonormal: False measures them in e3x's own (Racah) normalisation instead (for comparisons).
    Returns:
        (P,) distances.
    """
    if not orthonormal:
        return smooth_norm(chi_j - chi_i, axis=-1)
    scale = jnp.asarray(layout.orthonormal_scale, chi_i.dtype)
    return smooth_norm((chi_j - chi_i) * scale, axis=-1)


def sphc_neighbourhood_weight(
    chi: Array,
    pairs: Pairs,
    n_atoms_of_centre: Array,
    kappa: float,
    p: int,
    layout: DegreeLayout,
    orthonormal: bool = True,
) -> Array:
    """Spherical neighbourhood φ_χcut(χ̃_ij) of the non-local correction (paper eq. 14, A.2, eq. 29).

    χ_ij = ‖χ_i − χ_j‖ over all degrees in the paper's normalisation (:func:`sphc_distances`); χ̃ = softmax
    over j of χ_ij within each row i (the pairs must be all ordered pairs of each structure); then the
    polynomial cutoff (eq. 29) at χ_cut = κ / n_atoms.

    Args:
        chi: (N, dim) SPHCs.  pairs: all pairs within each structure.
        n_atoms_of_centre: (P,) number of atoms of the structure of pair (i, j).
    Returns:
        (P,) weights in [0, 1], zero for masked pairs.
    """
    d = sphc_distances(chi[pairs.i], chi[pairs.j], layout, orthonormal)
    d = jnp.where(pairs.mask, d, -jnp.inf)
    num_atoms = chi.shape[0]
    # Row-wise softmax over j; the max is held constant (stop_gradient) as usual for stability.
    row_max = jax.lax.stop_gradient(jax.ops.segment_max(d, pairs.i, num_segments=num_atoms))
    e = jnp.where(pairs.mask, jnp.exp(d - row_max[pairs.i]), 0.0)
    row_sum = segment_sum(e, pairs.i, num_atoms)
    softmax = e / jnp.where(row_sum > 0, row_sum, 1.0)[pairs.i]
    # Padding pairs belong to the padding graph (0 atoms): guard κ/0, their weight is masked anyway.
    chi_cut = kappa / jnp.maximum(n_atoms_of_centre, 1).astype(chi.dtype)
    return jnp.where(pairs.mask, polynomial_cutoff(softmax / chi_cut, p), 0.0)


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
    (``sphc_pairs``) with the spherical-neighbourhood weights given by ``nonlocal_fn(χ)``.

    For speed, all five projections (W_q, W_k, W_v of the feature block; W_q, W_k of the SPHC block) are
    one matrix product; each per-edge quantity is gathered by itself (a concatenated gather split
    afterwards cost 25 % more on the 201-atom water droplet, docs/speed.md).
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
        edge_radial: tuple[Array, Array],
        sphc_pairs: Pairs | None = None,
        pair_radial: tuple[Array, Array] | None = None,
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
        # half (one direction of every pair; edge_radial is given for that half) and used for both.
        filter_edges = filter_edge_count(edges.i.shape[0], self.paired_edges)
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
            w_s = sphc_filter(pair_radial[1], pair_h[:, sh:])
            alpha_s = attention_coefficients(q_s_i, k_s_j, w_s, layout.num_degrees)
            weight = sphc_pairs.cutoff + (nonlocal_fn(chi) if nonlocal_fn is not None else 0.0)
            dchi = segment_sum(sphc_messages(alpha_s, weight, sphc_pairs.sph, layout), sphc_pairs.i, num_atoms)
        return InteractionBlock(F, layout, self.parity_even_only, self.dtype, name="interaction")(x + dx, chi + dchi)


def element_table(values: np.ndarray | Array, numbers: Array) -> Array:
    """Look up per-element constants (scale, shift) for each atom: values[z_i]."""
    return jnp.asarray(values)[numbers]
