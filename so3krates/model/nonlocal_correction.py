"""The non-local correction of the SPHC update (paper eq. 14, A.2): spherical-neighbourhood weights of all
pairs of a structure, measured by the distance of their SPHCs."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from so3krates.graph import Batch
from so3krates.model.config import ModelConfig
from so3krates.model.layers import Pairs, segment_sum
from so3krates.model.radial import polynomial_cutoff
from so3krates.so3 import DegreeLayout, smooth_norm

Array = jax.Array


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


def nonlocal_weight_fn(
    config: ModelConfig, pairs: Pairs, batch: Batch, layout: DegreeLayout
) -> Callable[[Array], Array]:
    """χ ↦ φ_χcut(χ̃_ij) for the all-pairs list ``pairs`` of ``batch``, with the config's κ, p and
    normalisation (:func:`sphc_neighbourhood_weight`); the layers call it on their SPHCs."""
    n_atoms_of_pair = batch.n_atoms[batch.node_graph[batch.pair_i]]
    orthonormal = config.nonlocal_normalization == "orthonormal"

    def weight(chi: Array) -> Array:
        return sphc_neighbourhood_weight(
            chi, pairs, n_atoms_of_pair, config.nonlocal_kappa, config.nonlocal_p, layout, orthonormal
        )

    return weight
