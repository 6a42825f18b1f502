"""JAX-native MD driver: many integrator steps per compiled call, neighbour lists rebuilt on the host.

One call of the compiled *chunk* runs up to K steps in a ``lax.while_loop``. After every step it checks
that no atom has moved more than ``skin / 2`` from where the neighbour list was built; a step that
would break this is rejected inside the loop (the state stays at the last valid step) and the chunk
returns early. The host then rebuilds the list with vesin at the current positions — growing the
padded edge capacity if the new list does not fit (one recompilation) — and carries on. So every
force is computed with a complete list: neighbours are never lost silently. A rejected step is
repeated with the same random numbers, so a trajectory does not depend on when lists are rebuilt.

Example::

    md = JaxMD(model, atoms, ensemble="langevin", timestep_fs=0.5, temperature_K=300)
    md.run(10_000, interval=100, callback=lambda md: print(md.step, md.temperature()))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from so3krates.compile import jit
from so3krates.graph import check_structure
from so3krates.inference.batches import energy_forces_fn, padded_atoms, template_batch
from so3krates.inference.force_field import ForceField
from so3krates.inference.neighbours import Neighbours, SkinNeighbourList, check_close_pairs
from so3krates.md.drivers import ENSEMBLES, ase_dynamics, drift_per_atom_per_ps, initial_velocities
from so3krates.md.integrators import MDState, baoab_langevin, bussi, kinetic_energy, velocity_verlet
from so3krates.md.limits import DynamicsBlewUp, Limits, crossed_on_device, observe
from so3krates.potential import reference_energy

__all__ = ["ENSEMBLES", "EngineStats", "JaxMD", "ase_dynamics", "drift_per_atom_per_ps", "initial_velocities"]

# No atom moves this far (Å) in one step of any sane MD; the engine stops instead of building a list there.
MAX_JUMP = 100.0

# Status codes of a chunk.
_OK, _REBUILD, _NOT_FINITE, _LIMIT = 0, 1, 2, 3


@dataclass
class EngineStats:
    """Book-keeping of a run: neighbour-list builds, capacity growths, chunk calls, rejected steps."""

    neighbour_builds: int = 0
    capacity_grows: int = 0
    chunks: int = 0
    rejected_steps: int = 0


def _check_settings(atoms: Atoms, ensemble: str, timestep_fs: float, temperature_K: float) -> None:
    """Refuse settings the JAX engine cannot run, with a message that says what to do instead."""
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
    if timestep_fs <= 0:
        raise ValueError(f"timestep must be positive, got {timestep_fs} fs")
    if atoms.constraints:
        names = ", ".join(type(c).__name__ for c in atoms.constraints)
        raise ValueError(
            f"the JAX engine does not apply constraints ({names}); "
            "use the ASE engine (ase_dynamics with So3kratesCalculator, or so3krates md --engine ase)"
        )
    if ensemble != "nve" and temperature_K <= 0:
        raise ValueError(f"{ensemble} needs a positive temperature, got {temperature_K} K")
    if not np.isfinite(atoms.get_momenta()).all():
        raise ValueError("the initial momenta are not finite")
    if ensemble == "nvt" and np.allclose(atoms.get_momenta(), 0.0):
        raise ValueError("the Bussi thermostat rescales velocities: set initial velocities first")


def _step_function(
    fn: Callable, ensemble: str, dt: float, temperature_K: float, friction_per_ps: float, taut_fs: float
) -> Callable:
    """The integrator's step function for ``ensemble`` (dt in ASE time units)."""
    if ensemble == "nve":
        return velocity_verlet(fn, dt)[1]
    if ensemble == "langevin":
        return baoab_langevin(fn, dt, temperature_K, friction_per_ps / (1000.0 * units.fs))[1]
    return bussi(fn, dt, temperature_K, taut_fs * units.fs)[1]


