"""Euclidean fast attention (EFA) with Euclidean rotary positional encodings (ERoPE).

Attention over all atoms of each structure at linear cost (specification: docs/efa.md). For queries
q_i, keys k_j ∈ R^{F_qk} (F_qk even, K = F_qk/2 channel pairs) and values v_j ∈ R^{D_v}:

    y_i = Σ_{j: g(j)=g(i)} κ_ij v_j,
    κ_ij = (1/√D) Σ_m w_m ⟨R(θ u_m·r_i) q_i, R(θ u_m·r_j) k_j⟩                         (Lebedev quadrature)
         = (1/√D) Σ_c Σ_k (q_{i,c,2k} k_{j,c,2k} + q_{i,c,2k+1} k_{j,c,2k+1}) j₀(θ_k r_ij)   (exact limit)

where R(φ) rotates each channel pair (2k, 2k+1) by the angle θ_k u_m·r_i (ERoPE), u_m, w_m are the
directions and weights of a Lebedev grid (Σ_m w_m = 1: a spherical mean), c runs over any further slots
(parity, l, m) of q and k, D = (number of slots)·F_qk, and j₀(x) = sin(x)/x. No softmax, no 1/N: the
output is extensive and includes the self term j = i (j₀(0) = 1).

The sum over m is exact (up to 1e-5 per cos term) only while b_max·r_ij/r_max ≤ T(M), the safe
frequency of the grid (:mod:`so3krates.model.lebedev`); beyond it rotational invariance degrades.
Translation and permutation invariance are exact, and so is inversion (Lebedev grids are symmetric).
"""

from __future__ import annotations

import functools
import math
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from so3krates.deprecation import moved
from so3krates.graph import Batch
from so3krates.model.config import ModelConfig
from so3krates.model.lebedev import LebedevGrid, lebedev_grid

Array = jax.Array


def erope_frequencies(num_features: int, max_frequency: float, max_length: float) -> np.ndarray:
    """ERoPE frequencies θ_k = (b_max / r_max)·k/(K−1), k = 0…K−1, K = F_qk/2 (θ_0 = 0 included).

    For K = 1 the single frequency is b_max / r_max. Constants (not trainable): trainable frequencies
    could drift beyond what the grid integrates (docs/efa.md, pitfalls).

    Returns:
        (K,) frequencies in 1/Å.
    """
    if num_features < 2 or num_features % 2:
        raise ValueError(f"ERoPE needs an even number of query/key features ≥ 2, got {num_features}")
    K = num_features // 2
    omega = max_frequency / max_length
    if K == 1:
        return np.array([omega])
    return omega * np.arange(K) / (K - 1)


def erope_rotate(x: Array, positions: Array, directions: Array, frequencies: Array, interleaved: bool = True) -> Array:
    """ERoPE: rotate the channel pairs (2k, 2k+1) of x_i by φ_imk = θ_k u_m·r_i for every grid direction.

    (a, b) → (a cos φ − b sin φ, a sin φ + b cos φ); the same angle for every slot c (parity, l, m), so
    the rotation acts along the feature axis only and commutes with Wigner-D rotations of the slots.

    Args:
        x: (N, *slots, F) with F = 2K.  positions: (N, 3).  directions: (M, 3).  frequencies: (K,).
        interleaved: output channel order (2k, 2k+1) as the input; False gives the K rotated first
            components then the K second ones (the order is irrelevant inside a contraction of two
            rotated vectors and saves an interleaving copy).
    Returns:
        (N, M, *slots, F).
    """
    n, *slots, F = x.shape
    K = F // 2
    phase = (positions @ directions.T)[..., None] * frequencies  # (N, M, K)
    phase = phase.reshape(n, directions.shape[0], *([1] * len(slots)), K)
    cos, sin = jnp.cos(phase), jnp.sin(phase)
    a, b = x[:, None, ..., 0::2], x[:, None, ..., 1::2]  # (N, 1, *slots, K)
    rotated = (a * cos - b * sin, a * sin + b * cos)
    if interleaved:
        return jnp.stack(rotated, axis=-1).reshape(n, directions.shape[0], *slots, F)
    return jnp.concatenate(rotated, axis=-1)


