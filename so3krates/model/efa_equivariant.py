"""Equivariant Euclidean fast attention: queries, keys and values of degree l ≤ 2 built from the SPHCs.

The invariant EFA (:class:`so3krates.model.efa.EfaUpdate`) couples two atoms only through
Σ_k c_k j₀(θ_k r_ij) with invariant q, k, v, so it sees a cumulene's torsion only through the curvature
of a few distances (docs/efa.md). Here q, k and v carry degrees l = 0…L (L = ``efa_max_degree``) in
e3x's slot layout ((L+1)² slots: index l² + l + m), each slot F features wide:

    s_i = W x_i + b,   a_{i,l} = A_l x_i   (A_l: Dense without bias, one per degree),
    q_{i,00,f} = gelu(s_{i,f}),   q_{i,lm,f} = gate(s_{i,f}) · χ_{i,lm} · a_{i,l,f}   (l ≥ 1)

with gate(s) = ½(1 + tanh(√(2/π)(s + 0.044715 s³))), so that gelu(s) = s·gate(s): e3x's gated GELU, the
gate a function of the scalar channel only (EFA.md §1). k likewise; v without gate and activation:
v_{i,00} = W_v x_i + b_v, v_{i,lm,f} = χ_{i,lm} · c_{i,l,f}. χ^(l) is the (2l+1)-vector SPHC of degree l
(:mod:`so3krates.so3`, Racah-normalised); a, c and the gate are invariant, so every degree-l slot
rotates with the Wigner-D matrix of χ^(l).

The attention is :func:`so3krates.model.efa.efa_linear` unchanged: ERoPE rotates the feature axis by the
same angle in every (l, m) slot (it commutes with Wigner-D), and

    κ_ij = (1/√D) Σ_{l,m} Σ_k (q_{i,lm,2k} k_{j,lm,2k} + q_{i,lm,2k+1} k_{j,lm,2k+1}) j₀(θ_k r_ij),
    y_i = Σ_{j: g(j)=g(i)} κ_ij v_j,   D = (L+1)²·F_qk,

κ is invariant (Σ_m q_lm k_lm is), so y_{lm} transforms like v_{lm}. The l ≥ 1 terms of κ contain
χ_i^(l)·χ_j^(l): the relative orientation of two atoms' SPHCs at any distance, which is what the
cumulene torsion needs. (In y_00 the first-order terms of an end group's equivalent atoms cancel; the torsion
reaches the invariants through the l ≥ 1 output, which is why it updates χ: docs/efa.md, the torsion probe.)

The update (:class:`EquivariantEfaUpdate`): the l = 0 part of y updates x exactly as in ``EfaUpdate``;
the l ≥ 1 part updates the SPHCs, Δχ_i^(l) = Σ_f y_{i,lm,f} w_{l,f} (w_l zero-initialised, no bias):
the linear-cost analogue of the paper's eq. 14 correction.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from so3krates.graph import Batch
from so3krates.model.config import ModelConfig
from so3krates.model.efa import check_batch, efa_linear, erope_frequencies
from so3krates.model.lebedev import lebedev_grid
from so3krates.so3 import DegreeLayout

Array = jax.Array


def gelu_gate(s: Array) -> Array:
    """gate(s) with gelu(s) = s·gate(s), tanh approximation (e3x's and flax's ``approximate=True``)."""
    return 0.5 * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (s + 0.044715 * s**3)))


def sphc_by_degree(chi: Array, layout: DegreeLayout, max_degree: int) -> list[Array]:
    """[χ^(1), …, χ^(L)] from the flat SPHCs, each (N, 2l+1) in e3x's m order; every l ≤ L must be in the
    layout (ModelConfig checks it)."""
    return [chi[:, layout.slice(l)] for l in range(1, max_degree + 1)]


class EquivariantProjection(nn.Module):
    """Projection of (x, χ) onto F channels of degrees 0…L, shape (N, (L+1)², F) (module docstring).

    ``gated``: q and k (gelu on the scalar, gate(s) on l ≥ 1); otherwise v (linear).
    """

    features: int
    max_degree: int
    gated: bool
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, sphcs: list[Array]) -> Array:
        def dense(name: str, bias: bool) -> nn.Dense:
            return nn.Dense(self.features, use_bias=bias, dtype=self.dtype, param_dtype=self.dtype, name=name)

        s = dense("scalar", True)(x)  # (N, F)
        parts = [(nn.gelu(s, approximate=True) if self.gated else s)[:, None, :]]
        gate = gelu_gate(s) if self.gated else 1.0
        for l, chi_l in zip(range(1, self.max_degree + 1), sphcs, strict=True):
            a = dense(f"degree_{l}", False)(x) * gate  # (N, F) invariant weights of this degree
            parts.append(chi_l.astype(self.dtype)[:, :, None] * a[:, None, :])  # (N, 2l+1, F)
        return jnp.concatenate(parts, axis=1)


class EquivariantEfaUpdate(nn.Module):
    """EFA update of the features and SPHCs of one layer with q, k, v of degree ≤ L = ``efa_max_degree``.

    z = EFA(q, k, v) (:func:`efa_linear`; with ``global_attention='efa-control'`` z = v: the attention
    replaced by the value projection, a Dense layer of the same inputs, EFA.md §6 ``emulate_era_block``).
    Then, as in :class:`so3krates.model.efa.EfaUpdate`,

        Δx_i = silu(1 − c) · MLP′(W_z z_{i,00} + x_i),   MLP′'s last Dense and w_l zero-initialised,
        Δχ_i^(l) = Σ_f z_{i,lm,f} w_{l,f}   for 1 ≤ l ≤ L (only when ``update_sphc``),

    so a new model starts as the local one. ``update_sphc=False`` (the last layer, whose SPHCs feed
    nothing) keeps only the scalar values: Δχ = 0 and no w_l. z is sown as ``intermediates/attention``.

    Periodic structures are refused and wide ones warned about, as in ``EfaUpdate`` (not for the control,
    which is local).
    """

    config: ModelConfig
    update_sphc: bool = True

    @nn.compact
    def __call__(self, x: Array, chi: Array, positions: Array, batch: Batch) -> tuple[Array, Array]:
        """x: (N, F), χ: (N, dim) the layer's inputs, positions: (N, 3). Returns (Δx, Δχ), their shapes."""
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        layout = DegreeLayout(cfg.degrees)
        L = cfg.efa_max_degree
        L_v = L if self.update_sphc else 0
        num_graphs = batch.graph_mask.shape[0]
        node_mask = jnp.asarray(batch.node_mask)
        sphcs = sphc_by_degree(chi, layout, L)

        v = EquivariantProjection(cfg.efa_v_features, L_v, False, dtype, name="value")(x, sphcs[:L_v])
        v = v * node_mask[:, None, None].astype(dtype)
        if cfg.global_attention == "efa-control":
            z = v
        else:
            check_batch(positions, batch, cfg.efa_max_length)
            grid = lebedev_grid(cfg.efa_grid_size, cfg.efa_max_frequency, cfg.efa_max_length)
            theta = erope_frequencies(cfg.efa_qk_features, cfg.efa_max_frequency, cfg.efa_max_length)
            q = EquivariantProjection(cfg.efa_qk_features, L, True, dtype, name="query")(x, sphcs)
            k = EquivariantProjection(cfg.efa_qk_features, L, True, dtype, name="key")(x, sphcs)
            # as in EfaUpdate: the last graph of a Batch is padding, left out of the segments
            z = efa_linear(q, k, v, positions.astype(dtype), batch.node_graph, max(num_graphs - 1, 1), grid, theta)
        self.sow("intermediates", "attention", z)

        def dense(features: int, name: str, **kwargs) -> nn.Dense:
            return nn.Dense(features, dtype=dtype, param_dtype=dtype, name=name, **kwargs)

        h = dense(cfg.features, "mix")(z[:, 0]) + x
        h = nn.silu(dense(cfg.features, "mlp_0")(h))
        y = dense(cfg.features, "mlp_1", kernel_init=nn.initializers.zeros)(h)
        switch = self.param("switch", nn.initializers.constant(0.5), (), dtype)
        dx = jnp.where(node_mask[:, None], nn.silu(1.0 - switch) * y, 0.0)

        dchi = []
        for l in layout.degrees:
            if 1 <= l <= L_v:
                w = self.param(f"sphc_{l}", nn.initializers.zeros, (cfg.efa_v_features,), dtype)
                dchi.append(z[:, l * l : (l + 1) ** 2] @ w)
            else:
                dchi.append(jnp.zeros((chi.shape[0], 2 * l + 1), dtype))
        dchi = jnp.where(node_mask[:, None], jnp.concatenate(dchi, axis=1), 0.0)
        return dx, dchi.astype(chi.dtype)