class JaxMD:
    """Molecular dynamics of one structure with a So3krates model, integrated entirely in JAX.

    Args:
        model: the potential, its variables and known elements (:func:`so3krates.inference.load_force_field`).
        atoms: initial structure; its momenta (``atoms.get_momenta()``) are the initial momenta, so
            set them first (e.g. :func:`initial_velocities`). The cell is fixed during the run.
        ensemble: "nve" (velocity Verlet), "langevin" (BAOAB) or "nvt" (Bussi velocity rescaling).
        timestep_fs: time step (fs).
        temperature_K: bath temperature for "langevin" and "nvt".
        friction_per_ps: Langevin friction γ (1/ps).
        taut_fs: Bussi coupling time τ (fs).
        skin: neighbour-list skin (Å).
        headroom: edge capacity = bucket(headroom · pairs).
        seed: PRNG seed of the thermostats.
        tabulate: use the radial-filter interpolation table (faster; ~1e-6 relative in float32).
        dtype: dtype of positions and momenta; default the model's.
        limits: :class:`~so3krates.md.limits.Limits` that every step is checked against inside the
            compiled chunk (temperature, largest force, closest pair); None: none, only non-finite
            numbers stop the run. ``Limits.default(temperature_K)`` gives the command's defaults.

    Attributes:
        state: the current :class:`~so3krates.md.integrators.MDState` (on the device).
        neighbours: the current :class:`~so3krates.inference.neighbours.Neighbours` (on the device).
        stats: :class:`EngineStats`.
    """

    def __init__(
        self,
        model: ForceField,
        atoms: Atoms,
        ensemble: str = "nve",
        timestep_fs: float = 0.5,
        temperature_K: float = 300.0,
        friction_per_ps: float = 10.0,
        taut_fs: float = 100.0,
        skin: float = 0.5,
        headroom: float = 1.25,
        seed: int = 0,
        tabulate: bool = True,
        dtype: Any = None,
        limits: Limits | None = None,
    ) -> None:
        _check_settings(atoms, ensemble, timestep_fs, temperature_K)
        positions = np.asarray(atoms.positions, np.float64)
        numbers = np.asarray(atoms.numbers, np.int32)
        self.cell = np.asarray(atoms.cell, np.float64)
        self.pbc = np.asarray(atoms.pbc, bool)
        check_structure(positions, numbers, self.cell, self.pbc)
        model.check_elements(numbers)

        self.model = model
        self.atoms_template = atoms.copy()
        self.atoms_template.calc = None
        self.ensemble = ensemble
        self.timestep_fs = float(timestep_fs)
        self.temperature_K = float(temperature_K)
        self.n_atoms = len(numbers)
        self.stats = EngineStats()
        self.dtype = jnp.dtype(dtype or model.potential.config.dtype)

        self.neighbour_list = SkinNeighbourList(model.r_cut, skin, headroom, padded_atoms(self.n_atoms) - 1)
        host_neighbours = self.neighbour_list.build(positions, self.cell, self.pbc)
        self._template_host = template_batch(
            positions,
            numbers,
            self.cell,
            self.pbc,
            host_neighbours,
            all_pairs=model.potential.config.nonlocal_correction,
            r_cut=self.neighbour_list.r_cut,
        )
        self._params = {
            "variables": model.potential.prepare(model.variables, tabulate),
            "template": jax.device_put(self._template_host),
        }
        self.limits = limits or Limits()
        self._params["limits"] = jnp.asarray(self.limits.as_array(np.float64), self.dtype)
        self.neighbours = self._to_device(host_neighbours)

        fn = _skip_when_stale(energy_forces_fn(model.potential, self.n_atoms), 0.5 * float(skin))
        dt = self.timestep_fs * units.fs
        self._step_fn = _step_function(fn, ensemble, dt, temperature_K, friction_per_ps, taut_fs)

        self.state = self._initial_state(atoms, positions, seed)
        # One compiled chunk per potential and integrator settings, kept on the potential: a second run
        # with the same settings and size (another structure, new weights of the same shapes) reuses it.
        key = (self.n_atoms, ensemble, float(dt), float(temperature_K), float(friction_per_ps), float(taut_fs))
        key += (float(skin), str(self.dtype))
        cache = model.potential.compiled
        if key not in cache:
            cache[key] = jit(self._make_chunk(0.5 * float(skin)))
        self._chunk = cache[key]

    def _initial_state(self, atoms: Atoms, positions: np.ndarray, seed: int) -> MDState:
        """The state at ``positions``, with the host's float64 reference energy kept for the total.

        The forces come through the potential's own jitted entry point rather than the integrator's
        init_fn: the same padded shapes as the calculator's, so its compiled function is reused."""
        model = self.model
        batch = self._template_host.replace(positions=self._template_host.positions.copy())
        batch.positions[: self.n_atoms] = positions
        initial = model.potential.energy_forces(self._params["variables"], batch)
        self._reference_energy = float(reference_energy(model.variables["normalization"], batch)[0])
        return MDState(
            positions=jnp.asarray(positions, self.dtype),
            momenta=jnp.asarray(atoms.get_momenta(), self.dtype),
            forces=jnp.asarray(initial["forces"][: self.n_atoms], self.dtype),
            masses=jnp.asarray(atoms.get_masses(), self.dtype),
            energy=jnp.asarray(initial["interaction_energy"][0], self.dtype),
            key=jax.random.PRNGKey(seed),
            step=jnp.zeros((), jnp.int32),
        )

    # -- the compiled chunk ----------------------------------------------------------------------
    def _make_chunk(self, max_move: float) -> Callable[..., tuple]:
        step_fn = self._step_fn
        limit = max_move * max_move

        def chunk(state: MDState, neighbours: Neighbours, n_steps: jax.Array, params: dict[str, Any]) -> tuple:
            """Up to ``n_steps`` steps; returns (state, steps taken, status, positions of the last proposal,
            its (temperature, largest force, closest pair))."""
            params = dict(params)
            limits = params.pop("limits")
            edges = (neighbours.edge_i, neighbours.edge_j, neighbours.edge_shift, neighbours.edge_mask)
            cell = params["template"].cell[0]

            def cond(carry: tuple) -> jax.Array:
                i, _, status, _, _ = carry
                return (i < n_steps) & (status == _OK)

            def body(carry: tuple) -> tuple:
                i, current, _, _, _ = carry
                proposed = step_fn(current, neighbours, **params)
                moved = jnp.max(jnp.sum((proposed.positions - neighbours.reference) ** 2, axis=-1))
                finite = jnp.isfinite(proposed.energy) & jnp.all(jnp.isfinite(proposed.positions))
                finite &= jnp.all(jnp.isfinite(proposed.forces)) & jnp.all(jnp.isfinite(proposed.momenta))
                observed = observe(
                    proposed.positions, proposed.momenta, proposed.forces, proposed.masses, edges, cell
                ).astype(limits.dtype)
                # A rejected (stale-list) step has no forces, so it is checked against the limits when repeated.
                status = jnp.where(
                    ~finite,
                    _NOT_FINITE,
                    jnp.where(moved > limit, _REBUILD, jnp.where(crossed_on_device(observed, limits), _LIMIT, _OK)),
                ).astype(jnp.int32)
                # Keep the step only if its forces were computed with a complete neighbour list and it is sane.
                accept = status == _OK
                new = jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), proposed, current)
                return i + accept.astype(i.dtype), new, status, proposed.positions, observed

            init = (jnp.zeros((), jnp.int32), state, jnp.int32(_OK), state.positions, jnp.zeros(3, limits.dtype))
            i, state, status, proposal, observed = jax.lax.while_loop(cond, body, init)
            return state, i, status, proposal, observed

        return chunk

    def _to_device(self, neighbours: Neighbours) -> Neighbours:
        return jax.device_put(neighbours.replace(reference=np.asarray(neighbours.reference, self.dtype)))

    def _rebuild(self, positions: np.ndarray) -> None:
        positions = np.asarray(positions, np.float64)
        capacity = self.neighbour_list.capacity
        host = self.neighbour_list.build(positions, self.cell, self.pbc)
        try:
            check_close_pairs(positions, self.cell, host, where=f"MD step {self.step + 1}")
        except ValueError as err:  # atoms ran into each other: the dynamics, not the input, went wrong
            raise DynamicsBlewUp(self.step + 1, "invalid", detail=str(err)) from None
        if host.capacity != capacity:  # grown: the template's padded edge count must follow (recompiles)
            self._template_host = self._template_host.replace(
                edge_i=host.edge_i, edge_j=host.edge_j, edge_shift=host.edge_shift, edge_mask=host.edge_mask
            )
            self._params["template"] = jax.device_put(self._template_host)
            self.stats.capacity_grows += 1
        self.neighbours = self._to_device(host)
        self.stats.neighbour_builds += 1

    # -- running -----------------------------------------------------------------------------------
    @property
    def step(self) -> int:
        return int(self.state.step)

    def run(self, steps: int, interval: int = 100, callback: Callable[[JaxMD], Any] | None = None) -> MDState:
        """Take ``steps`` steps; call ``callback(self)`` whenever the step count is a multiple of ``interval``.

        Chunks end on multiples of ``interval`` (and early for a neighbour-list rebuild), so the
        callback sees every such step. Raises :class:`~so3krates.md.limits.DynamicsBlewUp` (a
        ``FloatingPointError``) if a step gives non-finite numbers, crosses ``self.limits`` or puts two
        atoms on top of each other: the state is then that of the step before (the last good one).
        ``RuntimeError`` if an atom moves more than skin / 2 in a single step.
        """
        if interval < 1:
            raise ValueError(f"interval must be ≥ 1, got {interval}")
        target = self.step + int(steps)
        stuck = 0
        while self.step < target:
            n = min(interval - self.step % interval, target - self.step)
            state, taken, status, proposal, observed = self._chunk(
                self.state, self.neighbours, jnp.int32(n), self._params
            )
            taken, status = int(taken), int(status)
            self.state = state
            self.stats.chunks += 1
            if status == _NOT_FINITE:
                raise DynamicsBlewUp(self.step + 1, "not finite")
            if status == _LIMIT:
                # Compared with the limits as the chunk saw them (in the model's dtype).
                limits = Limits(*(float(v) for v in np.asarray(self._params["limits"])))
                crossed = limits.crossed(*(float(v) for v in np.asarray(observed)))
                raise DynamicsBlewUp(self.step + 1, *(crossed or ("not finite",)))
            if status == _REBUILD:
                self.stats.rejected_steps += 1
                stuck = stuck + 1 if taken == 0 else 0
                if stuck > 1:  # two rejections with no step between: cannot happen for a deterministic step
                    raise RuntimeError(f"step {self.step + 1} keeps outrunning its fresh neighbour list")
                # The rejected step's positions depend only on the old forces (and its random numbers,
                # which the repeated step draws again), so a list built there is exact for the repeat.
                proposal = np.asarray(proposal, np.float64)
                jump = float(np.max(np.abs(proposal - np.asarray(self.state.positions, np.float64))))
                if not jump <= MAX_JUMP:  # no neighbour search at positions flung that far (or NaN)
                    self._flung(jump, observed)
                self._rebuild(proposal)
            else:
                stuck = 0
            if taken and self.step % interval == 0 and callback is not None:
                callback(self)
        return self.state

    def _flung(self, jump: float, observed: jax.Array) -> None:
        """Raise for a step that moved an atom ``jump`` > MAX_JUMP Å: as a temperature above the limit if
        the step's momenta (before its unevaluated forces) say so, else as the jump."""
        temperature = float(np.asarray(observed)[0])
        if temperature > float(np.asarray(self._params["limits"])[0]):
            raise DynamicsBlewUp(self.step + 1, "temperature", temperature, self.limits.max_temperature_K)
        raise DynamicsBlewUp(self.step + 1, "invalid", detail=f"an atom moved {jump:.3g} Å in one step")

    # -- observables -------------------------------------------------------------------------------
    def potential_energy(self) -> float:
        """The total potential energy, eV: the state's interaction energy plus the reference energy
        Σ_i shift[z_i] + c, added in float64 (the integrators carry the interaction energy only)."""
        return float(self.state.energy) + self._reference_energy

    def kinetic_energy(self) -> float:
        return float(kinetic_energy(self.state.momenta, self.state.masses))

    def temperature(self) -> float:
        """Instantaneous temperature with 3n degrees of freedom (ASE's convention), K."""
        return 2.0 * self.kinetic_energy() / (3 * self.n_atoms * units.kB)

    def time_ps(self) -> float:
        return self.step * self.timestep_fs / 1000.0

    def atoms(self) -> Atoms:
        """The current structure as ``ase.Atoms`` with momenta, energy and forces attached."""
        state = jax.device_get(self.state)
        atoms = self.atoms_template.copy()
        atoms.positions = np.asarray(state.positions, np.float64)
        atoms.set_momenta(np.asarray(state.momenta, np.float64), apply_constraint=False)
        atoms.calc = SinglePointCalculator(
            atoms, energy=float(state.energy) + self._reference_energy, forces=np.asarray(state.forces, np.float64)
        )
        return atoms


def _skip_when_stale(fn: Callable[..., tuple[jax.Array, jax.Array]], max_move: float) -> Callable:
    """``fn`` that does not evaluate the model at positions its neighbour list no longer covers.

    The chunk rejects such a step anyway (same criterion, same numbers), so its forces are never used;
    ``lax.cond`` runs only the taken branch, which saves the model call of every rejected step.
    """
    limit = max_move * max_move

    def guarded(positions: jax.Array, neighbours: Neighbours, **params: Any) -> tuple[jax.Array, jax.Array]:
        moved = jnp.max(jnp.sum((positions - neighbours.reference) ** 2, axis=-1))

        def skipped() -> tuple[jax.Array, jax.Array]:
            energy, forces = jax.eval_shape(lambda: fn(positions, neighbours, **params))
            return jnp.zeros(energy.shape, energy.dtype), jnp.zeros(forces.shape, forces.dtype)

        return jax.lax.cond(moved > limit, skipped, lambda: fn(positions, neighbours, **params))

    return guarded