def efa_linear(
    q: Array,
    k: Array,
    v: Array,
    positions: Array,
    node_graph: Array,
    num_graphs: int,
    grid: LebedevGrid,
    frequencies: Array | np.ndarray,
) -> Array:
    """Euclidean fast attention in O(N): y_i = (1/√D) Σ_m w_m q̃_imᵀ KV_{g(i),m}, KV_{g,m} = Σ_{j∈g} k̃_jm v_jᵀ.

    Contraction order (docs/efa.md §4): q̃, k̃ = ERoPE(q), ERoPE(k): (N, M, D); the per-graph key–value
    sums KV: (G, M·D, D_v) as one matrix product k̃ᵀ (onehot ⊙ v) over atoms, a segment sum written as
    a dense product (XLA's scatter on CPU is ~20× slower); then y = onehot-select(q̃ KV). No (N, M, D, D_v)
    tensor is formed. Time O(N·G·M·D·D_v) — linear in N for a fixed number of graphs G (G = 1 for one
    structure: see :class:`EfaUpdate`); memory O(N·M·D + N·G·D_v + G·M·D·D_v).

    Positions are centred per graph first (the kernel depends on r_j − r_i only, so this is exact, and it
    keeps the phases small in float32); the centre carries no gradient since its derivative is zero.

    Args:
        q, k: (N, *slots, F_qk) queries and keys, F_qk even.  v: (N, *rest) values (D_v = prod(rest)).
        positions: (N, 3) Å.
        node_graph: (N,) graph of each atom; atoms with an index outside [0, num_graphs) take no part
            (they contribute nothing and get y = 0): this is how padding is dropped.
        num_graphs: G (static).
        grid: Lebedev grid, see :func:`lebedev_grid`.  frequencies: (K,) θ_k, see :func:`erope_frequencies`.
    Returns:
        (N, *rest), the dtype of v.
    """
    n = q.shape[0]
    D = math.prod(q.shape[1:])
    dtype = v.dtype
    rest = v.shape[1:]
    v = v.reshape(n, -1)
    Dv = v.shape[1]
    directions = jnp.asarray(grid.directions, dtype)
    weights = jnp.asarray(grid.weights, dtype)
    frequencies = jnp.asarray(frequencies, dtype)
    M = directions.shape[0]

    onehot = jax.nn.one_hot(node_graph, num_graphs, dtype=dtype)  # (N, G); zero rows for dropped atoms
    counts = onehot.sum(0)
    centres = (onehot.T @ positions) / jnp.maximum(counts, 1.0)[:, None]
    r = positions - jax.lax.stop_gradient(onehot @ centres)

    # q carries the quadrature weights and 1/√D, so that the final product is a plain sum over (m, d).
    q_rot = erope_rotate(q, r, directions, frequencies, interleaved=False).reshape(n, M, D)
    q_rot = (q_rot * (weights / math.sqrt(D))[None, :, None]).reshape(n, M * D)
    k_rot = erope_rotate(k, r, directions, frequencies, interleaved=False).reshape(n, M * D)
    graph_values = (onehot[:, :, None] * v[:, None, :]).reshape(n, num_graphs * Dv)  # (N, G·D_v)
    kv = k_rot.T @ graph_values  # (M·D, G·D_v): KV_{g,m} for every graph
    y = (q_rot @ kv).reshape(n, num_graphs, Dv)
    y = jnp.einsum("nge,ng->ne", y, onehot)
    return y.reshape(n, *rest)


