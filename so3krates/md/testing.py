"""Small models for tests, examples and benchmarks of the calculator and the MD engine.

* :func:`random_model`: a potential with random weights — enough wherever only speed, symmetry or
  agreement between two code paths is tested (speed does not depend on the weights).
* :func:`emt_model`: a tiny model fitted in a few seconds to ASE's EMT on a small molecule, for tests
  whose outcome needs a physically sensible, bound potential-energy surface (energy conservation,
  thermostats, relaxations).
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms, units
from ase.build import molecule

from so3krates.graph import collate, graph_from_atoms, pad_sizes_for
from so3krates.inference import ForceField
from so3krates.model.config import ModelConfig
from so3krates.potential import Potential, Variables, residual_energy_graphs

# Frames the EMT fit sees: 24 (120 fs of sampling) left holes a rough fit could put an attractive well in
# (two carbons of ethanol fell together after ~400 NVE steps once the model gained its q/k/v biases); 48
# cover enough of the thermal range that the tests' 1 ps runs stay bound.
N_FRAMES = 48
TINY = ModelConfig(features=16, num_layers=2, degrees=(1, 2), num_heads=2, r_cut=5.0, num_radial=16, radial_hidden=32)


def random_model(
    config: ModelConfig = TINY, example: Atoms | None = None, seed: int = 0
) -> tuple[Potential, Variables]:
    """A :class:`Potential` with random weights (initialised on ``example``, default a water molecule)."""
    potential = Potential(config)
    example = example if example is not None else molecule("H2O")
    batch = collate([graph_from_atoms(example, config.r_cut)])
    # jit: one compilation instead of one per operation of the eager Flax init (seconds on a small CPU).
    return potential, jax.jit(potential.init)(jax.random.PRNGKey(seed), batch)


@functools.cache
def _emt_minimum(name: str) -> Atoms:
    from ase.calculators.emt import EMT
    from ase.optimize import BFGS

    atoms = molecule(name)
    atoms.calc = EMT()
    BFGS(atoms, logfile=None).run(fmax=0.05, steps=200)
    atoms.calc = None
    return atoms


def emt_structure(name: str = "CH3CH2OH") -> Atoms:
    """Molecule ``name`` relaxed with EMT (the geometry :func:`emt_model` was trained around); a copy."""
    return _emt_minimum(name).copy()


def emt_frames(
    name: str = "CH3CH2OH", n_frames: int = 24, temperature_K: float = 600.0, seed: int = 0, every: int = 20
) -> list[Atoms]:
    """Frames with EMT energies and forces from Langevin MD of molecule ``name`` (thermal sampling)."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import thermalize_momenta

    atoms = emt_structure(name)
    atoms.calc = EMT()
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K, rng=rng)
    dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=temperature_K, friction=0.02 / units.fs, fixcm=False, rng=rng)
    frames = []
    for _ in range(n_frames):
        dyn.run(every)
        frame = atoms.copy()
        frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
        frames.append(frame)
    return frames


@functools.cache
def emt_model(
    name: str = "CH3CH2OH", steps: int = 300, dtype: str = "float64", seed: int = 0
) -> tuple[Potential, Variables, tuple[int, ...]]:
    """A tiny model fitted to EMT energies and forces of molecule ``name``; cached per process.

    A minimal Adam loop on the force-matching loss, all frames in one padded batch. The fit is rough
    (tens of meV/Å) but smooth and bound, which is what dynamics tests need. ``dtype="float64"`` needs
    ``jax_enable_x64``. Returns (potential, variables, elements).
    """
    import optax

    config = ModelConfig(**{**TINY.to_dict(), "degrees": TINY.degrees, "dtype": dtype})
    frames = emt_frames(name, n_frames=N_FRAMES, seed=seed)
    graphs = [graph_from_atoms(a, config.r_cut) for a in frames]
    for g, a in zip(graphs, frames, strict=True):
        g.energy, g.forces = a.get_potential_energy(), a.get_forces()
    potential = Potential(config)
    variables = potential.init(jax.random.PRNGKey(seed), collate(graphs, pad_sizes_for(graphs)))
    energies = np.array([a.get_potential_energy() for a in frames])
    force_rms = float(np.sqrt(np.mean(np.concatenate([a.get_forces() for a in frames]) ** 2)))
    n_max = config.max_atomic_number + 1
    variables["normalization"] = {
        # Energies in units of the force scale, centred on the data: the network only learns the shape.
        "scale": jnp.full(n_max, force_rms, config.dtype),
        "shift": np.zeros(n_max),
        "energy_offset": np.asarray(energies.mean()),
    }
    # The model predicts the interaction energy: fit it to the labels less the reference energy.
    graphs = residual_energy_graphs(graphs, variables["normalization"])
    batch = collate(graphs, pad_sizes_for(graphs))
    params, normalization = variables["params"], variables["normalization"]
    n_atoms = float(len(frames[0]))

    def loss_fn(params: dict) -> jax.Array:
        out = potential.predict({"params": params, "normalization": normalization}, batch)
        e_err = jnp.where(batch.graph_mask, out["interaction_energy"] - batch.energy, 0.0) / n_atoms
        f_err = jnp.where(batch.node_mask[:, None], out["forces"] - batch.forces, 0.0)
        return jnp.sum(e_err**2) / len(frames) + 10.0 * jnp.sum(f_err**2) / (3 * n_atoms * len(frames))

    schedule = optax.cosine_decay_schedule(1e-2, steps, alpha=0.05)
    optimizer = optax.adam(schedule)

    @jax.jit
    def train_step(params: dict, opt_state: optax.OptState) -> tuple[dict, optax.OptState, jax.Array]:
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = optimizer.init(params)
    for _ in range(steps):
        params, opt_state, _loss = train_step(params, opt_state)
    elements = tuple(sorted({int(z) for z in frames[0].numbers}))
    return potential, {"params": params, "normalization": normalization}, elements


@functools.cache
def emt_run_dir() -> Path:
    """:func:`emt_model` saved as a run directory (in a temporary directory removed at exit), for CLI tests."""
    import atexit
    import shutil
    import tempfile

    from so3krates.run_dir import save_model

    potential, variables, elements = emt_model()
    directory = Path(tempfile.mkdtemp(prefix="so3krates-emt-model-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    config = {"model": potential.config.to_dict()}
    metadata = {"elements": list(elements), "data": "ASE EMT, Langevin MD of ethanol at 600 K"}
    return save_model(directory / "run", config, jax.device_get(variables), metadata)


def emt_loaded_model() -> ForceField:
    """:func:`emt_model` as loaded back from :func:`emt_run_dir`: one Potential per process, so every test
    shares its compiled functions, and loading a run directory is exercised on the way."""
    from so3krates.inference import load_force_field

    return load_force_field(emt_run_dir())
