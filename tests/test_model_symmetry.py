"""Symmetries of the So3krates model: rotations, SPHC equivariance, translations, permutations, reflections."""

import e3x
import jax
import numpy as np
import pytest
from model_helpers import SMALL, evaluate, model, random_molecule

from so3krates.graph import collate, make_graph
from so3krates.model.config import ModelConfig
from so3krates.so3 import DegreeLayout, wigner_d


def random_rotation(seed: int) -> np.ndarray:
    return np.asarray(e3x.so3.random_rotation(jax.random.PRNGKey(seed)), dtype=np.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_energy_invariant_forces_equivariant_under_rotation(seed):
    rng = np.random.default_rng(seed)
    potential, variables = model(seed=seed)
    pos, z = random_molecule(rng, 8)
    rot = random_rotation(seed + 10)
    a = evaluate(potential, variables, [make_graph(pos, z, SMALL.r_cut)])
    b = evaluate(potential, variables, [make_graph(pos @ rot, z, SMALL.r_cut)])
    assert abs(a["energy"][0]) > 1e-3  # a non-trivial energy, so the comparison means something
    np.testing.assert_allclose(b["energy"], a["energy"], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(b["forces"], a["forces"] @ rot, rtol=1e-8, atol=1e-10)


def sphcs(potential, variables, graph):
    """SPHCs of every layer (initial one first), shape (num_layers + 1, n_atoms, dim)."""
    batch = collate([graph])
    pos = np.asarray(batch.positions)
    from so3krates.potential import edge_vectors

    _, state = potential.module.apply(
        variables, batch, edge_vectors(pos, np.asarray(batch.cell), batch), mutable=["intermediates"]
    )
    return np.stack(state["intermediates"]["sphc"])[:, : graph.n_atoms]


@pytest.mark.parametrize("degrees", [(1, 2, 3), (0, 1, 2), (2, 4)])
def test_sphcs_equivariant_per_degree_with_wigner_d(degrees):
    config = ModelConfig(features=24, num_layers=2, degrees=degrees, num_heads=4, r_cut=4.0, dtype="float64")
    potential, variables = model(config)
    rng = np.random.default_rng(3)
    pos, z = random_molecule(rng, 7)
    rot = random_rotation(7)
    layout = DegreeLayout(config.degrees)
    d = np.asarray(wigner_d(rot, layout))
    chi = sphcs(potential, variables, make_graph(pos, z, config.r_cut))
    chi_rot = sphcs(potential, variables, make_graph(pos @ rot, z, config.r_cut))
    assert np.abs(chi[-1]).max() > 1e-2
    for l in degrees:  # every degree transforms with its own Wigner-D block, in every layer
        s = layout.slice(l)
        np.testing.assert_allclose(chi_rot[:, :, s], chi[:, :, s] @ d[s, s], atol=1e-9)


def test_translation_invariance():
    rng = np.random.default_rng(4)
    potential, variables = model()
    pos, z = random_molecule(rng, 8)
    a = evaluate(potential, variables, [make_graph(pos, z, SMALL.r_cut)])
    b = evaluate(potential, variables, [make_graph(pos + np.array([13.7, -4.2, 100.0]), z, SMALL.r_cut)])
    np.testing.assert_allclose(b["energy"], a["energy"], rtol=1e-10)
    np.testing.assert_allclose(b["forces"], a["forces"], atol=1e-9)


def test_permutation_invariance():
    rng = np.random.default_rng(5)
    potential, variables = model()
    pos, z = random_molecule(rng, 9)
    perm = rng.permutation(9)
    a = evaluate(potential, variables, [make_graph(pos, z, SMALL.r_cut)])
    b = evaluate(potential, variables, [make_graph(pos[perm], z[perm], SMALL.r_cut)])
    np.testing.assert_allclose(b["energy"], a["energy"], rtol=1e-10)
    np.testing.assert_allclose(b["forces"], a["forces"][perm], atol=1e-10)


def test_reflection_behaviour():
    """Documented behaviour (docs/model.md): the paper's eq. 19 keeps CG paths with l1 + l2 + l odd,
    which produce pseudotensors. The energy is then rotation- but not inversion-invariant (it can tell
    mirror images apart); without those paths it is invariant under inversion as well."""
    rng = np.random.default_rng(6)
    pos, z = random_molecule(rng, 8)
    for pseudo, should_match in [(False, True), (True, False)]:
        config = ModelConfig(
            features=24, num_layers=2, degrees=(1, 2, 3), r_cut=4.0, dtype="float64", pseudotensor_paths=pseudo
        )
        potential, variables = model(config)
        a = evaluate(potential, variables, [make_graph(pos, z, config.r_cut)])
        b = evaluate(potential, variables, [make_graph(-pos, z, config.r_cut)])
        if should_match:
            np.testing.assert_allclose(b["energy"], a["energy"], rtol=1e-10)
            np.testing.assert_allclose(b["forces"], -a["forces"], atol=1e-9)
        else:
            assert abs(b["energy"][0] - a["energy"][0]) > 1e-6

    # Initial SPHCs (eq. 11) have parity (-1)^l under inversion, whatever the coupling paths.
    potential, variables = model()
    layout = DegreeLayout(SMALL.degrees)
    chi = sphcs(potential, variables, make_graph(pos, z, SMALL.r_cut))[0]
    chi_inv = sphcs(potential, variables, make_graph(-pos, z, SMALL.r_cut))[0]
    parity = np.array([(-1) ** layout.degrees[k] for k in layout.degree_of_entry])
    np.testing.assert_allclose(chi_inv, chi * parity, atol=1e-12)
