"""The graph ↔ model cutoff contract: a batch records the cutoff of its neighbour lists, and the potential
refuses one built with a smaller cutoff than its own (a larger one gives the same result)."""

import jax
import numpy as np
import pytest
from model_helpers import model, random_molecule

from so3krates.graph import Graph, PadSizes, collate, make_graph, stackable
from so3krates.model.config import ModelConfig

CONFIG = ModelConfig(features=8, num_layers=1, degrees=(1, 2), num_heads=2, r_cut=5.0, dtype="float64")


def molecule(seed: int = 0, n: int = 6):
    return random_molecule(np.random.default_rng(seed), n, box=6.0)


def test_graphs_and_batches_record_their_cutoff():
    pos, z = molecule()
    a, b = make_graph(pos, z, 5.0), make_graph(pos, z, 4.0)
    assert a.r_cut == 5.0 and b.r_cut == 4.0
    assert collate([a]).r_cut == 5.0
    assert collate([a, b]).r_cut == 4.0  # the smallest: every pair within it is listed in every graph
    bare = Graph(pos, z, np.zeros((3, 3)), np.zeros(3, bool), a.edge_i, a.edge_j, a.edge_shift)
    assert collate([bare]).r_cut is None  # hand-made: not known
    assert collate([bare, a]).r_cut == 5.0
    assert collate([]).r_cut is None
    # static: no array leaf, part of the tree structure
    batch = collate([a])
    assert len(jax.tree_util.tree_leaves(batch)) == len(jax.tree_util.tree_leaves(collate([bare])))
    assert batch.replace(r_cut=None).r_cut is None


def test_batches_made_stackable_share_their_static_fields():
    pos, z = molecule()
    sizes = PadSizes(n_atoms=16, n_edges=64, n_graphs=2)
    parts = [collate([make_graph(pos, z, 5.0)], sizes), collate([], sizes)]  # an empty part: no cutoff
    with pytest.raises(ValueError):
        jax.tree_util.tree_map(lambda *xs: np.stack(xs), *parts)
    parts = stackable(parts)
    assert [p.r_cut for p in parts] == [5.0, 5.0]
    stacked = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *parts)
    assert stacked.positions.shape == (2, 16, 3) and stacked.r_cut == 5.0


def test_smaller_graph_cutoff_is_refused():
    potential, variables = model(CONFIG)
    pos, z = molecule()
    batch = collate([make_graph(pos, z, 3.0)])
    message = r"batch: neighbour lists built with cutoff 3 Å, smaller than the model's r_cut = 5 Å"
    with pytest.raises(ValueError, match=message):
        potential.energy_forces(variables, batch)
    with pytest.raises(ValueError, match=message):
        potential.energy(variables, batch)
    # also where the potential is traced inside another function (training steps, MD)
    with pytest.raises(ValueError, match=message):
        jax.jit(lambda b: potential.predict(variables, b)["forces"])(batch)


def test_equal_larger_and_unknown_cutoffs_give_the_same_result():
    """Edges beyond the model's cutoff get exactly zero weight (cosine cutoff), so a graph built with a larger
    cutoff gives the same energies and forces; a batch of unknown cutoff is not checked."""
    potential, variables = model(CONFIG)
    pos, z = molecule(1)
    exact = make_graph(pos, z, 5.0)
    larger = make_graph(pos, z, 7.0)
    assert larger.n_edges > exact.n_edges
    bare = Graph(pos, z, exact.cell, exact.pbc, exact.edge_i, exact.edge_j, exact.edge_shift)
    ref = potential.energy_forces(variables, collate([exact]))
    for graph in (larger, bare):
        out = potential.energy_forces(variables, collate([graph]))
        np.testing.assert_allclose(out["energy"], ref["energy"], rtol=1e-12)
        np.testing.assert_allclose(np.asarray(out["forces"])[: len(z)], np.asarray(ref["forces"])[: len(z)], atol=1e-12)


def test_no_recompilation_between_batches_with_the_same_cutoff():
    potential, variables = model(CONFIG)
    graphs = [make_graph(*molecule(seed), 5.0) for seed in (10, 11, 12)]
    sizes = PadSizes(n_atoms=16, n_edges=max(64, 2 * max(g.n_edges for g in graphs)), n_graphs=2)
    for graph in graphs:
        potential.energy_forces(variables, collate([graph], sizes))
    assert potential._energy_forces._cache_size() == 1
