"""Euclidean fast attention: O(N) algorithm against the exact O(N²) kernel, symmetries, padding and
batching, the sinc probe, the safe-frequency rule, periodic input, and forces of a model using it."""

from __future__ import annotations

import dataclasses
import math
import warnings

import e3x
import jax
import numpy as np
import pytest
from model_helpers import (
    SMALL,
    assert_forces_match_differences_and_rotate,
    assert_padding_and_batch_change_nothing,
    cluster,
    evaluate,
    random_molecule,
    random_rotation,
)

from so3krates.graph import PadSizes, collate, make_graph
from so3krates.model.config import ModelConfig
from so3krates.model.efa import efa_dense_reference, efa_linear, erope_frequencies, erope_rotate
from so3krates.model.lebedev import (
    LEBEDEV_SAFE_FREQUENCY,
    LEBEDEV_SIZES,
    LebedevGrid,
    check_grid,
    lebedev_grid,
    safe_frequency,
)
from so3krates.potential import Potential

R_MAX = 15.0
GRID = lebedev_grid(50, math.pi, R_MAX)
THETA = erope_frequencies(16, math.pi, R_MAX)


def random_qkv(rng: np.random.Generator, n: int, f_qk: int = 16, f_v: int = 6):
    return rng.normal(size=(n, f_qk)), rng.normal(size=(n, f_qk)), rng.normal(size=(n, f_v))


def batch_of_graphs(rng: np.random.Generator, sizes=(7, 12, 4), n_pad: int = 3):
    """Atoms of several graphs, then ``n_pad`` padding atoms whose graph index (= number of graphs) is
    outside the segments, as EfaUpdate passes them."""
    positions = np.concatenate([cluster(rng, n) for n in sizes] + [np.zeros((n_pad, 3))])
    node_graph = np.concatenate([np.full(n, g) for g, n in enumerate(sizes)] + [np.full(n_pad, len(sizes))])
    return positions, node_graph


# -- the algorithm ---------------------------------------------------------------------------------------------


def test_linear_matches_dense_reference_on_several_graphs_with_padding():
    rng = np.random.default_rng(0)
    positions, node_graph = batch_of_graphs(rng)
    q, k, v = random_qkv(rng, len(positions))
    fast = np.asarray(efa_linear(q, k, v, positions, node_graph, 3, GRID, THETA))
    exact = np.asarray(efa_dense_reference(q, k, v, positions, node_graph, 3, THETA))
    assert np.abs(exact).max() > 1.0
    np.testing.assert_allclose(fast, exact, atol=1e-8 * np.abs(exact).max(), rtol=0)
    np.testing.assert_array_equal(fast[-3:], 0.0)  # padding atoms get nothing
    # slots (parity, l, m) besides the features: the same kernel, summed over the slots
    q3, k3 = rng.normal(size=(2, len(positions), 2, 4, 8))
    v3 = rng.normal(size=(len(positions), 2, 4, 3))
    theta8 = erope_frequencies(8, math.pi, R_MAX)
    fast = np.asarray(efa_linear(q3, k3, v3, positions, node_graph, 3, GRID, theta8))
    exact = np.asarray(efa_dense_reference(q3, k3, v3, positions, node_graph, 3, theta8))
    assert fast.shape == v3.shape
    np.testing.assert_allclose(fast, exact, atol=1e-8 * np.abs(exact).max(), rtol=0)


def test_erope_rotation_pairs_and_frequencies():
    theta = erope_frequencies(8, 2.0, 4.0)
    np.testing.assert_allclose(theta, [0.0, 1 / 6, 1 / 3, 0.5])  # (b/r_max)·k/(K−1), θ_0 = 0
    np.testing.assert_allclose(erope_frequencies(2, 2.0, 4.0), [0.5])
    with pytest.raises(ValueError, match="even"):
        erope_frequencies(7, 2.0, 4.0)
    x = np.arange(1.0, 9.0)[None]
    u = np.array([[0.0, 0.0, 1.0]])
    out = np.asarray(erope_rotate(x, np.array([[0.0, 0.0, 3.0]]), u, theta))[0, 0]
    phi = 3.0 * theta
    a, b = x[0, 0::2], x[0, 1::2]  # interleaved neighbours (2k, 2k+1), not split halves
    np.testing.assert_allclose(out[0::2], a * np.cos(phi) - b * np.sin(phi))
    np.testing.assert_allclose(out[1::2], a * np.sin(phi) + b * np.cos(phi))


