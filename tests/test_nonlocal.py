"""The non-local geometric correction (paper eq. 14, A.2, eq. 29): symmetries, batching, gradients, reach.

The correction adds, in every SPHC update, attention over all pairs of a structure weighted by the
spherical neighbourhood φ_χcut(χ̃_ij) (χ̃ = row-wise softmax of SPHC distances, χ_cut = κ / n_atoms).
Besides the symmetries the local model has, it must (i) keep the softmax and κ / n_atoms per structure,
so that a batch equals its structures evaluated alone, and (ii) really couple atoms beyond r_cut.
"""

from __future__ import annotations

import dataclasses

import e3x
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_helpers import evaluate, random_molecule

from so3krates.graph import Graph, collate, make_graph, pad_sizes_for
from so3krates.model.config import ModelConfig
from so3krates.model.layers import Pairs
from so3krates.model.nonlocal_correction import sphc_neighbourhood_weight
from so3krates.potential import Potential, edge_vectors, pair_vectors
from so3krates.so3 import SMOOTH_NORM_EPSILON, DegreeLayout, wigner_d

NONLOCAL = ModelConfig(
    features=24, num_layers=2, degrees=(1, 2, 3), num_heads=4, r_cut=3.0, dtype="float64", nonlocal_correction=True
)


def nonlocal_model(config: ModelConfig = NONLOCAL, seed: int = 0) -> tuple[Potential, dict]:
    """Random parameters (from an all-pairs batch) with non-trivial per-element normalisation."""
    potential = Potential(config)
    rng = np.random.default_rng(seed)
    pos, z = random_molecule(rng, 5)
    batch = collate([make_graph(pos, z, config.r_cut)], all_pairs=config.nonlocal_correction)
    variables = potential.init(jax.random.PRNGKey(seed), batch)
    n = config.max_atomic_number + 1
    variables["normalization"] = {
        "scale": np.asarray(rng.uniform(0.5, 2.0, n), config.dtype),
        "shift": np.asarray(rng.normal(size=n), config.dtype),
        "energy_offset": np.asarray(0.3, config.dtype),
    }
    return potential, variables


def run(potential: Potential, variables: dict, graphs: list[Graph], **kwargs) -> dict[str, np.ndarray]:
    return evaluate(potential, variables, graphs, all_pairs=potential.config.nonlocal_correction, **kwargs)


def random_rotation(seed: int) -> np.ndarray:
    return np.asarray(e3x.so3.random_rotation(jax.random.PRNGKey(seed)), dtype=np.float64)


def sphcs(potential: Potential, variables: dict, graph: Graph) -> np.ndarray:
    """SPHCs of every layer (initial first), (num_layers + 1, n_atoms, dim)."""
    batch = collate([graph], all_pairs=True)
    pos = jnp.asarray(batch.positions)
    _, state = potential.module.apply(
        variables,
        batch,
        edge_vectors(pos, jnp.asarray(batch.cell), batch),
        pair_vectors(pos, batch),
        pos,
        mutable=["intermediates"],
    )
    return np.stack(state["intermediates"]["sphc"])[:, : graph.n_atoms]


