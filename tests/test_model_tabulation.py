"""Tabulated radial filters (inference) against the exact filter MLPs."""

import numpy as np
from model_helpers import SMALL, evaluate, model, random_molecule

from so3krates.graph import collate, make_graph


def test_tabulated_radial_filters_match_the_exact_model():
    rng = np.random.default_rng(0)
    potential, variables = model()
    graphs = [make_graph(*random_molecule(rng, n), SMALL.r_cut) for n in (6, 9)]
    exact = evaluate(potential, variables, graphs)
    batch = collate(graphs)
    table = potential.tabulate(variables)
    out = potential.energy_forces(variables, batch, radial_table=table)
    np.testing.assert_allclose(np.asarray(out["energy"])[:2], exact["energy"], rtol=1e-7)
    np.testing.assert_allclose(
        np.asarray(out["forces"])[:15], exact["forces"], atol=1e-7 * np.abs(exact["forces"]).max()
    )
    # A coarse table is visibly worse: the comparison above is not vacuous.
    coarse = potential.energy_forces(variables, batch, radial_table=potential.tabulate(variables, num_points=8))
    assert np.abs(np.asarray(coarse["energy"])[:2] - exact["energy"]).max() > 1e-5
    # So is a table truncated to a few basis functions: the rank is chosen, not incidental.
    few = potential.tabulate(variables, rank_tolerance=1e-2)
    assert few.coefficients.shape[-1] < table.coefficients.shape[-1]
    truncated = potential.energy_forces(variables, batch, radial_table=few)
    assert np.abs(np.asarray(truncated["forces"])[:15] - exact["forces"]).max() > 1e-5


def test_float32_table_is_as_accurate_as_float32_rounding():
    """The table of a float32 model is built from float64 evaluations of its filters: slopes interpolated
    from float32-rounded values carried errors of ~1e-7/h of the forces (5e-5 relative for a trained model,
    1.3e-5 here, where the fine grid makes h small; 6e-7 with the float64 evaluation)."""
    import dataclasses

    import jax

    config = dataclasses.replace(SMALL, dtype="float32")
    potential, variables = model(config)
    # Larger radial weights than at initialisation, as after training: steeper filters.
    variables["params"]["radial_filters"] = jax.tree_util.tree_map(
        lambda x: 3.0 * x, variables["params"]["radial_filters"]
    )
    rng = np.random.default_rng(1)
    graphs = [make_graph(*random_molecule(rng, n), config.r_cut) for n in (8, 9, 10)]
    batch = collate(graphs)
    n_atoms = sum(g.n_atoms for g in graphs)
    exact = np.asarray(potential.energy_forces(variables, batch)["forces"])[:n_atoms]
    table = potential.tabulate(variables, num_points=4096)
    assert table.coefficients.shape[-1] < 2 * config.num_layers * config.features  # a real low-rank expansion
    tabulated = np.asarray(potential.energy_forces(variables, batch, radial_table=table)["forces"])[:n_atoms]
    assert np.abs(tabulated - exact).max() < 3e-6 * np.abs(exact).max()
