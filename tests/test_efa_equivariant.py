"""Equivariant EFA (issue #18): q, k, v of degree ≤ 2 from the SPHCs; every output degree rotates with its
Wigner-D matrix to the quadrature's accuracy, the O(N) result equals the O(N²) kernel, symmetries and
batching, model forces and symmetry, a cumulene torsion probe, and the matched local control."""

from __future__ import annotations

import dataclasses
import math

import ase
import e3x
import jax
import jax.numpy as jnp
import numpy as np
import optax
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
from so3krates.model.efa import efa_dense_reference, efa_linear, erope_frequencies
from so3krates.model.efa_equivariant import EquivariantEfaUpdate, EquivariantProjection
from so3krates.model.layers import init_sphc
from so3krates.model.lebedev import LebedevGrid, lebedev_grid, safe_frequency
from so3krates.model.so3krates import pair_geometry
from so3krates.potential import Potential
from so3krates.reference.structures import cumulene, set_rotor_torsion
from so3krates.so3 import DegreeLayout

R_MAX = 15.0
GRID = lebedev_grid(50, math.pi, R_MAX)
F_QK, F_V, F_X = 8, 6, 12
THETA = erope_frequencies(F_QK, math.pi, R_MAX)


def projections(rng: np.random.Generator, x: np.ndarray, chi: np.ndarray, max_degree: int):
    """q, k (gated) and v of degree ≤ L from invariant x (N, F) and χ in e3x's (N, (L+1)²) layout, with
    random weights (also for the bias-free per-degree Dense layers)."""
    sphcs = [chi[:, l * l : (l + 1) ** 2] for l in range(1, max_degree + 1)]
    out = []
    for features, gated in ((F_QK, True), (F_QK, True), (F_V, False)):
        module = EquivariantProjection(features, max_degree, gated, jnp.float64)
        params = module.init(jax.random.PRNGKey(int(rng.integers(1 << 30))), x, sphcs)
        params = jax.tree_util.tree_map(lambda a: rng.normal(size=a.shape), params)
        out.append(np.asarray(module.apply(params, x, sphcs)))
    return out


