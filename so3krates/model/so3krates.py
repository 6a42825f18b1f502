"""The So3krates model assembled from :class:`ModelConfig` (paper Fig. 1b, Fig. 5)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from so3krates.deprecation import moved
from so3krates.graph import Batch
from so3krates.model.config import ModelConfig
from so3krates.model.layers import MLP, Pairs, So3kratesLayer, init_sphc, segment_sum
from so3krates.model.nonlocal_correction import nonlocal_weight_fn
from so3krates.model.radial import (
    RadialFilters,
    RadialTable,
    cosine_cutoff,
    filter_edge_count,
    layer_filters,
    physnet_radial_basis,
)
from so3krates.so3 import DegreeLayout, safe_norm, spherical_harmonics

Array = jax.Array


def pair_geometry(vectors: Array, i: Array, j: Array, mask: Array, config: ModelConfig, layout: DegreeLayout) -> Pairs:
    """Distances, cutoff (eq. 31), radial basis (eq. 30) and spherical harmonics of pair vectors r_ij.

    Masked pairs (padding) get a dummy unit vector so that no 0/0 reaches the gradients.
    """
    dummy = jnp.asarray([config.r_cut * 2.0, 0.0, 0.0], vectors.dtype)
    vectors = jnp.where(mask[:, None], vectors, dummy)
    r = safe_norm(vectors, axis=-1)
    unit = vectors / r[:, None]
    cutoff = jnp.where(mask, cosine_cutoff(r, config.r_cut), 0.0)
    rbf = physnet_radial_basis(r, config.r_cut, config.num_radial) * mask[:, None]
    sph = spherical_harmonics(unit, layout)
    return Pairs(i=i, j=j, mask=mask, r=r, cutoff=cutoff, rbf=rbf, sph=sph)


class So3krates(nn.Module):
    """So3krates: embedding (eq. 9), SPHC initialisation (eq. 11), ``num_layers`` layers, atomic energies.

    ``__call__`` returns the atomic interaction energies scale[z_i] · MLP(x_i) (zero for padding atoms):
    the atomic energies E_i = scale[z_i] · MLP(x_i) + shift[z_i] without the per-element shift. The scale
    lives in the variable collection ``normalization`` (set from the training data, not trained). The
    shifts and the constant c of A.14 are the large part of a total energy (−4,200 eV for ethanol) and a
    float32 sum would round it to 0.5 meV steps, so they are not part of the traced model: the potential
    adds them on the host in float64 (:func:`so3krates.potential.reference_energy`).
    """

    config: ModelConfig

    @nn.compact
    def __call__(
        self,
        batch: Batch,
        edge_vectors: Array,
        pair_vectors: Array | None = None,
        positions: Array | None = None,
        radial_table: RadialTable | None = None,
    ) -> Array:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        layout = DegreeLayout(cfg.degrees)
        num_atoms = batch.numbers.shape[0]

        edges = pair_geometry(edge_vectors, batch.edge_i, batch.edge_j, batch.edge_mask, cfg, layout)
        sphc_pairs = None
        nonlocal_fn = None
        if cfg.nonlocal_correction:
            if pair_vectors is None:
                raise ValueError("the non-local correction needs a batch built with all_pairs=True")
            sphc_pairs = pair_geometry(pair_vectors, batch.pair_i, batch.pair_j, batch.pair_mask, cfg, layout)
            nonlocal_fn = nonlocal_weight_fn(cfg, sphc_pairs, batch, layout)

        # eq. 9: element embedding
        x = nn.Embed(cfg.max_atomic_number + 1, cfg.features, param_dtype=dtype, name="embedding")(batch.numbers)
        chi = init_sphc(edges, num_atoms)  # eq. 11
        self.sow("intermediates", "sphc", chi)
        # Paired edges (the second half reverses the first): filters of the first half serve both (eq. 16
        # is symmetric in i and j), half the work of the costliest per-edge part.
        filter_edges = filter_edge_count(batch.edge_i.shape[0], batch.edges_paired)
        radial = layer_filters(
            RadialFilters(cfg.num_layers, cfg.radial_hidden, cfg.features, dtype, name="radial_filters"),
            radial_table,
            edges.r[:filter_edges],
            edges.rbf[:filter_edges],
            None if sphc_pairs is None else sphc_pairs.r,
            None if sphc_pairs is None else sphc_pairs.rbf,
            per_layer=cfg.remat,  # with a table, each layer interpolates inside its rematerialised region
        )
        efa_layers = self.efa_layers()
        # nn.remat counts self as argument 0: nonlocal_fn (a Python closure, argument 6) must be static.
        layer_class = nn.remat(So3kratesLayer, static_argnums=(6,)) if cfg.remat else So3kratesLayer
        for t in range(cfg.num_layers):
            x_in, chi_in = x, chi
            x, chi = layer_class(
                cfg.features,
                cfg.num_heads,
                layout,
                cfg.spherical_hidden,
                parity_even_only=not cfg.pseudotensor_paths,
                dtype=dtype,
                paired_edges=batch.edges_paired,
                name=f"layer_{t}",
            )(x, chi, edges, radial[t], sphc_pairs, nonlocal_fn)
            if t in efa_layers:
                # Euclidean fast attention reads the same x (and χ) as the local layer: they run in parallel.
                if positions is None:
                    raise ValueError(f"global_attention={cfg.global_attention!r} needs the atomic positions")
                if cfg.global_attention == "efa" and cfg.efa_max_degree == 0:  # issue #7's invariant EFA
                    from so3krates.model.efa import EfaUpdate

                    x = x + EfaUpdate(cfg, name=f"efa_{t}")(x_in, positions, batch)
                else:  # equivariant EFA (issue #18) or the matched local control
                    from so3krates.model.efa_equivariant import EquivariantEfaUpdate

                    update = EquivariantEfaUpdate(cfg, update_sphc=t < cfg.num_layers - 1, name=f"efa_{t}")
                    dx, dchi = update(x_in, chi_in, positions, batch)
                    x, chi = x + dx, chi + dchi
            # SPHCs after each layer, for the equivariance tests and the SPHC figures (Fig. 3).
            self.sow("intermediates", "sphc", chi)

        energy = MLP(cfg.features, 1, dtype, name="output")(x)[:, 0]
        scale = self.variable("normalization", "scale", lambda: jnp.ones(cfg.max_atomic_number + 1, dtype))
        return jnp.where(batch.node_mask, scale.value[batch.numbers] * energy, 0.0)

    def efa_layers(self) -> tuple[int, ...]:
        """The layers with a Euclidean fast attention update (module ``efa_{t}``, or its local control):
        ``config.efa_layers``, all layers when that is None, none without ``global_attention``."""
        cfg = self.config
        if cfg.global_attention is None:
            return ()
        return tuple(range(cfg.num_layers)) if cfg.efa_layers is None else cfg.efa_layers


def interaction_energy(atomic_energies: Array, batch: Batch) -> Array:
    """Σ_i scale[z_i] · MLP(x_i) per structure, shape (G,); zero for padding graphs (the total energy
    without the reference Σ_i shift[z_i] + c, which the host adds in float64)."""
    energy = segment_sum(atomic_energies, batch.node_graph, batch.graph_mask.shape[0])
    return jnp.where(batch.graph_mask, energy, 0.0)


__getattr__ = moved(
    "so3krates.model.so3krates",
    {"tabulate_radial_filters": "so3krates.model.radial"},
)
