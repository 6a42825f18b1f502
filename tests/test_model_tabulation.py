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