def rotate_slots(a: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Rotate the (l, m) slot axis (axis 1) with the e3x Wigner-D matrix d (row-vector convention)."""
    return np.einsum("ns...,st->nt...", a, d[: a.shape[1], : a.shape[1]])


def batch_of_graphs(rng: np.random.Generator, sizes=(7, 12, 4), n_pad: int = 3):
    positions = np.concatenate([cluster(rng, n) for n in sizes] + [np.zeros((n_pad, 3))])
    node_graph = np.concatenate([np.full(n, g) for g, n in enumerate(sizes)] + [np.full(n_pad, len(sizes))])
    return positions, node_graph


# -- the attention with l ≤ 2 slots ----------------------------------------------------------------------------


def test_every_output_degree_rotates_with_wigner_d_and_small_grid_fails():
    rng = np.random.default_rng(0)
    n, L = 16, 2
    positions = cluster(rng, n)
    assert np.linalg.norm(positions[:, None] - positions[None], axis=-1).max() < R_MAX  # s = r/r_max < 1
    rot = random_rotation(rng)
    d = np.asarray(e3x.so3.wigner_d(rot.T, L))  # positions @ rot.T  ⇒  Y → Y @ d
    unit = rng.normal(size=(3,))
    unit /= np.linalg.norm(unit)
    y_sh = np.asarray(e3x.so3.spherical_harmonics(unit, L))
    np.testing.assert_allclose(np.asarray(e3x.so3.spherical_harmonics(unit @ rot.T, L)), y_sh @ d, atol=1e-12)
    x = rng.normal(size=(n, F_X))
    chi = rng.normal(size=(n, (L + 1) ** 2)) * 0.5
    # the projections are equivariant by construction: rotate χ, the slots rotate with d
    rng_a, rng_b = np.random.default_rng(11), np.random.default_rng(11)
    q, k, v = projections(rng_a, x, chi, L)
    q_r, k_r, v_r = projections(rng_b, x, chi @ d, L)
    for a, a_r in ((q, q_r), (k, k_r), (v, v_r)):
        np.testing.assert_allclose(a_r, rotate_slots(a, d), atol=1e-12 * np.abs(a).max())
    one = np.zeros(n, int)
    u6, w6 = e3x.so3.lebedev_quadrature(num=6)
    small = LebedevGrid(6, np.asarray(u6), np.asarray(w6), math.pi, R_MAX, safe_frequency(6))
    errors = {}
    for name, grid in (("M=50", GRID), ("M=6", small)):
        y = np.asarray(efa_linear(q, k, v, positions, one, 1, grid, THETA))
        y_rot = np.asarray(efa_linear(q_r, k_r, v_r, positions @ rot.T, one, 1, grid, THETA))
        expected = rotate_slots(y, d)
        for l in range(L + 1):
            s = slice(l * l, (l + 1) ** 2)
            errors[name, l] = np.abs(y_rot[:, s] - expected[:, s]).max() / np.abs(y[:, s]).max()
    print("relative rotation error per degree:", {f"{g} l={l}": f"{e:.1e}" for (g, l), e in errors.items()})
    for l in range(L + 1):
        assert errors["M=50", l] < 1e-6  # EFA.md §7: ~2e-7 at s = 1 for M = 50, b = π
        assert errors["M=6", l] > 1e-3  # negative control: a grid too small for b = π breaks it


@pytest.mark.parametrize("max_degree", [1, 2])
def test_linear_matches_dense_reference(max_degree):
    rng = np.random.default_rng(1 + max_degree)
    positions, node_graph = batch_of_graphs(rng)
    n = len(positions)
    x = rng.normal(size=(n, F_X))
    chi = rng.normal(size=(n, (max_degree + 1) ** 2)) * 0.5
    q, k, v = projections(rng, x, chi, max_degree)
    fast = np.asarray(efa_linear(q, k, v, positions, node_graph, 3, GRID, THETA))
    exact = np.asarray(efa_dense_reference(q, k, v, positions, node_graph, 3, THETA))
    assert fast.shape == v.shape and np.abs(exact).max() > 1.0
    error = np.abs(fast - exact).max() / np.abs(exact).max()
    print(f"L = {max_degree}: O(N) vs dense, max relative error {error:.1e}")
    assert error < 1e-6
    np.testing.assert_array_equal(fast[-3:], 0.0)  # padding atoms get nothing


def test_translation_permutation_padding_and_batch_invariance():
    rng = np.random.default_rng(4)
    sizes = (5, 9, 6)
    positions, node_graph = batch_of_graphs(rng, sizes=sizes, n_pad=4)
    n = len(positions)
    q, k, v = projections(rng, rng.normal(size=(n, F_X)), rng.normal(size=(n, 4)), 1)

    def run(q, k, v, positions, node_graph, num_graphs=3):
        return np.asarray(efa_linear(q, k, v, positions, node_graph, num_graphs, GRID, THETA))

    y = run(q, k, v, positions, node_graph)
    scale = np.abs(y).max()
    shifted = run(q, k, v, positions + rng.normal(size=3) * 1000.0, node_graph)
    np.testing.assert_allclose(shifted, y, atol=1e-10 * scale, rtol=0)
    perm = rng.permutation(n)
    np.testing.assert_allclose(
        run(q[perm], k[perm], v[perm], positions[perm], node_graph[perm]), y[perm], atol=1e-12 * scale
    )
    start = 0
    for _g, m in enumerate(sizes):
        part = slice(start, start + m)
        alone = run(q[part], k[part], v[part], positions[part], np.zeros(m, int), 1)
        np.testing.assert_allclose(y[part], alone, atol=1e-12 * scale, rtol=0)
        start += m
    # more (empty) graphs, padding atoms with arbitrary features and positions
    garbage = np.where(node_graph[:, None, None] == 3, rng.normal(size=q.shape), q)
    more = run(garbage, k, v, positions + 0.0, np.where(node_graph == 3, 7, node_graph), 8)
    np.testing.assert_allclose(more[: sum(sizes)], y[: sum(sizes)], atol=1e-12 * scale, rtol=0)


# -- the torsion probe --------------------------------------------------------------------------------------------


def module_inputs(atoms_list, config: ModelConfig, rng: np.random.Generator):
    """x (a random embedding per element), χ (eq. 11), positions and the batch of some structures."""
    layout = DegreeLayout(config.degrees)
    batch = collate(
        [make_graph(a.positions, a.numbers, config.r_cut, cell=a.cell.array, pbc=a.pbc) for a in atoms_list]
    )
    positions = jnp.asarray(batch.positions)
    vectors = positions[batch.edge_j] - positions[batch.edge_i]
    edges = pair_geometry(vectors, batch.edge_i, batch.edge_j, batch.edge_mask, config, layout)
    chi = init_sphc(edges, positions.shape[0])
    embedding = rng.normal(size=(config.max_atomic_number + 1, config.features))
    return jnp.asarray(embedding[np.asarray(batch.numbers)]), chi, positions, batch


def output_invariants(z: np.ndarray) -> np.ndarray:
    """Per-atom invariants of an EFA output (N, (L+1)², F): the scalars and the norm of every degree."""
    parts = [z[:, 0]] + [np.linalg.norm(z[:, l * l : (l + 1) ** 2], axis=1) for l in range(1, math.isqrt(z.shape[1]))]
    return np.concatenate(parts, axis=1)


def test_torsion_reaches_the_output_invariants_only_with_l1():
    """C9 cumulene, the last CH2 turned about the chain axis (a local model's invariants do not change):
    the invariants of the EFA output change by orders of magnitude more with l ≤ 1 than with l = 0."""
    base = dict(features=F_X, num_layers=2, degrees=(1, 2), num_heads=2, r_cut=2.5, dtype="float64")
    signals = {}
    for L in (0, 1):
        config = ModelConfig(**base, global_attention="efa", efa_qk_features=F_QK, efa_v_features=F_V, efa_max_degree=L)
        module = EquivariantEfaUpdate(config)
        profiles = []
        for angle in (0.0, 30.0, 60.0, 90.0, 120.0, 150.0, 180.0):
            atoms = set_rotor_torsion(cumulene(9), angle)
            x, chi, positions, batch = module_inputs([atoms], config, np.random.default_rng(6))
            if not profiles:
                params = module.init(jax.random.PRNGKey(7), x, chi, positions, batch)
            _, state = module.apply(params, x, chi, positions, batch, mutable=["intermediates"])
            profiles.append(np.asarray(state["intermediates"]["attention"][0])[:13])
        profiles = np.stack(profiles)  # (angles, atoms, slots, F_v)
        for name, values in (
            ("scalars", profiles[:, :, 0]),
            ("invariants", np.stack(list(map(output_invariants, profiles)))),
        ):
            signals[name, L] = np.abs(values - values[0]).max() / np.abs(values[0]).max()
    print(
        "C9 torsion signal (largest change over the scan / output scale):",
        {f"{k} L={L}": f"{v:.1e}" for (k, L), v in signals.items()},
    )
    assert signals["invariants", 1] > 1e-3 and signals["invariants", 1] > 1000 * signals["invariants", 0]
    # The scalar slot alone sees little more than the invariant EFA: the two H of the turned CH2 are
    # equivalent, so their l = 1 terms cancel in Σ_j κ_ij v_j to first order (a cos τ signal is forbidden
    # by the symmetry τ → τ + 180°); the torsion reaches the invariants through the l = 1 output (cos²τ),
    # which is why that output updates the SPHCs.
    assert signals["scalars", 1] < 0.1 * signals["invariants", 1]


# -- inside the model -----------------------------------------------------------------------------------------------

EQ_CONFIG = dataclasses.replace(
    SMALL, global_attention="efa", efa_qk_features=F_QK, efa_v_features=F_V, efa_max_degree=1
)
SINGLE = PadSizes(n_atoms=8, n_edges=64, n_graphs=2)


def randomise_zero_weights(params, rng: np.random.Generator, scale: float = 0.5):
    """The zero-initialised EFA output weights (MLP′'s last kernel, w_l of the SPHC update) made random."""
    params = jax.tree_util.tree_map(np.array, params)
    for name, block in params.items():
        if not name.startswith("efa_"):
            continue
        for key in list(block):
            if key == "mlp_1" or key.startswith("sphc_"):
                leaf = block[key]["kernel"] if key == "mlp_1" else block[key]
                assert not leaf.any()  # zero-initialised: a new model starts as the local one
                leaf[...] = rng.normal(0.0, scale, leaf.shape)
    return params


@pytest.fixture(scope="module")
def eq_model():
    potential = Potential(EQ_CONFIG)
    rng = np.random.default_rng(8)
    pos, z = random_molecule(rng, 5)
    # jitted: one compilation instead of eager op-by-op dispatch (twice as fast here)
    variables = jax.jit(potential.init)(jax.random.PRNGKey(8), collate([make_graph(pos, z, EQ_CONFIG.r_cut)], SINGLE))
    assert set(variables["params"]["efa_0"]) >= {"query", "key", "value", "sphc_1"}
    assert "sphc_1" not in variables["params"]["efa_1"]  # the last layer's SPHCs feed nothing
    return potential, {**variables, "params": randomise_zero_weights(variables["params"], rng)}


def test_model_forces_finite_differences_rotation_and_sphc_update_matter(eq_model):
    potential, variables = eq_model
    rng = np.random.default_rng(9)
    pos, z = random_molecule(rng, 5, box=6.0)  # pairs beyond r_cut too: only EFA couples them
    graph = make_graph(pos, z, EQ_CONFIG.r_cut)
    out = evaluate(potential, variables, [graph], sizes=SINGLE)
    no_sphc_update = jax.tree_util.tree_map(np.copy, variables)
    no_sphc_update["params"]["efa_0"]["sphc_1"][:] = 0.0
    # with random weights the SPHC update reaches the energy only through the last layer's SPHC norms and
    # filters: a small but real effect (float64 noise is ~1e-13)
    assert np.abs(out["forces"] - evaluate(potential, no_sphc_update, [graph], sizes=SINGLE)["forces"]).max() > 1e-7
    assert_forces_match_differences_and_rotate(potential, variables, pos, z, EQ_CONFIG.r_cut, rng, sizes=SINGLE)


def test_model_padding_and_batch_composition_change_nothing(eq_model):
    potential, variables = eq_model
    rng = np.random.default_rng(10)
    graphs = [make_graph(*random_molecule(rng, n), EQ_CONFIG.r_cut) for n in (4, 6)]
    assert_padding_and_batch_change_nothing(potential, variables, graphs, sizes=SINGLE)


def test_periodic_input_refused_but_not_by_the_local_control():
    rng = np.random.default_rng(13)
    atoms = ase.Atoms(numbers=[6, 1, 1, 8], positions=rng.uniform(0, 4, (4, 3)), cell=np.eye(3) * 9.0, pbc=True)
    x, chi, positions, batch = module_inputs([atoms], EQ_CONFIG, rng)
    assert np.asarray(batch.pbc).any()
    with pytest.raises(ValueError, match="does not support periodic"):  # as the invariant EFA (test_efa.py)
        EquivariantEfaUpdate(EQ_CONFIG).init(jax.random.PRNGKey(0), x, chi, positions, batch)
    control = dataclasses.replace(EQ_CONFIG, global_attention="efa-control")
    EquivariantEfaUpdate(control).init(jax.random.PRNGKey(0), x, chi, positions, batch)


def test_matched_local_control_builds_and_trains_a_step(eq_model):
    control = dataclasses.replace(EQ_CONFIG, global_attention="efa-control")
    rng = np.random.default_rng(11)
    graphs = [make_graph(*random_molecule(rng, n), control.r_cut) for n in (4, 3)]
    batch = collate(graphs, PadSizes(n_atoms=8, n_edges=64, n_graphs=3))
    shapes = {
        c: jax.eval_shape(Potential(c).init, jax.random.PRNGKey(0), batch)["params"] for c in (EQ_CONFIG, control)
    }

    def count(tree) -> int:
        return sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(tree))

    for t in range(control.num_layers):
        efa, local = shapes[EQ_CONFIG][f"efa_{t}"], shapes[control][f"efa_{t}"]
        assert set(efa) - set(local) == {"query", "key"} and set(local) <= set(efa)
        assert count(efa) - count(local) == count(efa["query"]) + count(efa["key"])
    # the control is local: no grid check
    ModelConfig(**{**control.to_dict(), "efa_grid_size": 6})
    # its variables: the EFA model's without queries and keys (the same structure, checked above)
    potential, variables = Potential(control), jax.tree_util.tree_map(np.copy, eq_model[1])
    for t in range(control.num_layers):
        del variables["params"][f"efa_{t}"]["query"], variables["params"][f"efa_{t}"]["key"]
    assert jax.tree_util.tree_structure(variables["params"]) == jax.tree_util.tree_structure(shapes[control])
    targets = rng.normal(size=len(graphs))

    def loss(params):  # energies only: a first derivative compiles in a third of the time of force training
        energy = potential.energy_unjitted({**variables, "params": params}, batch)[0][: len(graphs)]
        return jnp.mean((energy - targets) ** 2)

    optimiser = optax.adam(1e-2)
    params = variables["params"]
    state = optimiser.init(params)
    grad_fn = jax.jit(jax.value_and_grad(loss))
    values = []
    for _ in range(3):
        value, grads = grad_fn(params)
        updates, state = optimiser.update(grads, state)
        params = optax.apply_updates(params, updates)
        values.append(float(value))
    assert np.abs(grads["efa_0"]["sphc_1"]).max() > 0  # the SPHC update of the control receives gradient
    assert np.abs(grads["efa_0"]["value"]["degree_1"]["kernel"]).max() > 0  # and so do its l = 1 values
    assert values[-1] < values[0]


def test_config_validation_and_defaults():
    efa = dict(global_attention="efa", features=24, num_layers=2, degrees=(1, 2))
    assert ModelConfig().efa_max_degree == 0  # today's invariant EFA stays the default
    for L in (0, 1, 2):
        config = ModelConfig(**efa, efa_max_degree=L)
        assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="efa_max_degree must be 0, 1 or 2"):
        ModelConfig(**efa, efa_max_degree=3)
    with pytest.raises(ValueError, match=r"degrees = \[2, 3\] has none"):
        ModelConfig(**{**efa, "degrees": (2, 3)}, efa_max_degree=1)
    with pytest.raises(ValueError, match="'efa' or 'efa-control'"):
        ModelConfig(global_attention="era")
    ModelConfig(degrees=(2, 3), efa_max_degree=1)  # without global attention the option is unused
    # efa_max_degree = 0 keeps issue #7's module and parameter names (saved models load unchanged)
    rng = np.random.default_rng(12)
    batch = collate([make_graph(*random_molecule(rng, 4), SMALL.r_cut)])
    invariant = dataclasses.replace(EQ_CONFIG, efa_max_degree=0)
    params = jax.eval_shape(Potential(invariant).init, jax.random.PRNGKey(0), batch)["params"]
    assert set(params["efa_0"]["query"]) == {"kernel", "bias"} and "sphc_1" not in params["efa_0"]