def two_fragments(rng: np.random.Generator, separation: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two random 4-atom fragments whose closest atoms are farther apart than ``separation``.

    Returns positions, atomic numbers and the boolean mask of the second fragment.
    """
    pos_a, z_a = random_molecule(rng, 4, box=2.0)
    pos_b, z_b = random_molecule(rng, 4, box=2.0)
    pos_b = pos_b + np.array([0.0, 0.0, separation + 2.0 * np.sqrt(3) * 2.0])
    gap = np.min(np.linalg.norm(pos_a[:, None] - pos_b[None], axis=-1))
    assert gap > separation
    return np.vstack([pos_a, pos_b]), np.concatenate([z_a, z_b]), np.arange(8) >= 4


# -- symmetries ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0])
def test_rotation_invariance_and_force_equivariance(seed):
    rng = np.random.default_rng(seed)
    potential, variables = nonlocal_model(seed=seed)
    pos, z = random_molecule(rng, 9)
    rot = random_rotation(seed + 20)
    a = run(potential, variables, [make_graph(pos, z, NONLOCAL.r_cut)])
    b = run(potential, variables, [make_graph(pos @ rot, z, NONLOCAL.r_cut)])
    assert abs(a["energy"][0]) > 1e-3
    np.testing.assert_allclose(b["energy"], a["energy"], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(b["forces"], a["forces"] @ rot, rtol=1e-8, atol=1e-10)


def test_sphcs_equivariant_per_degree_with_wigner_d():
    potential, variables = nonlocal_model()
    rng = np.random.default_rng(3)
    pos, z = random_molecule(rng, 8)
    rot = random_rotation(7)
    layout = DegreeLayout(NONLOCAL.degrees)
    d = np.asarray(wigner_d(rot, layout))
    chi = sphcs(potential, variables, make_graph(pos, z, NONLOCAL.r_cut))
    chi_rot = sphcs(potential, variables, make_graph(pos @ rot, z, NONLOCAL.r_cut))
    assert np.abs(chi[-1]).max() > 1e-2
    for l in NONLOCAL.degrees:
        s = layout.slice(l)
        np.testing.assert_allclose(chi_rot[:, :, s], chi[:, :, s] @ d[s, s], atol=1e-9)


def test_translation_and_permutation_invariance():
    rng = np.random.default_rng(4)
    potential, variables = nonlocal_model()
    pos, z = random_molecule(rng, 9)
    perm = rng.permutation(9)
    a = run(potential, variables, [make_graph(pos, z, NONLOCAL.r_cut)])
    b = run(potential, variables, [make_graph(pos + np.array([13.7, -4.2, 100.0]), z, NONLOCAL.r_cut)])
    c = run(potential, variables, [make_graph(pos[perm], z[perm], NONLOCAL.r_cut)])
    np.testing.assert_allclose(b["energy"], a["energy"], rtol=1e-10)
    np.testing.assert_allclose(b["forces"], a["forces"], atol=1e-9)
    np.testing.assert_allclose(c["energy"], a["energy"], rtol=1e-10)
    np.testing.assert_allclose(c["forces"], a["forces"][perm], atol=1e-10)


# -- batching --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_batch_composition_and_padding_invariance():
    """Structures of 3, 6 and 11 atoms together (in two orders, with extra padding) equal each alone:
    the softmax runs within each structure's rows and χ_cut = κ / n_atoms uses its own size."""
    rng = np.random.default_rng(5)
    potential, variables = nonlocal_model()
    graphs = [make_graph(*random_molecule(rng, n), NONLOCAL.r_cut) for n in (3, 6, 11)]
    alone = [run(potential, variables, [g]) for g in graphs]
    big = pad_sizes_for(graphs, all_pairs=True)
    big = dataclasses.replace(big, n_atoms=big.n_atoms + 13, n_edges=big.n_edges + 40, n_pairs=big.n_pairs + 97)
    for order, sizes in (([0, 1, 2], None), ([2, 0, 1], big)):
        together = run(potential, variables, [graphs[k] for k in order], sizes=sizes)
        start = 0
        for slot, k in enumerate(order):
            n = graphs[k].n_atoms
            np.testing.assert_allclose(together["energy"][slot], alone[k]["energy"][0], rtol=1e-11, atol=1e-11)
            np.testing.assert_allclose(together["forces"][start : start + n], alone[k]["forces"], atol=1e-10)
            start += n


@pytest.mark.slow
def test_parameter_gradients_finite_with_padding():
    """Training differentiates forces with respect to the weights; padding pairs (whose softmax rows are
    empty) must not leak NaN into those gradients."""
    rng = np.random.default_rng(6)
    potential, variables = nonlocal_model()
    graphs = [make_graph(*random_molecule(rng, n), NONLOCAL.r_cut) for n in (4, 7)]
    sizes = pad_sizes_for(graphs, all_pairs=True)
    batch = collate(graphs, dataclasses.replace(sizes, n_pairs=sizes.n_pairs + 30), all_pairs=True)

    def loss(params):
        out = potential.predict({**variables, "params": params}, batch)
        return jnp.sum(out["forces"] ** 2) + jnp.sum(out["interaction_energy"] ** 2)

    grads = jax.grad(loss)(variables["params"])
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0


# -- gradients -------------------------------------------------------------------------------------------
def test_forces_match_finite_differences():
    rng = np.random.default_rng(7)
    potential, variables = nonlocal_model()
    pos, z = random_molecule(rng, 6)
    forces = run(potential, variables, [make_graph(pos, z, NONLOCAL.r_cut)])["forces"]
    h = 1e-5
    for atom, axis in [(0, 0), (5, 2)]:
        plus, minus = pos.copy(), pos.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        e_plus = run(potential, variables, [make_graph(plus, z, NONLOCAL.r_cut)])["energy"][0]
        e_minus = run(potential, variables, [make_graph(minus, z, NONLOCAL.r_cut)])["energy"][0]
        np.testing.assert_allclose(forces[atom, axis], -(e_plus - e_minus) / (2 * h), rtol=1e-6, atol=1e-8)


# -- reach beyond r_cut ----------------------------------------------------------------------------------
def local_twin(config: ModelConfig) -> ModelConfig:
    return dataclasses.replace(config, nonlocal_correction=False)


def test_local_limit_same_weights():
    """With κ → 0 the spherical neighbourhood is empty and the all-pairs SPHC attention (weighted by
    φ_rcut, zero beyond r_cut) must reproduce the local model with the very same weights."""
    rng = np.random.default_rng(8)
    tiny = dataclasses.replace(NONLOCAL, nonlocal_kappa=1e-9)
    potential, variables = nonlocal_model(tiny)
    local = Potential(local_twin(tiny))
    pos, z = random_molecule(rng, 9)
    graph = make_graph(pos, z, tiny.r_cut)
    a = run(potential, variables, [graph])
    b = evaluate(local, variables, [graph])
    np.testing.assert_allclose(a["energy"], b["energy"], rtol=1e-12)
    np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-11)
    # ... while with κ = 1 the same weights give a different energy: the correction is active.
    c = run(Potential(NONLOCAL), variables, [graph])
    assert abs(c["energy"][0] - b["energy"][0]) > 1e-6


