"""Small builders shared by the model tests: random molecules, tiny models, one-call evaluation."""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from so3krates.graph import Graph, collate, make_graph
from so3krates.model.config import ModelConfig
from so3krates.potential import Potential

SMALL = ModelConfig(features=24, num_layers=2, degrees=(1, 2, 3), num_heads=4, r_cut=4.0, dtype="float64")


def random_molecule(rng: np.random.Generator, n_atoms: int, box: float = 4.0, min_distance: float = 0.9):
    """Random positions (no two atoms closer than ``min_distance``) and atomic numbers from H, C, N, O."""
    positions: list[np.ndarray] = []
    while len(positions) < n_atoms:
        p = rng.uniform(0, box, 3)
        if all(np.linalg.norm(p - q) > min_distance for q in positions):
            positions.append(p)
    numbers = rng.choice([1, 6, 7, 8], size=n_atoms)
    return np.array(positions), numbers


def model(config: ModelConfig = SMALL, seed: int = 0, perturb_normalization: bool = True):
    """A Potential with random parameters; normalisation made non-trivial so that it is tested too."""
    potential = Potential(config)
    rng = np.random.default_rng(seed)
    pos, z = random_molecule(rng, 5)
    variables = potential.init(jax.random.PRNGKey(seed), collate([make_graph(pos, z, config.r_cut)]))
    if perturb_normalization:
        n = config.max_atomic_number + 1
        variables["normalization"] = {
            "scale": np.asarray(rng.uniform(0.5, 2.0, n), config.dtype),
            "shift": np.asarray(rng.normal(size=n), config.dtype),
            "energy_offset": np.asarray(0.3, config.dtype),
        }
    return potential, variables


def evaluate(potential: Potential, variables, graphs: list[Graph], stress: bool = False, **kwargs):
    """Energies (G,) and forces (N, 3) of the real structures, as numpy."""
    batch = collate(graphs, **kwargs)
    out = potential.energy_forces(variables, batch, compute_stress=stress)
    n_real = sum(g.n_atoms for g in graphs)
    result = {
        "energy": np.asarray(out["energy"])[: len(graphs)],
        "forces": np.asarray(out["forces"])[:n_real],
    }
    if stress:
        result["stress"] = np.asarray(out["stress"])[: len(graphs)]
    return result


def central_difference_forces(energy: Callable[[np.ndarray], float], positions: np.ndarray, h: float = 1e-5):
    """−dE/dR by central differences of ``energy(positions)`` (a float), shape of ``positions``."""
    out = np.zeros_like(positions)
    for a in range(len(positions)):
        for k in range(3):
            plus, minus = positions.copy(), positions.copy()
            plus[a, k] += h
            minus[a, k] -= h
            out[a, k] = -(energy(plus) - energy(minus)) / (2 * h)
    return out


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A random proper rotation matrix (3, 3)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q * np.linalg.det(q)


def cluster(rng: np.random.Generator, n: int, diameter: float = 14.0) -> np.ndarray:
    """n random points in a ball of the given diameter (all distances below r_max = 15 Å)."""
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return d * (diameter / 2) * rng.uniform(0, 1, (n, 1)) ** (1 / 3) + rng.uniform(-3, 3, 3)


def assert_forces_match_differences_and_rotate(
    potential: Potential, variables, pos: np.ndarray, z: np.ndarray, r_cut: float, rng: np.random.Generator, **kwargs
) -> None:
    """Forces equal central differences of the energy (four components, float64) and, for a random
    rotation of the structure, the energy is unchanged and the forces rotate with it."""
    import numpy.testing as npt

    def energy(positions: np.ndarray) -> float:
        return evaluate(potential, variables, [make_graph(positions, z, r_cut)], **kwargs)["energy"][0]

    out = evaluate(potential, variables, [make_graph(pos, z, r_cut)], **kwargs)
    h = 1e-5
    for a, c in ((0, 0), (2, 1), (4, 2), (1, 2)):
        plus, minus = pos.copy(), pos.copy()
        plus[a, c] += h
        minus[a, c] -= h
        npt.assert_allclose(out["forces"][a, c], -(energy(plus) - energy(minus)) / (2 * h), atol=1e-7, rtol=1e-6)
    rot = random_rotation(rng)
    rotated = evaluate(potential, variables, [make_graph(pos @ rot.T, z, r_cut)], **kwargs)
    npt.assert_allclose(rotated["energy"], out["energy"], atol=1e-7, rtol=0)
    npt.assert_allclose(rotated["forces"], out["forces"] @ rot.T, atol=1e-7, rtol=0)


def assert_padding_and_batch_change_nothing(potential: Potential, variables, graphs: list[Graph], **kwargs) -> None:
    """Structures evaluated together, with extra padding of atoms, edges and graphs, equal each alone."""
    from so3krates.graph import PadSizes, pad_sizes_for

    alone = [evaluate(potential, variables, [g], **kwargs) for g in graphs]
    sizes = pad_sizes_for(graphs)
    padded = evaluate(
        potential, variables, graphs, sizes=PadSizes(sizes.n_atoms * 2, sizes.n_edges + 7, sizes.n_graphs + 2)
    )
    np.testing.assert_allclose(padded["energy"], [a["energy"][0] for a in alone], atol=1e-10, rtol=0)
    np.testing.assert_allclose(padded["forces"], np.concatenate([a["forces"] for a in alone]), atol=1e-10, rtol=0)