def test_sinc_probe():
    """q = (√2, 0), k = (1, 0), v = 1 on two atoms: y = 1 + j₀(θ r), θ = b_max / r_max."""
    theta = erope_frequencies(2, math.pi, R_MAX)
    q = np.tile([[math.sqrt(2.0), 0.0]], (2, 1))
    k = np.tile([[1.0, 0.0]], (2, 1))
    v = np.ones((2, 1))
    for r in (0.7, 4.0, 9.5, 15.0):
        positions = np.array([[0.0, 0.0, 0.0], [r, 0.3 * r, -0.2 * r]])
        d = np.linalg.norm(positions[1])
        expected = 1.0 + np.sin(theta[0] * d) / (theta[0] * d)
        y = np.asarray(efa_linear(q, k, v, positions, np.zeros(2, int), 1, GRID, theta))
        np.testing.assert_allclose(y[:, 0], expected, atol=2e-6)  # quadrature accuracy within the rule
        exact = np.asarray(efa_dense_reference(q, k, v, positions, np.zeros(2, int), 1, theta))
        np.testing.assert_allclose(exact[:, 0], expected, rtol=1e-13)


def test_translation_and_permutation_invariance():
    rng = np.random.default_rng(1)
    positions, node_graph = batch_of_graphs(rng)
    q, k, v = random_qkv(rng, len(positions))
    y = np.asarray(efa_linear(q, k, v, positions, node_graph, 3, GRID, THETA))
    shifted = positions + rng.normal(size=3) * 1000.0
    y_shift = np.asarray(efa_linear(q, k, v, shifted, node_graph, 3, GRID, THETA))
    np.testing.assert_allclose(y_shift, y, atol=1e-11 * np.abs(y).max(), rtol=0)
    perm = rng.permutation(len(positions))  # graphs interleaved: no ordering assumption
    y_perm = np.asarray(efa_linear(q[perm], k[perm], v[perm], positions[perm], node_graph[perm], 3, GRID, THETA))
    np.testing.assert_allclose(y_perm, y[perm], atol=1e-12 * np.abs(y).max(), rtol=0)
    # inversion r → −r: exact on the symmetric Lebedev grids
    y_inv = np.asarray(efa_linear(q, k, v, -positions, node_graph, 3, GRID, THETA))
    np.testing.assert_allclose(y_inv, y, atol=1e-12 * np.abs(y).max(), rtol=0)


def test_rotation_invariance_to_quadrature_accuracy_and_small_grid_fails():
    rng = np.random.default_rng(2)
    n = 16
    positions = cluster(rng, n)
    assert np.linalg.norm(positions[:, None] - positions[None], axis=-1).max() < R_MAX
    q, k, v = random_qkv(rng, n)
    rot = random_rotation(rng)
    one = np.zeros(n, int)
    y = np.asarray(efa_linear(q, k, v, positions, one, 1, GRID, THETA))
    y_rot = np.asarray(efa_linear(q, k, v, positions @ rot.T, one, 1, GRID, THETA))
    # M = 50, b = π, r ≤ r_max: each cos term integrates to 1e-5 of sinc; measured ~1e-8 relative here
    np.testing.assert_allclose(y_rot, y, atol=1e-6 * np.abs(y).max(), rtol=0)
    # l = 1 slots: q, k, v Cartesian vectors per feature; κ stays invariant, y rotates like v
    qv, kv, vv = rng.normal(size=(3, n, 3, 8))
    theta8 = erope_frequencies(8, math.pi, R_MAX)
    y = np.asarray(efa_linear(qv, kv, vv, positions, one, 1, GRID, theta8))
    rot3 = lambda a: np.einsum("ij,njf->nif", rot, a)  # noqa: E731
    y_rot = np.asarray(efa_linear(rot3(qv), rot3(kv), rot3(vv), positions @ rot.T, one, 1, GRID, theta8))
    np.testing.assert_allclose(y_rot, rot3(y), atol=1e-6 * np.abs(y).max(), rtol=0)
    # negative control: the 6-point grid cannot integrate b = π (the rule would refuse it)
    u6, w6 = e3x.so3.lebedev_quadrature(num=6)
    small = LebedevGrid(6, np.asarray(u6), np.asarray(w6), math.pi, R_MAX, safe_frequency(6))
    y6 = np.asarray(efa_linear(q, k, v, positions, one, 1, small, THETA))
    y6_rot = np.asarray(efa_linear(q, k, v, positions @ rot.T, one, 1, small, THETA))
    assert np.abs(y6_rot - y6).max() > 1e-3 * np.abs(y6).max()
    with pytest.raises(ValueError, match="cannot integrate"):
        lebedev_grid(6, math.pi, R_MAX)


