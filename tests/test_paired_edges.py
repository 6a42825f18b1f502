"""Paired edges: each edge opposite its reverse, so that the symmetric filters (eq. 16) are computed once
per pair. The paired layout must give exactly what the plain one gives, for molecules, crystals whose cell
is smaller than 2·r_cut (an atom is its own neighbour through images) and the MD neighbour list."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_helpers import SMALL, model, random_molecule
from test_model_periodic import CELL, crystal

from so3krates.graph import PadSizes, collate, edges_are_paired, make_graph, neighbour_list, pair_edges
from so3krates.inference.neighbours import SkinNeighbourList
from so3krates.model.config import ModelConfig
from so3krates.train.batching import stack_batches

# Small enough to compile fast; r_cut longer than the test cell's vectors, so atoms see their own images.
TINY = ModelConfig(
    features=8, num_layers=2, degrees=(1, 2), num_heads=2, r_cut=5.0, num_radial=8, radial_hidden=8,
    spherical_hidden=4, dtype="float64",
)  # fmt: skip


def shuffled(graph, seed=0):  # noqa: ANN001, ANN201
    """The same graph with its edges in a random order (no longer paired)."""
    order = np.random.default_rng(seed).permutation(graph.n_edges)
    return dataclasses.replace(
        graph, edge_i=graph.edge_i[order], edge_j=graph.edge_j[order], edge_shift=graph.edge_shift[order]
    )


def test_pair_edges_puts_every_edge_opposite_its_reverse_including_self_images():
    pos, _ = crystal(0)
    i, j, s = neighbour_list(pos, CELL, np.ones(3, bool), 5.0)
    assert (i == j).any()  # the cutoff is longer than the cell vectors: atoms see their own images
    order = pair_edges(i, j, s)
    assert sorted(order.tolist()) == list(range(len(i)))  # a permutation: no edge lost or repeated
    assert edges_are_paired(i[order], j[order], s[order])
    assert not edges_are_paired(i, j, s)  # vesin's order (sorted by i) is not paired: the check can fail
    with pytest.raises(ValueError, match="not symmetric"):
        pair_edges(i[1:], j[1:], s[1:])


def test_collate_lays_out_pairs_across_the_two_halves():
    rng = np.random.default_rng(1)
    graphs = [make_graph(*random_molecule(rng, n), SMALL.r_cut) for n in (4, 6)]
    batch = collate(graphs)
    assert batch.edges_paired
    half = batch.edge_i.shape[0] // 2
    assert np.array_equal(batch.edge_i[:half], batch.edge_j[half:])
    assert np.array_equal(batch.edge_mask[:half], batch.edge_mask[half:])
    assert batch.edge_mask.sum() == sum(g.n_edges for g in graphs)
    assert not collate([shuffled(g) for g in graphs]).edges_paired


@pytest.mark.slow
def test_paired_and_plain_layouts_give_the_same_energy_forces_stress_and_gradients():
    potential, variables = model(TINY)
    rng = np.random.default_rng(2)
    pos, z = crystal(3)
    graphs = [make_graph(pos, z, TINY.r_cut, CELL, True), make_graph(*random_molecule(rng, 5), TINY.r_cut)]
    assert (graphs[0].edge_i == graphs[0].edge_j).any()
    paired, plain = collate(graphs), collate([shuffled(g, k) for k, g in enumerate(graphs)])
    assert paired.edges_paired and not plain.edges_paired
    a = potential.energy_forces(variables, paired, compute_stress=True)
    b = potential.energy_forces(variables, plain, compute_stress=True)
    for key in ("energy", "forces", "stress"):
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), rtol=1e-12, atol=1e-12)

    normalization = jax.tree.map(jnp.asarray, variables["normalization"])

    def loss(params, batch):  # noqa: ANN001, ANN202 (a training loss: energies and forces)
        out = potential.predict({"params": params, "normalization": normalization}, batch)
        return jnp.sum(out["interaction_energy"] ** 2) + jnp.sum(out["forces"] ** 2)

    gradient = jax.jit(jax.grad(loss))
    grad_paired, grad_plain = gradient(variables["params"], paired), gradient(variables["params"], plain)
    for x, y in zip(jax.tree.leaves(grad_paired), jax.tree.leaves(grad_plain), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-10, atol=1e-12)


def test_paired_layout_with_tabulated_filters_and_remat():
    potential, variables = model(dataclasses.replace(TINY, remat=True))
    graph = make_graph(*random_molecule(np.random.default_rng(4), 6), TINY.r_cut)
    prepared = potential.prepare(variables)
    a = potential.energy_forces(prepared, collate([graph]))
    b = potential.energy_forces(prepared, collate([shuffled(graph)]))
    np.testing.assert_allclose(np.asarray(a["forces"]), np.asarray(b["forces"]), atol=1e-12)


def test_md_neighbour_list_is_paired():
    pos, _ = crystal(5)
    neighbours = SkinNeighbourList(SMALL.r_cut, skin=0.3, pad_atom=7).build(pos, CELL, np.ones(3, bool))
    i, j, s = (np.asarray(a) for a in (neighbours.edge_i, neighbours.edge_j, neighbours.edge_shift))
    assert edges_are_paired(i, j, s)
    assert neighbours.edge_mask.sum() > 0 and not neighbours.edge_mask.all()


def test_nonlocal_model_with_paired_edges():
    config = dataclasses.replace(TINY, num_layers=1, nonlocal_correction=True)
    potential, variables = model(config)
    graph = make_graph(*random_molecule(np.random.default_rng(6), 6), config.r_cut)
    a = potential.energy_forces(variables, collate([graph], all_pairs=True))
    b = potential.energy_forces(variables, collate([shuffled(graph)], all_pairs=True))
    np.testing.assert_allclose(np.asarray(a["forces"]), np.asarray(b["forces"]), atol=1e-12)


def test_device_batches_with_mixed_layouts_stack_with_the_plain_one():
    rng = np.random.default_rng(7)
    graphs = [make_graph(*random_molecule(rng, n), TINY.r_cut) for n in (4, 5)]
    sizes = PadSizes(n_atoms=16, n_edges=collate(graphs).edge_i.shape[0], n_graphs=2)
    assert stack_batches([[graphs[0]], [graphs[1]]], sizes).edges_paired
    mixed = stack_batches([[graphs[0]], [shuffled(graphs[1])]], sizes)
    assert not mixed.edges_paired and mixed.edge_i.shape == (2, sizes.n_edges)
