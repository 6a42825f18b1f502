"""The So3krates model assembled from :class:`ModelConfig` (paper Fig. 1b, Fig. 5)."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from so3krates.graph import Batch
from so3krates.model.config import ModelConfig
from so3krates.model.layers import (
    MLP,
    Pairs,
    RadialFilters,
    RadialTable,
    So3kratesLayer,
    filter_edge_count,
    hermite_coefficients,
    init_sphc,
    interpolate_radial_filters,
    segment_sum,
    sphc_neighbourhood_weight,
)
from so3krates.so3 import DegreeLayout, cosine_cutoff, physnet_radial_basis, safe_norm, spherical_harmonics

Array = jax.Array
Filters = tuple[Array, Array]  # one layer's radial filters (feature block, SPHC block), each (P, F)


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
            n_atoms_of_pair = batch.n_atoms[batch.node_graph[batch.pair_i]]

            def nonlocal_fn(chi: Array) -> Array:
                orthonormal = cfg.nonlocal_normalisation == "orthonormal"
                return sphc_neighbourhood_weight(
                    chi, sphc_pairs, n_atoms_of_pair, cfg.nonlocal_kappa, cfg.nonlocal_p, layout, orthonormal
                )

        # eq. 9: element embedding
        x = nn.Embed(cfg.max_atomic_number + 1, cfg.features, param_dtype=dtype, name="embedding")(batch.numbers)
        chi = init_sphc(edges, num_atoms)  # eq. 11
        self.sow("intermediates", "sphc", chi)
        radial_module = RadialFilters(cfg.num_layers, cfg.radial_hidden, cfg.features, dtype, name="radial_filters")

        def radial_filters(pairs: Pairs, count: int) -> list[Filters]:  # of the first ``count`` pairs
            if radial_table is not None:  # inference: the same functions tabulated (O(h⁴) + truncated rank)
                return interpolate_radial_filters(pairs.r[:count], radial_table)
            return radial_module(pairs.rbf[:count])

        # With remat and a table, each layer interpolates its own filters inside its rematerialised region:
        # the (P, F) filters of all layers and their cotangents are never alive at once.
        per_layer_table = cfg.remat and radial_table is not None
        # Paired edges (the second half reverses the first): filters of the first half serve both (eq. 16
        # is symmetric in i and j), half the work of the costliest per-edge part.
        filter_edges = filter_edge_count(batch.edge_i.shape[0], batch.edges_paired)
        edge_radial = None if per_layer_table else radial_filters(edges, filter_edges)
        pair_radial = (
            None if per_layer_table or sphc_pairs is None else radial_filters(sphc_pairs, sphc_pairs.r.shape[0])
        )
        efa_layers = set(range(cfg.num_layers)) if cfg.global_attention == "efa" else set()
        # nn.remat counts self as argument 0: nonlocal_fn (a Python closure, argument 7) must be static.
        layer_class = nn.remat(_LayerFilters, static_argnums=(7,)) if cfg.remat else So3kratesLayer
        for t in range(cfg.num_layers):
            x_in = x
            if per_layer_table:
                edge_filters: Filters | RadialTable = _layer_table(radial_table, t)
                pair_filters: Filters | RadialTable | None = edge_filters if sphc_pairs is not None else None
            else:
                edge_filters = edge_radial[t]
                pair_filters = pair_radial[t] if pair_radial is not None else None
            x, chi = layer_class(
                cfg.features,
                cfg.num_heads,
                layout,
                cfg.spherical_hidden,
                parity_even_only=not cfg.pseudotensor_paths,
                dtype=dtype,
                paired_edges=batch.edges_paired,
                name=f"layer_{t}",
            )(x, chi, edges, edge_filters, sphc_pairs, pair_filters, nonlocal_fn)
            if t in efa_layers:
                # Euclidean fast attention reads the same x as the local layer (they run in parallel).
                from so3krates.model.efa import EfaUpdate

                if positions is None:
                    raise ValueError("global_attention='efa' needs the atomic positions")
                x = x + EfaUpdate(cfg, name=f"efa_{t}")(x_in, positions, batch)
            # SPHCs after each layer, for the equivariance tests and the SPHC figures (Fig. 3).
            self.sow("intermediates", "sphc", chi)

        energy = MLP(cfg.features, 1, dtype, name="output")(x)[:, 0]
        scale = self.variable("normalization", "scale", lambda: jnp.ones(cfg.max_atomic_number + 1, dtype))
        return jnp.where(batch.node_mask, scale.value[batch.numbers] * energy, 0.0)


def _layer_table(table: RadialTable, t: int) -> RadialTable:
    """The radial-filter table of layer t alone: the shared basis, projection of shape (1, 2, M, F)."""
    return table.replace(projection=table.projection[t : t + 1])


class _LayerFilters(So3kratesLayer):
    """A :class:`So3kratesLayer` whose radial filters may come as that layer's interpolation table.

    With ``ModelConfig.remat`` this class is wrapped in ``nn.remat``, and passing the table rather than
    the interpolated (P, F) filter pair puts the interpolation inside the rematerialised region. It adds
    no parameters and no scope of its own, so the parameter tree is that of a plain So3kratesLayer and
    checkpoints work with ``remat`` on or off.
    """

    def __call__(
        self,
        x: Array,
        chi: Array,
        edges: Pairs,
        edge_radial: Filters | RadialTable,
        sphc_pairs: Pairs | None = None,
        pair_radial: Filters | RadialTable | None = None,
        nonlocal_fn: Callable[[Array], Array] | None = None,
    ) -> tuple[Array, Array]:
        if isinstance(edge_radial, RadialTable):
            filter_edges = filter_edge_count(edges.r.shape[0], self.paired_edges)
            edge_radial = interpolate_radial_filters(edges.r[:filter_edges], edge_radial)[0]
        if isinstance(pair_radial, RadialTable):
            pair_radial = interpolate_radial_filters(sphc_pairs.r, pair_radial)[0]
        return super().__call__(x, chi, edges, edge_radial, sphc_pairs, pair_radial, nonlocal_fn)


def interaction_energy(atomic_energies: Array, batch: Batch) -> Array:
    """Σ_i scale[z_i] · MLP(x_i) per structure, shape (G,); zero for padding graphs (the total energy
    without the reference Σ_i shift[z_i] + c, which the host adds in float64)."""
    energy = segment_sum(atomic_energies, batch.node_graph, batch.graph_mask.shape[0])
    return jnp.where(batch.graph_mask, energy, 0.0)


def tabulate_radial_filters(
    params: dict, config: ModelConfig, num_points: int = 1024, rank_tolerance: float | None = None
) -> RadialTable:
    """Tabulate the radial filters of a trained model for :func:`interpolate_radial_filters` at inference.

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
    dtype = jnp.dtype(config.dtype)
    if rank_tolerance is None:
        rank_tolerance = 1e-7 if dtype.itemsize <= 4 else 1e-13
    # In float64 whatever the model's dtype: interpolated slopes are differences of neighbouring values over
    # the spacing h, so float32 rounding of the values (~1e-7 of them) would become ~1e-7/h of the forces
    # (5e-5 relative for a trained float32 model at h = 0.004 Å, worse on finer grids).
    with jax.enable_x64(True):
        module = RadialFilters(config.num_layers, config.radial_hidden, config.features, jnp.float64)
        params64 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), params["radial_filters"])
        grid = jnp.linspace(0.0, config.r_cut, num_points, dtype=jnp.float64)

        def stacked(r: Array) -> Array:  # (num_points, num_layers · 2 · F), layer-major
            rbf = physnet_radial_basis(r, config.r_cut, config.num_radial)
            filters = module.apply({"params": params64}, rbf)
            return jnp.concatenate([f for pair in filters for f in pair], axis=-1)

        values, slopes = jax.jvp(stacked, (grid,), (jnp.ones_like(grid),))
        values, slopes = np.asarray(values, np.float64), np.asarray(slopes, np.float64)
    _, singular, vt = np.linalg.svd(values, full_matrices=False)
    rank = max(1, int(np.sum(singular > rank_tolerance * singular[0])))
    v = vt[:rank].T  # (L·2·F, M), orthonormal columns
    spacing = config.r_cut / (num_points - 1)
    coefficients = hermite_coefficients(spacing, values @ v, slopes @ v)
    projection = v.T.reshape(rank, config.num_layers, 2, config.features).transpose(1, 2, 0, 3)
    return RadialTable(
        spacing=jnp.asarray(spacing, dtype),
        coefficients=jnp.asarray(coefficients, dtype),
        projection=jnp.asarray(projection, dtype),
    )
