"""Forces and stress against finite differences, padding invariance and smoothness at the cutoff."""

import numpy as np
import pytest
from model_helpers import SMALL, central_difference_forces, evaluate, model, random_molecule

from so3krates.graph import PadSizes, collate, make_graph, pad_sizes_for


def test_forces_match_central_finite_differences():
    rng = np.random.default_rng(0)
    potential, variables = model()
    pos, z = random_molecule(rng, 6)
    forces = evaluate(potential, variables, [make_graph(pos, z, SMALL.r_cut)])["forces"]
    fd = central_difference_forces(
        lambda p: evaluate(potential, variables, [make_graph(p, z, SMALL.r_cut)])["energy"][0], pos
    )
    assert np.abs(forces).max() > 1e-3
    np.testing.assert_allclose(forces, fd, atol=1e-7, rtol=1e-6)


def periodic_cell(rng, n_atoms=6, a=4.2):
    """A small triclinic cell (smaller than 2·r_cut, so atoms see several images of each other)."""
    cell = np.array([[a, 0.0, 0.0], [0.7, a * 0.95, 0.0], [-0.4, 0.5, a * 1.05]])
    frac, z = random_molecule(rng, n_atoms, box=1.0, min_distance=0.25)
    return frac @ cell, z, cell


def test_stress_matches_strain_finite_differences():
    rng = np.random.default_rng(1)
    potential, variables = model()
    pos, z, cell = periodic_cell(rng)
    out = evaluate(potential, variables, [make_graph(pos, z, SMALL.r_cut, cell, True)], stress=True)
    volume = abs(np.linalg.det(cell))
    h = 1e-5
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] = eps[b, a] = h / 2 if a != b else h
            energies = []
            for sign in (1, -1):
                deform = np.eye(3) + sign * eps
                g = make_graph(pos @ deform, z, SMALL.r_cut, cell @ deform, True)
                energies.append(evaluate(potential, variables, [g])["energy"][0])
            # symmetric strain: dE/dε_ab for the symmetric pair, hence the factor for off-diagonals
            fd[a, b] = (energies[0] - energies[1]) / (2 * h) / volume
    assert np.abs(out["stress"][0]).max() > 1e-5
    np.testing.assert_allclose(out["stress"][0], fd, atol=1e-8, rtol=1e-5)
    # forces in a periodic cell against finite differences, for one atom
    forces = out["forces"]
    for k in range(3):
        plus, minus = pos.copy(), pos.copy()
        plus[2, k] += h
        minus[2, k] -= h
        e_p = evaluate(potential, variables, [make_graph(plus, z, SMALL.r_cut, cell, True)])["energy"][0]
        e_m = evaluate(potential, variables, [make_graph(minus, z, SMALL.r_cut, cell, True)])["energy"][0]
        np.testing.assert_allclose(forces[2, k], -(e_p - e_m) / (2 * h), atol=1e-7, rtol=1e-6)


def test_padding_and_batch_composition_change_nothing():
    rng = np.random.default_rng(2)
    potential, variables = model()
    graphs = [make_graph(*random_molecule(rng, n), SMALL.r_cut) for n in (4, 7, 5)]
    alone = [evaluate(potential, variables, [g]) for g in graphs]
    together = evaluate(potential, variables, graphs)
    sizes = pad_sizes_for(graphs)
    padded = evaluate(
        potential,
        variables,
        graphs[::-1],
        sizes=PadSizes(sizes.n_atoms * 3, sizes.n_edges * 2 + 5, sizes.n_graphs + 4),
    )
    offsets = np.cumsum([0] + [g.n_atoms for g in graphs])
    for k in range(len(graphs)):
        np.testing.assert_allclose(together["energy"][k], alone[k]["energy"][0], rtol=1e-12)
        np.testing.assert_allclose(together["forces"][offsets[k] : offsets[k + 1]], alone[k]["forces"], atol=1e-12)
        np.testing.assert_allclose(padded["energy"][len(graphs) - 1 - k], alone[k]["energy"][0], rtol=1e-12)
    rev_offsets = np.cumsum([0] + [g.n_atoms for g in graphs[::-1]])
    np.testing.assert_allclose(padded["forces"][rev_offsets[2] : rev_offsets[3]], alone[0]["forces"], atol=1e-12)


def test_padding_graph_energy_and_forces_are_zero():
    rng = np.random.default_rng(3)
    potential, variables = model()
    g = make_graph(*random_molecule(rng, 4), SMALL.r_cut)
    batch = collate([g], sizes=PadSizes(16, 64, 3))
    out = potential.energy_forces(variables, batch)
    assert np.all(np.asarray(out["energy"])[1:] == 0)
    assert np.all(np.asarray(out["forces"])[g.n_atoms :] == 0)
    assert np.all(np.isfinite(np.asarray(out["forces"])))


@pytest.mark.parametrize("approaching", ["atom", "molecule"])
def test_energy_and_forces_continuous_across_the_cutoff(approaching):
    """An isolated atom (the hardest case: its only neighbour crosses r_cut) or a second molecule moves
    through the cutoff sphere of the last atom of a molecule: energy and forces change continuously."""
    rng = np.random.default_rng(4)
    potential, variables = model()
    pos, z = random_molecule(rng, 4, box=2.0)
    direction = np.array([1.0, 0.0, 0.0])
    anchor = pos[np.argmax(pos[:, 0])]  # the outermost atom along x is the first to see the newcomer
    if approaching == "atom":
        other, other_z = np.zeros((1, 3)), np.array([8])
    else:
        other, other_z = np.array([[0.0, 0, 0], [0.95, 0, 0], [-0.3, 0.9, 0]]), np.array([8, 1, 1])
    rc = SMALL.r_cut

    def at(distance):
        p = np.concatenate([pos, anchor + direction * distance + other])
        return evaluate(potential, variables, [make_graph(p, np.concatenate([z, other_z]), rc)])

    jumps = []
    for delta in (1e-4, 1e-6):
        inside, outside = at(rc - delta), at(rc + delta)
        jumps.append(
            (abs(inside["energy"][0] - outside["energy"][0]), np.abs(inside["forces"] - outside["forces"]).max())
        )
    scale = abs(at(rc - 0.5)["energy"][0] - at(rc + 0.5)["energy"][0])
    assert scale > 1e-4  # the newcomer really interacts inside the cutoff
    # Continuity: the differences across r_cut vanish with delta (at least linearly, from the smooth
    # variation of the other pairs); a jump in energy or forces would leave a floor that does not shrink.
    for k in range(2):
        assert jumps[1][k] < 1e-12 or jumps[0][k] / jumps[1][k] > 50, jumps


def test_block_diagonal_places_each_head_on_the_diagonal():
    import jax.numpy as jnp

    from so3krates.model.layers import block_diagonal

    blocks = np.random.default_rng(0).normal(size=(3, 4, 4))
    full = np.asarray(block_diagonal(jnp.asarray(blocks)))
    expected = np.zeros((12, 12))
    for h in range(3):
        expected[4 * h : 4 * h + 4, 4 * h : 4 * h + 4] = blocks[h]
    np.testing.assert_allclose(full, expected, rtol=1e-6)
