"""``ModelConfig.remat``: per-layer rematerialisation is a memory setting and must not change any result.

Remat recomputes each layer's activations in the backward pass instead of storing them; with a radial
table, each layer also interpolates its own filters. Energies, forces and stress must agree with the
plain model to rounding (float64), for the exact and the tabulated filters, for a periodic cell and with
the non-local correction (whose closure is a static argument of the rematerialised layer).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from model_helpers import SMALL, evaluate, model, random_molecule

from so3krates.graph import Graph, collate, make_graph
from so3krates.model.config import ModelConfig
from so3krates.potential import Potential

CELL = np.array([[4.2, 0.0, 0.0], [0.7, 4.0, 0.0], [-0.4, 0.5, 4.4]])  # triclinic, smaller than 2·r_cut
TOL = 1e-12


def molecules(seed: int = 1) -> list[Graph]:
    rng = np.random.default_rng(seed)
    return [make_graph(*random_molecule(rng, n), SMALL.r_cut) for n in (4, 6, 9)]


def crystal(seed: int = 2) -> Graph:
    rng = np.random.default_rng(seed)
    frac, z = random_molecule(rng, 5, box=1.0, min_distance=0.25)
    return make_graph(frac @ CELL, z, SMALL.r_cut, CELL, True)


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        scale = max(1.0, float(np.abs(a[key]).max()))
        np.testing.assert_allclose(b[key], a[key], rtol=0, atol=TOL * scale, err_msg=key)


def test_remat_keeps_the_parameter_tree():
    """Checkpoints trained with remat off load with remat on and vice versa: same names and shapes."""
    _, variables = model()
    remat = Potential(dataclasses.replace(SMALL, remat=True))
    rng = np.random.default_rng(0)
    other = remat.init(jax.random.PRNGKey(0), collate([make_graph(*random_molecule(rng, 5), SMALL.r_cut)]))
    shapes = jax.tree_util.tree_map(np.shape, variables["params"])
    assert jax.tree_util.tree_map(np.shape, other["params"]) == shapes


@pytest.mark.parametrize("periodic", [False, True])
def test_remat_gives_the_same_energies_forces_and_stress(periodic: bool):
    potential, variables = model()
    remat = Potential(dataclasses.replace(SMALL, remat=True))
    graphs = [crystal()] if periodic else molecules()
    assert_same(evaluate(potential, variables, graphs, stress=periodic), evaluate(remat, variables, graphs, periodic))


def test_remat_with_the_radial_table_gives_the_same_results():
    """The tabulated path interpolates per layer inside the remat region: same numbers as all at once."""
    potential, variables = model()
    remat = Potential(dataclasses.replace(SMALL, remat=True))
    prepared = potential.prepare(variables)
    batch = collate([*molecules(), crystal()])
    a = potential.energy_forces(prepared, batch, compute_stress=True)
    b = remat.energy_forces(prepared, batch, compute_stress=True)
    assert_same(jax.tree_util.tree_map(np.asarray, a), jax.tree_util.tree_map(np.asarray, b))


@pytest.mark.slow
def test_remat_with_the_nonlocal_correction_gives_the_same_results():
    config = dataclasses.replace(SMALL, r_cut=3.0, nonlocal_correction=True)
    potential, variables = model(config)
    remat = Potential(dataclasses.replace(config, remat=True))
    rng = np.random.default_rng(3)
    graphs = [make_graph(*random_molecule(rng, n), config.r_cut) for n in (5, 8)]
    a = evaluate(potential, variables, graphs, all_pairs=True)
    assert_same(a, evaluate(remat, variables, graphs, all_pairs=True))
    prepared = potential.prepare(variables)
    batch = collate(graphs, all_pairs=True)
    b = jax.tree_util.tree_map(np.asarray, remat.energy_forces(prepared, batch))
    c = jax.tree_util.tree_map(np.asarray, potential.energy_forces(prepared, batch))
    assert_same(c, b)


def test_saved_configs_without_the_field_still_load():
    """Run directories written before the field existed: remat defaults to off; the dict round-trips."""
    old = SMALL.to_dict()
    del old["remat"]
    assert ModelConfig.from_dict(old) == SMALL
    assert not ModelConfig.from_dict(old).remat
    on = dataclasses.replace(SMALL, remat=True)
    assert ModelConfig.from_dict(on.to_dict()) == on
