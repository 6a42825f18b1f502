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