@pytest.mark.parametrize("seed", [0])
def test_couples_fragments_beyond_cutoff(seed):
    """Two fragments farther apart than r_cut; rotate the second about its own centre. The local model
    sees two isolated, rotation-invariant fragments: energy unchanged, forces on the first fragment
    unchanged, and the energy is the sum of the fragments' energies. The non-local model's energy and
    forces on the first fragment change: it couples atoms beyond r_cut."""
    rng = np.random.default_rng(seed + 10)
    config = dataclasses.replace(NONLOCAL, nonlocal_kappa=2.0)
    potential, variables = nonlocal_model(config, seed=seed)
    local = Potential(local_twin(config))
    pos, z, second = two_fragments(rng, separation=2.0 * config.r_cut)
    centre = pos[second].mean(axis=0)
    rotated = pos.copy()
    rotated[second] = (pos[second] - centre) @ random_rotation(seed + 30) + centre
    graphs = [make_graph(p, z, config.r_cut) for p in (pos, rotated)]

    loc = [evaluate(local, variables, [g]) for g in graphs]
    np.testing.assert_allclose(loc[1]["energy"], loc[0]["energy"], rtol=1e-11)
    np.testing.assert_allclose(loc[1]["forces"][:4], loc[0]["forces"][:4], atol=1e-11)
    parts = [evaluate(local, variables, [make_graph(pos[m], z[m], config.r_cut)]) for m in (~second, second)]
    offset = float(variables["normalization"]["energy_offset"])
    np.testing.assert_allclose(loc[0]["energy"][0], parts[0]["energy"][0] + parts[1]["energy"][0] - offset, rtol=1e-11)

    nl = [run(potential, variables, [g]) for g in graphs]
    # At random initialisation the coupling is small (a few 1e-6 eV here) but five orders of magnitude
    # above the local model's round-off (checked to 1e-11 above).
    assert abs(nl[1]["energy"][0] - nl[0]["energy"][0]) > 1e-8
    assert np.abs(nl[1]["forces"][:4] - nl[0]["forces"][:4]).max() > 1e-8


