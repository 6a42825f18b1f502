"""Limits that tell an MD run which is blowing up from one that is merely hot: temperature, largest force,
closest pair of atoms.

A time step that is too large, or a structure the model was not trained near, rarely produces a NaN at
once: the atoms first heat up by thousands of kelvin, get kicked by forces no bond produces, or run
into each other, and a run that only watched for NaN would write hours of such frames and exit 0. The
engines stop at the first step that crosses a limit, keep the state of the step before (the last good
one) and raise :class:`DynamicsBlewUp` naming the limit, the step and the value.

Defaults (:meth:`Limits.default`), chosen so that a thermostatted or NVE run at its target
temperature never trips them while a blow-up trips them within a few steps:

* temperature above ``max(10 T, T + 5000 K)`` (T: the target, or initial, temperature). The
  instantaneous temperature of a 3-atom molecule at 300 K fluctuates by ±50 %, not by 5000 K
  (that is 0.65 eV of kinetic energy per atom: bonds break before that); 10 T leaves room for
  annealing runs at thousands of kelvin.
* a force above 50 eV/Å on any atom: chemical forces in MD at up to a few thousand kelvin are below
  ~10–20 eV/Å; 50 eV/Å means two atoms are being pushed into each other.
* two atoms (or periodic images) closer than 0.5 Å: shorter than any bond (H₂: 0.74 Å), and well
  inside the repulsive wall a trained model has seen.

Each limit can be changed or switched off (``inf`` for the maxima, 0 for the distance;
``so3krates md --max-temperature 0`` etc.).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms, units

DEFAULT_MAX_FORCE = 50.0  # eV/Å
DEFAULT_MIN_DISTANCE = 0.5  # Å
HEATING_ALLOWANCE_K = 5000.0  # the default temperature limit is at least this far above the target


def default_max_temperature(temperature_K: float) -> float:
    """``max(10 T, T + 5000 K)``: the default temperature limit of a run at ``temperature_K``."""
    temperature_K = max(float(temperature_K), 0.0)
    return max(10.0 * temperature_K, temperature_K + HEATING_ALLOWANCE_K)


@dataclass(frozen=True)
class Limits:
    """What an MD step may not cross; ``inf`` (maxima) or 0 (distance) switches a limit off.

    Attributes:
        max_temperature_K: instantaneous temperature (3n degrees of freedom, as in the energy log), K.
        max_force: largest force on one atom (its norm), eV/Å.
        min_distance: closest pair of atoms or periodic images, Å.
    """

    max_temperature_K: float = math.inf
    max_force: float = math.inf
    min_distance: float = 0.0

    def __post_init__(self) -> None:
        for name in ("max_temperature_K", "max_force", "min_distance"):
            value = getattr(self, name)
            if math.isnan(value) or value < 0:
                raise ValueError(f"{name} must be ≥ 0, got {value}")

    @classmethod
    def default(cls, temperature_K: float) -> Limits:
        """The defaults of a run at ``temperature_K`` (see the module's docstring)."""
        return cls(default_max_temperature(temperature_K), DEFAULT_MAX_FORCE, DEFAULT_MIN_DISTANCE)

    def as_array(self, dtype: object) -> np.ndarray:
        """(max temperature, max force, min distance) for the compiled chunk."""
        return np.array([self.max_temperature_K, self.max_force, self.min_distance], dtype)

    def crossed(self, temperature_K: float, max_force: float, min_distance: float) -> tuple[str, float, float] | None:
        """(quantity, value, limit) of the first limit these values cross, or None.

        Non-finite values (a NaN force) cross the force or temperature limit whatever it is."""
        if not (temperature_K <= self.max_temperature_K):  # also NaN
            return "temperature", temperature_K, self.max_temperature_K
        if not (max_force <= self.max_force):
            return "force", max_force, self.max_force
        if min_distance < self.min_distance:
            return "distance", min_distance, self.min_distance
        return None


# The flag that sets each limit, and what a step that crosses it did.
LIMIT_FLAGS = {
    "temperature": ("--max-temperature", "temperature {value:.4g} K, above the limit of {limit:.4g} K"),
    "force": ("--max-force", "a force of {value:.4g} eV/Å on one atom, above the limit of {limit:.4g} eV/Å"),
    "distance": ("--min-distance", "two atoms {value:.3g} Å apart, closer than the limit of {limit:.3g} Å"),
    "not finite": ("", "non-finite energy, forces or positions"),
    "invalid": ("", "{detail}"),
}


class DynamicsBlewUp(FloatingPointError):
    """An MD step crossed a :class:`Limits` limit, produced non-finite numbers or an invalid structure.

    Attributes:
        step: the step that failed (the engine's state is the step before it, the last good one).
        quantity: "temperature", "force", "distance", "not finite" or "invalid" (``detail`` says why,
            e.g. overlapping atoms found at a neighbour-list rebuild).
        value, limit: what the step reached and the limit it crossed (NaN where there is none).
        flag: the ``so3krates md`` option that sets the limit ("" for none).
        what: what the step did, in words (the message without the step and the advice).
    """

    def __init__(
        self, step: int, quantity: str, value: float = math.nan, limit: float = math.nan, detail: str = ""
    ) -> None:
        self.step, self.quantity, self.value, self.limit = int(step), quantity, float(value), float(limit)
        self.flag = LIMIT_FLAGS[quantity][0]
        self.what = LIMIT_FLAGS[quantity][1].format(value=value, limit=limit, detail=detail)
        super().__init__(self.message())

    def message(self, first_step: int = 0) -> str:
        """The message, with the step counted from ``first_step`` (a run appended to an earlier one)."""
        return (
            f"the dynamics blew up at step {first_step + self.step}: {self.what} (a time step too large, or a "
            "structure outside the model's training data)"
        )


def observe(
    positions: jax.Array, momenta: jax.Array, forces: jax.Array, masses: jax.Array, edges: tuple, cell: jax.Array
) -> jax.Array:
    """(temperature K, largest force eV/Å, closest listed pair Å) of one state, inside a compiled step.

    ``edges`` = (edge_i, edge_j, edge_shift, edge_mask) of a neighbour list whose radius exceeds the
    distance limit (padding edges, masked off, may point past the real atoms)."""
    n = positions.shape[0]
    kinetic = 0.5 * jnp.sum(momenta**2 / masses[:, None])
    temperature = 2.0 * kinetic / (3 * n * units.kB)
    largest = jnp.sqrt(jnp.max(jnp.sum(forces**2, axis=-1)))
    edge_i, edge_j, edge_shift, edge_mask = edges
    vectors = positions[edge_j] - positions[edge_i] + edge_shift.astype(positions.dtype) @ cell.astype(positions.dtype)
    distances = jnp.where(edge_mask, jnp.sqrt(jnp.sum(vectors**2, axis=-1)), jnp.inf)
    closest = jnp.min(distances, initial=jnp.inf)
    return jnp.stack([temperature, largest, closest.astype(temperature.dtype)])


def crossed_on_device(observed: jax.Array, limits: jax.Array) -> jax.Array:
    """True where :func:`observe`'s values cross ``limits`` (:meth:`Limits.as_array`); NaN crosses."""
    return ~(observed[0] <= limits[0]) | ~(observed[1] <= limits[1]) | (observed[2] < limits[2])


def frame_values(atoms: Atoms, min_distance: float, neighbours: Any = None) -> tuple[float, float, float]:
    """(temperature K, largest force eV/Å, closest pair Å) of a structure with momenta and forces, on the host.

    The closest pair is looked for among the pairs of ``neighbours`` (a current
    :class:`~so3krates.inference.neighbours.Neighbours` list of radius > ``min_distance``: the engine's or the
    calculator's, so no second neighbour search); none given, or ``min_distance`` 0: ``inf``."""
    n = len(atoms)
    temperature = 2.0 * float(atoms.get_kinetic_energy()) / (3 * n * units.kB)
    forces = np.asarray(atoms.get_forces(), np.float64)
    largest = float(np.sqrt(np.max(np.sum(forces**2, axis=1)))) if n else 0.0
    closest = math.inf
    if neighbours is not None and min_distance > 0:
        mask = np.asarray(neighbours.edge_mask)
        i, j = np.asarray(neighbours.edge_i)[mask], np.asarray(neighbours.edge_j)[mask]
        positions, cell = np.asarray(atoms.positions, np.float64), np.asarray(atoms.cell, np.float64)
        if len(i):
            vectors = positions[j] - positions[i] + np.asarray(neighbours.edge_shift)[mask] @ cell
            closest = float(np.linalg.norm(vectors, axis=1).min())
    return temperature, largest, closest


def check_frame(atoms: Atoms, limits: Limits, step: int, neighbours: Any = None) -> None:
    """Raise :class:`DynamicsBlewUp` if ``atoms`` (momenta and forces attached) is not finite or crosses a
    limit (the distance limit among the pairs of ``neighbours``, see :func:`frame_values`)."""
    if not np.isfinite(atoms.positions).all():
        raise DynamicsBlewUp(step, "not finite")
    temperature, largest, closest = frame_values(atoms, limits.min_distance, neighbours)
    if not (math.isfinite(temperature) and math.isfinite(largest)):
        raise DynamicsBlewUp(step, "not finite")
    crossed = limits.crossed(temperature, largest, closest)
    if crossed is not None:
        raise DynamicsBlewUp(step, *crossed)


class AseWatch:
    """An observer for ASE's integrators: checks every step against ``limits`` and keeps the last good frame.

    The closest pair is found in the neighbour list of the atoms' calculator (its ``neighbours``
    attribute, as :class:`~so3krates.calculator.So3kratesCalculator` has), so the check costs no
    neighbour search.

    Attach it before any observer that writes frames (``dynamics.attach(watch, interval=1)``), so that a
    step that crosses a limit is never written. ``last_good`` is a copy of the structure (momenta,
    energy, forces) at ``last_good_step``.
    """

    def __init__(self, atoms: Atoms, dynamics: object, limits: Limits) -> None:
        self.atoms, self.dynamics, self.limits = atoms, dynamics, limits
        self.last_good: Atoms | None = None
        self.last_good_step = -1

    def __call__(self) -> None:
        from ase.calculators.singlepoint import SinglePointCalculator

        step = int(self.dynamics.nsteps)
        check_frame(self.atoms, self.limits, step, getattr(self.atoms.calc, "neighbours", None))
        frame = self.atoms.copy()
        frame.calc = SinglePointCalculator(
            frame, energy=self.atoms.get_potential_energy(), forces=self.atoms.get_forces()
        )
        self.last_good, self.last_good_step = frame, step
