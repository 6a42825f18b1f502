"""ASE calculator for a trained So3krates model: energy, forces and (periodic systems) stress in eV and Å.

The model works in eV and Å whatever units the training data came in, so the results need no
conversion. Between calls the calculator keeps

* a Verlet neighbour list built with ``r_cut + skin`` and reused until an atom moved more than
  ``skin / 2`` (see :mod:`so3krates.inference.neighbours` for why the extra pairs are exactly harmless), and
* fixed padded sizes (atoms, and edges bucketed with headroom), so an MD run or a relaxation compiles
  the model once; the edge capacity only grows, and only when a rebuild no longer fits.

A change of atomic numbers, cell or pbc rebuilds everything and validates the structure again
(:func:`~so3krates.graph.check_structure`: finite coordinates, no overlapping atoms, a non-degenerate
periodic cell) and its elements (only those the model was trained on).

Example::

    atoms.calc = So3kratesCalculator("runs/ethanol")
    atoms.get_potential_energy(), atoms.get_forces()
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from so3krates.graph import Batch, check_structure
from so3krates.inference.batches import padded_atoms, template_batch, with_neighbours
from so3krates.inference.force_field import ForceField, load_force_field
from so3krates.inference.neighbours import Neighbours, SkinNeighbourList, check_close_pairs
from so3krates.potential import Potential, Variables
from so3krates.precision import enable_float64

# Keywords of ase.calculators.calculator.Calculator that make sense here (restart files do not).
ASE_KEYWORDS = ("label", "atoms", "directory")


class So3kratesCalculator(Calculator):
    """ASE calculator for a So3krates model.

    Args:
        model_dir: a trained run directory (see ``so3krates train``); or use :meth:`from_potential`.
        skin: neighbour-list skin in Å (list radius r_cut + skin, rebuilt after a move of skin / 2).
        headroom: edge capacity = bucket(headroom · pairs); larger means fewer recompilations when the
            density fluctuates, smaller means less padding work.
        model: an already loaded :class:`~so3krates.inference.ForceField` instead of ``model_dir``.
        tabulate: evaluate the radial filters from an interpolation table (the same forces to float32
            rounding, ~1e-6 relative, or ~1e-7 in float64; faster); False runs the exact MLPs.
        dtype: "float32" or "float64" to run the model in; None: the dtype it was trained in. "float64"
            switches on JAX's 64-bit mode for the process (:func:`so3krates.precision.enable_float64`).
            In either dtype the energy is a float64 sum (the reference energies and the sum over atoms
            are float64 on the host), so it resolves small changes of a large total.
        label, atoms, directory: as for :class:`ase.calculators.calculator.Calculator`. Any other keyword
            is refused (ASE would keep it as an ignored parameter).

    Attributes:
        neighbour_list: the current :class:`~so3krates.inference.neighbours.SkinNeighbourList` (``builds``
            counts neighbour-list builds).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(
        self,
        model_dir: str | Path | None = None,
        skin: float = 0.5,
        headroom: float = 1.25,
        model: ForceField | None = None,
        tabulate: bool = True,
        dtype: str | None = None,
        **kwargs: Any,
    ) -> None:
        unknown = sorted(set(kwargs) - set(ASE_KEYWORDS))
        if unknown:
            raise TypeError(
                f"So3kratesCalculator got unknown keyword argument(s) {', '.join(unknown)}; it takes model_dir, "
                f"model, skin, headroom, tabulate, dtype and ASE's {', '.join(ASE_KEYWORDS)}"
            )
        super().__init__(**kwargs)
        if (model_dir is None) == (model is None):
            raise ValueError("give either model_dir or model (see So3kratesCalculator.from_potential)")
        if dtype == "float64":
            enable_float64()  # asked for explicitly
        if model is None:
            model = load_force_field(model_dir, dtype)
        elif dtype is not None and dtype != model.potential.config.dtype:
            model = model.with_dtype(dtype)
        self.model = model
        if skin < 0:
            raise ValueError(f"skin must be ≥ 0 Å, got {skin}")
        self.skin = float(skin)
        self.headroom = float(headroom)
        self._inference_variables = self.potential.prepare(self.variables, tabulate)
        self.neighbour_list: SkinNeighbourList | None = None
        self._neighbours: Neighbours | None = None
        self._template: Batch | None = None
        self._key: tuple[bytes, bytes, bytes] | None = None  # numbers, cell, pbc of the template
        # Stress costs a strain derivative; once asked for (a cell relaxation), keep computing it so
        # get_forces() and get_stress() on the same positions need only one model call.
        self._with_stress = False

    @classmethod
    def from_potential(
        cls,
        potential: Potential,
        variables: Variables,
        elements: Sequence[int] | None = None,
        skin: float = 0.5,
        **kwargs: Any,
    ) -> So3kratesCalculator:
        """A calculator for an in-memory model; ``elements``: atomic numbers it may be used for (None: any)."""
        elements = None if elements is None else tuple(sorted({int(z) for z in elements}))
        return cls(model=ForceField(potential, variables, elements), skin=skin, **kwargs)

    @property
    def potential(self) -> Potential:
        return self.model.potential

    @property
    def variables(self) -> Variables:
        return self.model.variables

    @property
    def elements(self) -> tuple[int, ...] | None:
        return self.model.elements

    @property
    def neighbours(self) -> Neighbours | None:
        """The current neighbour list (pairs within r_cut + skin of the last build; None before the first
        calculation): every pair now closer than r_cut is in it."""
        return self._neighbours

    # -- ASE interface --------------------------------------------------------------------------
    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(np.any(atoms.pbc))
        if "stress" in properties:
            if not periodic:
                raise PropertyNotImplementedError(
                    "stress is only defined for periodic systems (this structure has pbc = False in every "
                    "direction, so there is no cell volume to divide by)"
                )
            self._with_stress = True
        compute_stress = self._with_stress and periodic

        batch = self._batch(atoms)
        out = self.potential.energy_forces(self._inference_variables, batch, compute_stress=compute_stress)
        n = len(atoms)
        energy = float(out["energy"][0])  # float64: reference energy and sum over atoms on the host
        self.results = {
            "energy": energy,
            "free_energy": energy,  # no electronic entropy in a force field
            "forces": np.asarray(out["forces"][:n], dtype=np.float64),
        }
        if compute_stress:
            self.results["stress"] = full_3x3_to_voigt_6_stress(np.asarray(out["stress"][0], dtype=np.float64))

    # -- neighbour list and padded batch ---------------------------------------------------------
    def _batch(self, atoms: Atoms) -> Batch:
        positions = np.asarray(atoms.positions, dtype=np.float64)
        numbers = np.asarray(atoms.numbers, dtype=np.int32)
        cell = np.asarray(atoms.cell, dtype=np.float64)
        pbc = np.asarray(atoms.pbc, dtype=bool)
        key = (numbers.tobytes(), cell.tobytes(), pbc.tobytes())
        if self._template is None or key != self._key:
            self._rebuild(positions, numbers, cell, pbc, new_system=True)
            self._key = key
        elif self.neighbour_list.needs_rebuild(positions, self._neighbours):
            self._rebuild(positions, numbers, cell, pbc, new_system=False)
        elif not np.isfinite(positions).all():
            check_structure(positions, numbers, cell, pbc)  # raises, naming the atom
        padded = np.zeros((self._template.positions.shape[0], 3))
        padded[: len(positions)] = positions
        return self._template.replace(positions=padded)

    def _rebuild(
        self, positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray, pbc: np.ndarray, new_system: bool
    ) -> None:
        same_atoms = (
            self.neighbour_list is not None
            and self._template is not None
            and (
                np.array_equal(self._template.numbers[: len(numbers)], numbers)
                and len(numbers) == int(self._template.node_mask.sum())
                and np.array_equal(self._template.pbc[0], pbc)
            )
        )
        if not same_atoms:
            # New atoms or pbc: the full validation (coordinates, elements, cell, overlapping atoms).
            check_structure(positions, numbers, cell, pbc)
            self.model.check_elements(numbers)
            n_padded = padded_atoms(len(numbers))
            if self.neighbour_list is None or self.neighbour_list.pad_atom != n_padded - 1:
                self.neighbour_list = SkinNeighbourList(
                    self.potential.config.r_cut, self.skin, self.headroom, n_padded - 1
                )
            # Otherwise (same atom count, e.g. the next frame of a trajectory) the capacity is kept, so
            # the compiled model is reused when the new edges fit.
        else:
            # The same atoms moved or got a new cell (MD, a cell relaxation): cheap checks here, and the
            # overlap check below on the list just built instead of a second neighbour search.
            if not np.isfinite(positions).all() or (pbc.any() and not np.isfinite(cell).all()):
                check_structure(positions, numbers, cell, pbc)  # raises, naming the atom
            if pbc.any() and abs(np.linalg.det(cell)) < 1e-6:
                check_structure(positions, numbers, cell, pbc)  # raises: zero-volume cell
        neighbours = self.neighbour_list.build(positions, cell, pbc)
        if same_atoms:
            check_close_pairs(positions, cell, neighbours)
        if new_system or neighbours.capacity != self._template.edge_i.shape[0]:
            self._template = template_batch(
                positions,
                numbers,
                cell,
                pbc,
                neighbours,
                all_pairs=self.potential.config.nonlocal_correction,
                r_cut=self.neighbour_list.r_cut,
            )
        else:
            self._template = with_neighbours(self._template, neighbours)
        self._neighbours = neighbours