def cumulene_positions(n_carbons: int, torsion_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Ideal [n]cumulene along z (C=C 1.31 Å, C–H 1.09 Å, H–C–H 117°), last CH2 twisted by the torsion."""
    z = (np.arange(n_carbons) - (n_carbons - 1) / 2) * 1.31
    carbons = np.stack([np.zeros(n_carbons), np.zeros(n_carbons), z], axis=1)
    half = np.radians(58.5)
    hydrogens = []
    for end, outward, angle in ((0, -1.0, 0.0), (n_carbons - 1, 1.0, np.radians(torsion_deg))):
        for side in (1.0, -1.0):
            offset = 1.09 * np.array([side * np.sin(half) * np.cos(angle), side * np.sin(half) * np.sin(angle), 0.0])
            hydrogens.append(carbons[end] + offset + np.array([0.0, 0.0, outward * 1.09 * np.cos(half)]))
    return np.vstack([carbons, hydrogens]), np.array([6] * n_carbons + [1] * 4)


@pytest.mark.parametrize("n_carbons", [3])
def test_cumulene_torsion_invisible_to_local_lmax1(n_carbons):
    """The paper's Fig. 2 setting (r_cut 2.5 Å, degrees (1,)): the two CH2 rotors never share a
    neighbourhood, and by the C2 symmetry about the chain axis every carbon SPHC stays on the axis, so
    no local invariant can depend on the torsion: the local energy is exactly flat (any weights), even
    for allene. The non-local correction couples the rotors' hydrogens in SPHC space and sees it."""
    config = ModelConfig(
        features=16, num_layers=4, degrees=(1,), num_heads=4, r_cut=2.5, dtype="float64", nonlocal_correction=True
    )
    potential, variables = nonlocal_model(dataclasses.replace(config, nonlocal_kappa=2.0), seed=3)
    local = Potential(local_twin(config))
    angles = [0.0, 50.0, 90.0, 150.0]
    graphs = [make_graph(*cumulene_positions(n_carbons, a), config.r_cut) for a in angles]
    e_local = np.array([evaluate(local, variables, [g])["energy"][0] for g in graphs])
    e_nonlocal = np.array([run(potential, variables, [g])["energy"][0] for g in graphs])
    assert np.ptp(e_local) < 1e-10 * max(1.0, abs(e_local[0]))
    assert np.ptp(e_nonlocal) > 1e-8


# -- the spherical neighbourhood itself ------------------------------------------------------------------
def hand_neighbourhood(chi: np.ndarray, kappa: float, p: int) -> np.ndarray:
    """φ_χcut(χ̃_ij) for one structure written out in numpy: SPHC distances (degrees (1, 2), rescaled from
    Racah's to the paper's orthonormal normalisation, smooth norm √(d² + ε²) − ε), softmax over j ≠ i in
    each row, x = χ̃_ij / (κ / n), eq. 29 for x < 1 and 0 beyond."""
    n = len(chi)
    scale = np.array([np.sqrt(3 / (4 * np.pi))] * 3 + [np.sqrt(5 / (4 * np.pi))] * 5)
    plain = np.linalg.norm((chi[:, None] - chi[None]) * scale, axis=-1)
    d = np.sqrt(plain**2 + SMOOTH_NORM_EPSILON**2) - SMOOTH_NORM_EPSILON
    out = np.zeros((n, n))
    for i in range(n):
        others = [j for j in range(n) if j != i]
        e = np.exp(d[i, others])
        soft = e / e.sum()
        x = soft / (kappa / n)
        phi = 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
        out[i, others] = np.where(x < 1, phi, 0.0)
    return out


@pytest.mark.parametrize("kappa,p", [(1.0, 6), (2.5, 4)])
def test_neighbourhood_weight_matches_hand_computation(kappa, p):
    rng = np.random.default_rng(9)
    sizes = [5, 3, 7]
    chis = [rng.normal(scale=0.6, size=(n, 8)) for n in sizes]  # degrees (1, 2)
    i_list, j_list, n_list = [], [], []
    start = 0
    for n in sizes:
        i, j = np.nonzero(~np.eye(n, dtype=bool))
        i_list.append(i + start)
        j_list.append(j + start)
        n_list.append(np.full(len(i), n))
        start += n
    n_pad_atoms, n_pad_pairs = 2, 11  # padding atoms and pairs (pairs on the last padding atom, masked)
    pad_atom = start + n_pad_atoms - 1
    i = np.concatenate([*i_list, np.full(n_pad_pairs, pad_atom)])
    j = np.concatenate([*j_list, np.full(n_pad_pairs, pad_atom)])
    n_of_pair = np.concatenate([*n_list, np.zeros(n_pad_pairs, int)])
    mask = np.arange(len(i)) < len(i) - n_pad_pairs
    chi = np.vstack([*chis, np.zeros((n_pad_atoms, 8))])
    zeros = jnp.zeros(len(i))
    pairs = Pairs(
        i=jnp.asarray(i), j=jnp.asarray(j), mask=jnp.asarray(mask), r=zeros, cutoff=zeros, rbf=zeros, sph=zeros
    )
    weights = np.asarray(
        sphc_neighbourhood_weight(jnp.asarray(chi), pairs, jnp.asarray(n_of_pair), kappa, p, DegreeLayout((1, 2)))
    )

    assert np.all(weights[~mask] == 0)
    start = 0
    inside = 0
    for n, c in zip(sizes, chis, strict=True):
        expected = hand_neighbourhood(c, kappa, p)
        sel = (i >= start) & (i < start + n) & mask
        got = np.zeros((n, n))
        got[i[sel] - start, j[sel] - start] = weights[sel]
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
        inside += int(np.sum((expected > 0) & (expected < 1)))
        start += n
    assert inside > 0  # some weights strictly between 0 and 1: the polynomial itself is tested
    assert np.all((weights >= 0) & (weights <= 1))


def test_sphc_distances_are_in_the_papers_normalisation():
    """eq. 14 sees SPHC distances of orthonormal spherical harmonics (the paper's, its authors'): the
    eq. 11 SPHCs of a random molecule recomputed independently with scipy's complex orthonormal Y_lm
    (distances do not depend on the unitary change to real harmonics) give the same distances as
    :func:`sphc_distances` on the model's e3x SPHCs, up to the smooth norm's ε."""
    from scipy.special import sph_harm_y

    from so3krates.model.layers import init_sphc
    from so3krates.model.nonlocal_correction import sphc_distances
    from so3krates.model.so3krates import pair_geometry

    layout = DegreeLayout((1, 2, 3))
    config = ModelConfig(features=24, num_layers=1, degrees=layout.degrees, r_cut=3.0, dtype="float64")
    pos, z = random_molecule(np.random.default_rng(4), 7, box=3.0)
    graph = make_graph(pos, z, config.r_cut)
    vectors = pos[graph.edge_j] - pos[graph.edge_i]  # a molecule: no cell shifts
    edges = pair_geometry(
        jnp.asarray(vectors), jnp.asarray(graph.edge_i), jnp.asarray(graph.edge_j),
        jnp.ones(len(graph.edge_i), bool), config, layout,
    )  # fmt: skip
    chi = init_sphc(edges, len(z))
    i, j = np.nonzero(~np.eye(len(z), dtype=bool))
    ours = np.asarray(sphc_distances(chi[i], chi[j], layout))

    # eq. 11 by hand: χ_i^(l) = Σ_j φ(r_ij) Y_lm(r̂_ij) / C_i (C_i guarded below 1 as the model does)
    r = np.linalg.norm(vectors, axis=1)
    phi = np.where(r < config.r_cut, 0.5 * (np.cos(np.pi * r / config.r_cut) + 1), 0.0)
    polar, azimuth = np.arccos(vectors[:, 2] / r), np.arctan2(vectors[:, 1], vectors[:, 0])
    c = np.bincount(graph.edge_i, phi, len(z))
    c = np.where(c >= 1, c, 0.5 + 0.5 * c**2)
    hand = []
    for l in layout.degrees:
        y = np.stack([sph_harm_y(l, m, polar, azimuth) for m in range(-l, l + 1)], axis=1)
        block = np.zeros((len(z), 2 * l + 1), complex)
        np.add.at(block, graph.edge_i, phi[:, None] * y)
        hand.append(block / c[:, None])
    plain = np.sqrt(sum(np.sum(np.abs(b[j] - b[i]) ** 2, axis=1) for b in hand))
    expected = np.sqrt(plain**2 + SMOOTH_NORM_EPSILON**2) - SMOOTH_NORM_EPSILON
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-14)
    assert plain.max() > 0.1  # the molecule is not degenerate


def test_racah_normalisation_option_measures_in_e3x_units():
    """``nonlocal_normalization="racah"`` (kept for comparisons): the distances of degree l are
    √(4π/(2l+1)) times the orthonormal ones; anything else is refused."""
    from so3krates.model.nonlocal_correction import sphc_distances

    rng = np.random.default_rng(2)
    chi_i, chi_j = jnp.asarray(rng.normal(size=(6, 5))), jnp.asarray(rng.normal(size=(6, 5)))  # degree 2 only
    layout = DegreeLayout((2,))

    def plain(d):  # undo the smooth norm
        return np.sqrt((np.asarray(d) + SMOOTH_NORM_EPSILON) ** 2 - SMOOTH_NORM_EPSILON**2)

    racah = plain(sphc_distances(chi_i, chi_j, layout, orthonormal=False))
    orthonormal = plain(sphc_distances(chi_i, chi_j, layout))
    np.testing.assert_allclose(racah, orthonormal * np.sqrt(4 * np.pi / 5), rtol=1e-12)
    with pytest.raises(ValueError, match="nonlocal_normalization"):
        ModelConfig(nonlocal_normalization="schmidt")
