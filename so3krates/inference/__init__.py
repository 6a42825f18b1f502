"""Inference: a trained force field evaluated on structures, shared by the calculator, ``evaluate`` and MD.

* :mod:`so3krates.inference.force_field`: :class:`ForceField` (potential, variables, known elements) and
  :func:`load_force_field` from a run directory;
* :mod:`so3krates.inference.neighbours`: Verlet neighbour lists with a skin and a fixed capacity;
* :mod:`so3krates.inference.batches`: one-structure batches of a fixed padded shape and the model as the
  integrators call it.
"""

from so3krates.inference.batches import energy_forces_fn, padded_atoms, template_batch, with_neighbours
from so3krates.inference.force_field import ForceField, check_elements, load_force_field
from so3krates.inference.neighbours import Neighbours, SkinNeighbourList

__all__ = [
    "ForceField",
    "Neighbours",
    "SkinNeighbourList",
    "check_elements",
    "energy_forces_fn",
    "load_force_field",
    "padded_atoms",
    "template_batch",
    "with_neighbours",
]