def test_batching_and_padding_change_nothing():
    rng = np.random.default_rng(3)
    positions, node_graph = batch_of_graphs(rng, sizes=(5, 9, 6), n_pad=4)
    q, k, v = random_qkv(rng, len(positions))
    together = np.asarray(efa_linear(q, k, v, positions, node_graph, 3, GRID, THETA))
    start = 0
    for n in (5, 9, 6):
        part = slice(start, start + n)
        alone = np.asarray(efa_linear(q[part], k[part], v[part], positions[part], np.zeros(n, int), 1, GRID, THETA))
        np.testing.assert_allclose(together[part], alone, atol=1e-12 * np.abs(alone).max(), rtol=0)
        start += n
    # extra (empty) graphs and padding atoms anywhere, with arbitrary features and positions
    more = np.asarray(efa_linear(q, k, v, positions + 0.0, np.where(node_graph == 3, 7, node_graph), 8, GRID, THETA))
    np.testing.assert_allclose(more[:20], together[:20], atol=1e-12 * np.abs(together).max(), rtol=0)


# -- the grid rule ----------------------------------------------------------------------------------------------


def test_safe_frequency_table_entries_rederived():
    """0.95·T(M) integrates cos(b u·n) to 1e-5 of sinc(b); 1.1·T(M) does not (random directions n)."""
    rng = np.random.default_rng(4)
    n = rng.normal(size=(200, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    for m in (50, 194):
        u, w = (np.asarray(a) for a in e3x.so3.lebedev_quadrature(num=m))
        assert len(w) == m and abs(w.sum() - 1) < 1e-12
        for factor, ok in ((0.95, True), (1.1, False)):
            b = factor * math.pi * LEBEDEV_SAFE_FREQUENCY[m]
            error = np.abs(np.cos(b * (n @ u.T)) @ w - np.sinc(b / np.pi)).max()
            assert (error <= 1e-5) == ok, (m, factor, error)


def test_grid_checks_and_config_validation():
    assert check_grid(None, math.pi) == 50  # smallest safe grid for b = π (0.95·1.28π)
    assert check_grid(None, 4 * math.pi) == 230
    grid = lebedev_grid(60, math.pi, R_MAX)  # rounds down like e3x, and says so
    assert grid.num_points == 50 and grid.directions.shape == (50, 3)
    with pytest.raises(ValueError, match=r"cannot integrate.*smallest grid safe for it has 86 points"):
        lebedev_grid(50, 2 * math.pi, R_MAX)
    with pytest.raises(ValueError, match="largest Lebedev grid"):
        check_grid(None, 40 * math.pi)
    with pytest.raises(ValueError, match="positive"):
        lebedev_grid(50, math.pi, 0.0)
    assert LEBEDEV_SIZES[0] == 6 and LEBEDEV_SIZES[-1] == 5810
    efa = dict(global_attention="efa", features=24, num_layers=2)
    ModelConfig(**efa)  # the defaults are valid
    with pytest.raises(ValueError, match="not a Lebedev grid size"):
        ModelConfig(**efa, efa_grid_size=60)
    with pytest.raises(ValueError, match="cannot integrate"):
        ModelConfig(**efa, efa_max_frequency=2 * math.pi)
    with pytest.raises(ValueError, match="even"):
        ModelConfig(**efa, efa_qk_features=15)
    with pytest.raises(ValueError, match="outside"):
        ModelConfig(**efa, efa_layers=[2])
    config = ModelConfig.from_dict({**efa, "efa_layers": [1]})
    assert config.efa_layers == (1,) and ModelConfig.from_dict(config.to_dict()) == config
    ModelConfig(efa_grid_size=60)  # the grid is only checked when EFA is switched on


# -- inside the model -------------------------------------------------------------------------------------------

EFA_CONFIG = dataclasses.replace(SMALL, global_attention="efa", efa_qk_features=8, efa_v_features=8)
SINGLE = PadSizes(n_atoms=8, n_edges=64, n_graphs=2)  # one padded shape for every single structure: one compile


@pytest.fixture(scope="module")
def efa_model():
    """A Potential with EFA in both layers and random (non-zero) EFA output weights."""
    potential = Potential(EFA_CONFIG)
    rng = np.random.default_rng(5)
    pos, z = random_molecule(rng, 5)
    variables = potential.init(jax.random.PRNGKey(5), collate([make_graph(pos, z, EFA_CONFIG.r_cut)]))
    params = jax.tree_util.tree_map(np.asarray, variables["params"])
    for t in range(EFA_CONFIG.num_layers):
        block = params[f"efa_{t}"]
        assert not block["mlp_1"]["kernel"].any()  # zero-initialised: a new model starts as the local one
        block["mlp_1"]["kernel"] = rng.normal(0.0, 0.5, block["mlp_1"]["kernel"].shape)
    return potential, {**variables, "params": params}


def test_model_forces_match_finite_differences_and_energy_is_rotation_invariant(efa_model):
    potential, variables = efa_model
    rng = np.random.default_rng(6)
    pos, z = random_molecule(rng, 5, box=6.0)  # also pairs beyond r_cut: only EFA couples them
    graph = make_graph(pos, z, EFA_CONFIG.r_cut)
    out = evaluate(potential, variables, [graph], sizes=SINGLE)
    # zero EFA output weights give the local model: EFA must change the forces (the total energy alone
    # can change by chance by almost nothing: 1e-5 eV here for atomic energies that change by 0.01–0.07 eV)
    local = jax.tree_util.tree_map(np.copy, variables)
    for t in range(EFA_CONFIG.num_layers):
        local["params"][f"efa_{t}"]["mlp_1"]["kernel"][:] = 0.0
    assert np.abs(out["forces"] - evaluate(potential, local, [graph], sizes=SINGLE)["forces"]).max() > 1e-3
    assert_forces_match_differences_and_rotate(potential, variables, pos, z, EFA_CONFIG.r_cut, rng, sizes=SINGLE)


def test_model_padding_and_batch_composition_change_nothing(efa_model):
    potential, variables = efa_model
    rng = np.random.default_rng(7)
    graphs = [make_graph(*random_molecule(rng, n), EFA_CONFIG.r_cut) for n in (4, 6)]
    assert_padding_and_batch_change_nothing(potential, variables, graphs, sizes=SINGLE)


def test_periodic_input_refused_and_large_structures_warned(efa_model):
    potential, variables = efa_model
    rng = np.random.default_rng(8)
    pos, z = random_molecule(rng, 5)
    periodic_graph = [make_graph(pos, z, EFA_CONFIG.r_cut, cell=np.eye(3) * 9.0, pbc=True)]
    with pytest.raises(ValueError, match="does not support periodic"):  # eager: at init
        potential.init(jax.random.PRNGKey(0), collate(periodic_graph))
    with pytest.raises(Exception, match="does not support periodic"):  # jitted: JaxRuntimeError, same text
        jax.block_until_ready(potential.energy_forces(variables, collate(periodic_graph, SINGLE)))
    wide = collate([make_graph(pos * 5.0, z, EFA_CONFIG.r_cut)], SINGLE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jax.block_until_ready(potential.energy_forces(variables, wide))
    assert any("more than efa_max_length" in str(w.message) for w in caught)


def test_efa_layers_selects_layers_and_default_model_has_no_efa():
    rng = np.random.default_rng(9)
    batch = collate([make_graph(*random_molecule(rng, 4), SMALL.r_cut)])
    config = dataclasses.replace(EFA_CONFIG, efa_layers=(1,))
    params = jax.eval_shape(Potential(config).init, jax.random.PRNGKey(0), batch)["params"]
    assert "efa_1" in params and "efa_0" not in params
    local = jax.eval_shape(Potential(SMALL).init, jax.random.PRNGKey(0), batch)["params"]
    assert not any(k.startswith("efa") for k in local)
