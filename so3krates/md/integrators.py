"""MD integrators as pure JAX functions, in the style of jax-md: ``init_fn, step_fn = integrator(...)``.

Units are ASE's: positions Å, masses amu, energies eV, time in ASE units (``dt = 0.5 * ase.units.fs``),
momenta amu·Å/(ASE time), so that the kinetic energy Σ p²/2m is in eV and trajectories match ASE's
integrators step for step.

``energy_forces_fn(positions, neighbours, **params) -> (energy, forces)`` is the model; ``neighbours`` and
``params`` (e.g. the model variables) are passed through every step unchanged, so the whole step — and
many steps in a ``lax.while_loop`` — compiles into one XLA program.

Example::

    init_fn, step_fn = velocity_verlet(energy_forces_fn, dt=0.5 * units.fs)
    state = init_fn(key, positions, masses, neighbours, momenta=p0, variables=variables)
    state = jax.lax.fori_loop(0, 100, lambda _, s: step_fn(s, neighbours, variables=variables), state)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from ase import units

Array = jax.Array
EnergyForcesFn = Callable[..., tuple[Array, Array]]
InitFn = Callable[..., "MDState"]
StepFn = Callable[..., "MDState"]


@flax.struct.dataclass
class MDState:
    """The full state of an MD run (a pytree; everything needed to continue it bit for bit).

    Attributes:
        positions: (n, 3) Å.  momenta: (n, 3) amu·Å/(ASE time).  forces: (n, 3) eV/Å at ``positions``.
        masses: (n,) amu.  energy: () potential energy at ``positions`` (eV).
        key: PRNG key of the stochastic integrators.  step: number of steps taken.
    """

    positions: Array
    momenta: Array
    forces: Array
    masses: Array
    energy: Array
    key: Array
    step: Array

    @property
    def velocities(self) -> Array:
        """(n, 3) Å per ASE time unit."""
        return self.momenta / self.masses[:, None]


def kinetic_energy(momenta: Array, masses: Array) -> Array:
    """Σ_i p_i² / 2 m_i (eV)."""
    return 0.5 * jnp.sum(momenta**2 / masses[:, None])


def temperature(momenta: Array, masses: Array) -> Array:
    """Instantaneous temperature 2 K / (3 n k_B) in K (3n degrees of freedom, as ASE's ``get_temperature``)."""
    return 2.0 * kinetic_energy(momenta, masses) / (momenta.size * units.kB)


def maxwell_boltzmann(key: Array, masses: Array, temperature_K: float, dtype: Any = None) -> Array:
    """Momenta drawn from the Maxwell–Boltzmann distribution at ``temperature_K``, zero total momentum."""
    dtype = dtype or masses.dtype
    noise = jax.random.normal(key, (masses.shape[0], 3), dtype)
    momenta = noise * jnp.sqrt(masses[:, None] * units.kB * temperature_K)
    # Remove the centre-of-mass drift (as ASE's Stationary) so the system does not fly off.
    return momenta - masses[:, None] * (momenta.sum(0) / masses.sum())


def _init_function(energy_forces_fn: EnergyForcesFn, default_temperature_K: float | None) -> InitFn:
    """The integrators' ``init_fn(key, positions, masses, neighbours, momenta=None, temperature_K=...,
    **params)``: momenta given, or Maxwell–Boltzmann at ``temperature_K`` (default: the bath's), or zero."""

    def init_fn(
        key: Array,
        positions: Array,
        masses: Array,
        neighbours: Any,
        momenta: Array | None = None,
        temperature_K: float | None = default_temperature_K,
        **params: Any,
    ) -> MDState:
        return _initial_state(energy_forces_fn, key, positions, masses, neighbours, momenta, temperature_K, params)

    return init_fn


def _initial_state(
    energy_forces_fn: EnergyForcesFn,
    key: Array,
    positions: Array,
    masses: Array,
    neighbours: Any,
    momenta: Array | None,
    temperature_K: float | None,
    params: dict[str, Any],
) -> MDState:
    positions = jnp.asarray(positions)
    masses = jnp.asarray(masses, positions.dtype)
    key, sub = jax.random.split(key)
    if momenta is None:
        if temperature_K:
            momenta = maxwell_boltzmann(sub, masses, temperature_K, positions.dtype)
        else:
            momenta = jnp.zeros_like(positions)
    energy, forces = energy_forces_fn(positions, neighbours, **params)
    return MDState(
        positions=positions,
        momenta=jnp.asarray(momenta, positions.dtype),
        forces=forces.astype(positions.dtype),
        masses=masses,
        energy=energy.astype(positions.dtype),
        key=key,
        step=jnp.zeros((), jnp.int32),
    )


def velocity_verlet(energy_forces_fn: EnergyForcesFn, dt: float) -> tuple[InitFn, StepFn]:
    """NVE velocity Verlet, identical step for step to ``ase.md.verlet.VelocityVerlet``.

    Args:
        energy_forces_fn: ``(positions, neighbours, **params) -> (energy, forces)``.
        dt: time step in ASE time units (e.g. ``0.5 * ase.units.fs``).
    Returns:
        ``init_fn(key, positions, masses, neighbours, momenta=None, temperature_K=None, **params)`` and
        ``step_fn(state, neighbours, **params)``.
    """

    init_fn = _init_function(energy_forces_fn, None)

    def step_fn(state: MDState, neighbours: Any, **params: Any) -> MDState:
        return _verlet(energy_forces_fn, state, state.momenta, dt, neighbours, params)

    return init_fn, step_fn


def _verlet(
    energy_forces_fn: EnergyForcesFn, state: MDState, momenta: Array, dt: float, neighbours: Any, params: dict
) -> MDState:
    """Kick–drift–kick from ``momenta`` (the state's, or the thermostatted ones)."""
    m = state.masses[:, None]
    p = momenta + 0.5 * dt * state.forces
    x = state.positions + dt * p / m
    energy, forces = energy_forces_fn(x, neighbours, **params)
    forces = forces.astype(x.dtype)
    p = p + 0.5 * dt * forces
    return state.replace(positions=x, momenta=p, forces=forces, energy=energy.astype(x.dtype), step=state.step + 1)


def baoab_langevin(
    energy_forces_fn: EnergyForcesFn, dt: float, temperature_K: float, friction: float
) -> tuple[InitFn, StepFn]:
    """Langevin dynamics with the BAOAB splitting (Leimkuhler & Matthews 2013): NVT, one force call per step.

    B: p += F dt/2;  A: x += p/m dt/2;  O: p ← c₁ p + √(1 − c₁²) √(m k_B T) ξ with c₁ = e^(−γ dt);
    A: x += p/m dt/2;  new forces;  B: p += F dt/2. Configurational averages are exact to O(dt²) and
    the O step is an exact Ornstein–Uhlenbeck solve, so any friction is stable.

    Args:
        energy_forces_fn: the model, as for :func:`velocity_verlet`.
        dt: time step (ASE time units).
        temperature_K: bath temperature (K).
        friction: γ in inverse ASE time units (e.g. ``0.01 / ase.units.fs``).
    """
    if friction < 0:
        raise ValueError(f"friction must be ≥ 0, got {friction}")
    c1 = float(jnp.exp(-friction * dt))
    c2 = float(jnp.sqrt(1.0 - c1 * c1))
    kT = units.kB * temperature_K

    init_fn = _init_function(energy_forces_fn, temperature_K)

    def step_fn(state: MDState, neighbours: Any, **params: Any) -> MDState:
        m = state.masses[:, None]
        key, sub = jax.random.split(state.key)
        p = state.momenta + 0.5 * dt * state.forces
        x = state.positions + 0.5 * dt * p / m
        noise = jax.random.normal(sub, p.shape, p.dtype)
        p = c1 * p + c2 * jnp.sqrt(m * kT) * noise
        x = x + 0.5 * dt * p / m
        energy, forces = energy_forces_fn(x, neighbours, **params)
        forces = forces.astype(x.dtype)
        p = p + 0.5 * dt * forces
        return state.replace(
            positions=x, momenta=p, forces=forces, energy=energy.astype(x.dtype), key=key, step=state.step + 1
        )

    return init_fn, step_fn


def bussi(energy_forces_fn: EnergyForcesFn, dt: float, temperature_K: float, tau: float) -> tuple[InitFn, StepFn]:
    """Canonical sampling through velocity rescaling (Bussi, Donadio & Parrinello 2007), as ``ase.md.bussi.Bussi``.

    Each step rescales all momenta by α (eq. A7: the kinetic energy relaxes to 3n k_B T / 2 with time
    constant τ plus the exactly matching stochastic term), then takes a velocity-Verlet step. Gentler
    than Langevin on the dynamics (one global factor), so diffusion and spectra stay close to NVE.

    Args:
        energy_forces_fn: the model, as for :func:`velocity_verlet`.
        dt: time step (ASE time units).  temperature_K: bath temperature (K).
        tau: coupling time constant (ASE time units, e.g. ``100 * ase.units.fs``).
    """
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    c = float(jnp.exp(-dt / tau))
    kT = units.kB * temperature_K

    init_fn = _init_function(energy_forces_fn, temperature_K)

    def step_fn(state: MDState, neighbours: Any, **params: Any) -> MDState:
        ndof = state.momenta.size
        kinetic = kinetic_energy(state.momenta, state.masses)
        target = 0.5 * ndof * kT
        key, k1, k2 = jax.random.split(state.key, 3)
        r1 = jax.random.normal(k1, (), state.momenta.dtype)
        # Σ_{i≥2} R_i² ~ χ²(ndof − 1) = 2 Γ((ndof − 1)/2)
        sum_r2 = 2.0 * jax.random.gamma(k2, 0.5 * (ndof - 1), (), state.momenta.dtype)
        scaling = (1.0 - c) * target / jnp.maximum(kinetic, 1e-30) / ndof
        alpha2 = c + scaling * (sum_r2 + r1 * r1) + 2.0 * r1 * jnp.sqrt(c * scaling)
        alpha = jnp.sqrt(jnp.maximum(alpha2, 0.0))
        new = _verlet(energy_forces_fn, state, alpha * state.momenta, dt, neighbours, params)
        return new.replace(key=key)

    return init_fn, step_fn
