"""Tabulated radial filters (inference) against the exact filter MLPs."""

import numpy as np
import pytest
from model_helpers import SMALL, evaluate, model, random_molecule

from so3krates.graph import collate, make_graph


def test_tabulated_radial_filters_match_the_exact_model():
    rng = np.random.default_rng(0)
    potential, variables = model()
    graphs = [make_graph(*random_molecule(rng, n), SMALL.r_cut) for n in (6, 9)]
    exact = evaluate(potential, variables, graphs)
    batch = collate(graphs)
    prepared = potential.prepare(variables)
    table = prepared["radial_table"]
    out = potential.energy_forces(prepared, batch)
    np.testing.assert_allclose(np.asarray(out["energy"])[:2], exact["energy"], rtol=1e-7)
    np.testing.assert_allclose(
        np.asarray(out["forces"])[:15], exact["forces"], atol=1e-7 * np.abs(exact["forces"]).max()
    )
    # A coarse table is visibly worse: the comparison above is not vacuous.
    coarse = potential.energy_forces(potential.prepare(variables, num_points=8), batch)
    assert np.abs(np.asarray(coarse["energy"])[:2] - exact["energy"]).max() > 1e-5
    # So is a table truncated to a few basis functions: the rank is chosen, not incidental.
    few = potential.prepare(variables, rank_tolerance=1e-2)
    assert few["radial_table"].coefficients.shape[-1] < table.coefficients.shape[-1]
    truncated = potential.energy_forces(few, batch)
    assert np.abs(np.asarray(truncated["forces"])[:15] - exact["forces"]).max() > 1e-5


@pytest.mark.slow
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
    tabulated = np.asarray(potential.energy_forces({**variables, "radial_table": table}, batch)["forces"])[:n_atoms]
    assert np.abs(tabulated - exact).max() < 3e-6 * np.abs(exact).max()


def test_prepared_variables_are_the_one_way_to_pass_the_table():
    """``prepare`` puts the table into the variables: every entry point uses it, ``tabulate=False`` gives the
    exact model, and the deprecated ``radial_table=`` argument gives the same numbers with a warning."""
    import warnings

    rng = np.random.default_rng(2)
    potential, variables = model()
    batch = collate([make_graph(*random_molecule(rng, 7), SMALL.r_cut)])
    prepared = potential.prepare(variables)
    assert set(prepared) == {*variables, "radial_table"} and "radial_table" not in variables
    tabulated = potential.energy_forces(prepared, batch)
    np.testing.assert_allclose(potential.energy(prepared, batch), tabulated["energy"], rtol=1e-12)
    exact = potential.energy_forces(potential.prepare(prepared, tabulate=False), batch)
    np.testing.assert_array_equal(exact["forces"], potential.energy_forces(variables, batch)["forces"])
    assert np.abs(np.asarray(exact["forces"]) - np.asarray(tabulated["forces"])).max() > 0  # not the same path
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = potential.energy_forces(variables, batch, radial_table=prepared["radial_table"])
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    np.testing.assert_array_equal(old["forces"], tabulated["forces"])


def test_moved_names_still_resolve_with_a_warning():
    import importlib
    import warnings

    moved = [
        ("so3krates.model.layers", "so3krates.model.radial", ["RadialTable", "interpolate_radial_filters"]),
        ("so3krates.model.layers", "so3krates.model.nonlocal_correction", ["sphc_distances"]),
        ("so3krates.model.so3krates", "so3krates.model.radial", ["tabulate_radial_filters"]),
        ("so3krates.so3", "so3krates.model.radial", ["cosine_cutoff", "physnet_radial_basis", "polynomial_cutoff"]),
        ("so3krates.model.efa", "so3krates.model.lebedev", ["check_grid", "LEBEDEV_SAFE_FREQUENCY"]),
    ]
    for old_name, new_name, names in moved:
        old, new = importlib.import_module(old_name), importlib.import_module(new_name)
        for name in names:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                assert getattr(old, name) is getattr(new, name)
            assert any(issubclass(w.category, DeprecationWarning) for w in caught), (old_name, name)