def efa_dense_reference(
    q: Array,
    k: Array,
    v: Array,
    positions: Array,
    node_graph: Array,
    num_graphs: int,
    frequencies: Array | np.ndarray,
) -> Array:
    """The exact O(N²) limit of EFA (infinite grid), for tests: y_i = Σ_{j: g(j)=g(i)} κ_ij v_j with

    κ_ij = (1/√D) Σ_c Σ_k (q_{i,c,2k} k_{j,c,2k} + q_{i,c,2k+1} k_{j,c,2k+1}) j₀(θ_k r_ij),  j₀(x) = sin x / x.

    Same arguments and output as :func:`efa_linear` (no grid). Memory O(N²·K).
    """
    n = q.shape[0]
    D = math.prod(q.shape[1:])
    rest = v.shape[1:]
    K = q.shape[-1] // 2
    qp = q.reshape(n, -1, K, 2)
    kp = k.reshape(n, -1, K, 2)
    a = jnp.einsum("icks,jcks->ijk", qp, kp)  # Σ_c (q_2k k_2k + q_2k+1 k_2k+1) per pair and frequency
    r = jnp.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1)
    j0 = jnp.sinc(r[..., None] * jnp.asarray(frequencies, q.dtype) / jnp.pi)  # numpy sinc: sin(πx)/(πx)
    valid = (node_graph >= 0) & (node_graph < num_graphs)
    same = (node_graph[:, None] == node_graph[None, :]) & valid[:, None] & valid[None, :]
    kappa = jnp.where(same, (a * j0).sum(-1), 0.0) / math.sqrt(D)
    return (kappa @ v.reshape(n, -1)).reshape(n, *rest)


def _concrete(x: Array | np.ndarray) -> np.ndarray | None:
    """x as numpy when its value is known at trace time, else None (inside jit, grad of positions, ...)."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def check_structures(periodic: np.ndarray, extent: np.ndarray, graph_mask: np.ndarray, max_length: float) -> None:
    """Host-side checks of the structures an EFA layer sees (runs as a ``jax.debug.callback`` under jit).

    Args:
        periodic: (G,) graph has any periodic direction.  extent: (G,) upper bound on its diameter, Å.
        graph_mask: (G,) real graphs.  max_length: r_max, Å.
    Raises:
        ValueError: a real graph is periodic (EFA over a periodic cell needs another construction:
            the all-atom sum would have to run over infinitely many images).
    Warns:
        UserWarning: a structure may be larger than r_max (rotational invariance then degrades).
    """
    periodic, extent, graph_mask = np.asarray(periodic), np.asarray(extent), np.asarray(graph_mask)
    bad = np.flatnonzero(periodic & graph_mask)
    if len(bad):
        raise ValueError(
            f"Euclidean fast attention does not support periodic systems (structure {int(bad[0])} of the "
            f"batch has pbc); use a model without global_attention='efa' for periodic cells"
        )
    large = np.flatnonzero((extent > max_length) & graph_mask)
    if len(large):
        g = int(large[np.argmax(extent[large])])
        warnings.warn(
            f"EFA: structure {g} may span up to {extent[g]:.1f} Å, more than efa_max_length = {max_length} Å; "
            f"rotational invariance holds only to the grid's accuracy at distances below it (docs/efa.md)",
            stacklevel=2,
        )


def graph_extent(positions: Array, node_graph: Array, node_mask: Array, num_graphs: int) -> Array:
    """Upper bound on the diameter of each graph, (G,): min(2·max_i |r_i − centroid|, bounding-box diagonal)."""
    onehot = jax.nn.one_hot(node_graph, num_graphs, dtype=positions.dtype) * node_mask[:, None]
    centres = (onehot.T @ positions) / jnp.maximum(onehot.sum(0), 1.0)[:, None]
    seg = jnp.where(node_mask, node_graph, num_graphs)  # padding atoms into a dropped segment
    radius = jax.ops.segment_max(jnp.linalg.norm(positions - centres[node_graph], axis=-1), seg, num_graphs + 1)
    high = jax.ops.segment_max(positions, seg, num_graphs + 1)
    low = jax.ops.segment_min(positions, seg, num_graphs + 1)
    box = jnp.linalg.norm(jnp.where(jnp.isfinite(high - low), high - low, 0.0), axis=-1)
    return jnp.maximum(jnp.minimum(2.0 * radius, box)[:num_graphs], 0.0)


def check_batch(positions: Array, batch: Batch, max_length: float) -> None:
    """Refuse periodic input and warn about structures wider than r_max (:func:`check_structures`):
    eagerly when the batch is concrete (init, unjitted calls), otherwise from inside the compiled function."""
    num_graphs = batch.graph_mask.shape[0]
    periodic = jnp.any(jnp.asarray(batch.pbc), axis=-1)
    node_mask = jnp.asarray(batch.node_mask)
    extent = graph_extent(jax.lax.stop_gradient(positions), batch.node_graph, node_mask, num_graphs)
    values = [_concrete(a) for a in (periodic, extent, batch.graph_mask)]
    if all(a is not None for a in values):
        check_structures(*values, max_length)
    else:
        jax.debug.callback(
            functools.partial(check_structures, max_length=max_length), periodic, extent, jnp.asarray(batch.graph_mask)
        )


class EfaUpdate(nn.Module):
    """EFA update of the invariant features of one So3krates layer (docs/efa.md §6, P = 1, L = 0).

    q_i = gelu(W_q x_i + b_q), k_i = gelu(W_k x_i + b_k) (tanh GELU), v_i = W_v x_i + b_v (zero for padding
    atoms), z = EFA(q, k, v) (:func:`efa_linear`), y_nl = MLP′(W_z z + x) with MLP′ = Dense → silu → Dense
    (last Dense zero-initialised, so a new model starts as the local one), and the update is

        Δx_i = silu(1 − c) · y_nl,i,   c trainable, initialised to 0.5.

    The paper's switch also scales the local branch by silu(c); here the local So3krates update is added
    by the layer itself, unscaled, so only the non-local half of the switch lives here.

    The model creates one for each layer in ``config.efa_layers`` (all layers when None).

    Periodic structures are refused (ValueError; under jit it surfaces as a JaxRuntimeError carrying the
    same message), and a structure that may be wider than r_max = ``efa_max_length`` gives a warning.
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, positions: Array, batch: Batch) -> Array:
        """x: (N, F) layer input, positions: (N, 3), batch: the padded batch. Returns Δx: (N, F)."""
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        grid = lebedev_grid(cfg.efa_grid_size, cfg.efa_max_frequency, cfg.efa_max_length)
        frequencies = erope_frequencies(cfg.efa_qk_features, cfg.efa_max_frequency, cfg.efa_max_length)
        num_graphs = batch.graph_mask.shape[0]
        node_mask = jnp.asarray(batch.node_mask)
        check_batch(positions, batch, cfg.efa_max_length)

        def dense(features: int, name: str, **kwargs) -> nn.Dense:
            return nn.Dense(features, dtype=dtype, param_dtype=dtype, name=name, **kwargs)

        q = nn.gelu(dense(cfg.efa_qk_features, "query")(x), approximate=True)
        k = nn.gelu(dense(cfg.efa_qk_features, "key")(x), approximate=True)
        v = dense(cfg.efa_v_features, "value")(x) * node_mask[:, None].astype(dtype)
        # The last graph of a Batch is always a padding graph: leaving it out of the segments (G − 1)
        # drops its atoms for free and makes one structure a single dense product (no G factor).
        z = efa_linear(q, k, v, positions.astype(dtype), batch.node_graph, max(num_graphs - 1, 1), grid, frequencies)
        h = dense(cfg.features, "mix")(z) + x
        h = nn.silu(dense(cfg.features, "mlp_0")(h))
        y = dense(cfg.features, "mlp_1", kernel_init=nn.initializers.zeros)(h)
        switch = self.param("switch", nn.initializers.constant(0.5), (), dtype)
        return jnp.where(node_mask[:, None], nn.silu(1.0 - switch) * y, 0.0)


__getattr__ = moved(
    "so3krates.model.efa",
    {
        name: "so3krates.model.lebedev"
        for name in (
            "LEBEDEV_SAFE_FREQUENCY",
            "LEBEDEV_SIZES",
            "HEADROOM",
            "safe_frequency",
            "lebedev_size",
            "smallest_safe_grid",
            "check_grid",
        )
    },
)
