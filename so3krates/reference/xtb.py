"""GFN-xTB reference labels (energy in eV, forces in eV/Å) through tblite's ASE calculator.

Nothing here is downloaded: tblite ships the GFN1/GFN2 parameters. Every labelled frame carries an
``ase.calculators.singlepoint.SinglePointCalculator`` with ``energy`` and ``forces``, so
``ase.io.write(..., format="extxyz")`` stores them and ``so3krates.data.read_frames`` reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols

__all__ = ["METHODS", "MAX_Z", "canonical_method", "check_elements", "make_calculator", "label", "single_point"]

# Accepted spellings -> tblite method name.
METHODS = {"gfn2": "GFN2-xTB", "gfn2-xtb": "GFN2-xTB", "gfn1": "GFN1-xTB", "gfn1-xtb": "GFN1-xTB"}
MAX_Z = 86  # GFN1/GFN2-xTB are parametrised for H..Rn.


def canonical_method(method: str) -> str:
    """Map ``"gfn2"``, ``"GFN2-xTB"``, ... to tblite's method name; ValueError for anything else."""
    key = str(method).strip().lower()
    if key not in METHODS:
        raise ValueError(f"unknown xTB method {method!r}; choose from GFN2-xTB (gfn2) or GFN1-xTB (gfn1)")
    return METHODS[key]


def check_elements(atoms: Atoms, method: str = "GFN2-xTB", where: str = "structure") -> None:
    """Raise ValueError if ``atoms`` holds an element the xTB method has no parameters for (Z < 1 or Z > 86)."""
    z = np.asarray(atoms.numbers)
    bad = sorted({int(v) for v in z if v < 1 or v > MAX_Z})
    if bad:
        names = ", ".join(f"{chemical_symbols[v] if 0 <= v < len(chemical_symbols) else '?'} (Z={v})" for v in bad)
        raise ValueError(
            f"{where}: {canonical_method(method)} has parameters for H..Rn (Z = 1..{MAX_Z}) only; found {names}"
        )


def make_calculator(
    method: str = "GFN2-xTB",
    electronic_temperature: float = 300.0,
    charge: int = 0,
    uhf: int = 0,
    max_iterations: int = 250,
    accuracy: float = 1.0,
) -> Calculator:
    """A silent (verbosity=0) tblite ASE calculator; ``uhf`` is the number of unpaired electrons.

    ``accuracy`` is tblite's convergence scale (smaller is tighter; 1.0 is its default).
    """
    from tblite.ase import TBLite  # imported lazily: the library is only needed when labelling

    if uhf < 0:
        raise ValueError(f"uhf (unpaired electrons) must be >= 0, got {uhf}")
    if electronic_temperature <= 0:
        raise ValueError(f"electronic temperature must be > 0 K, got {electronic_temperature}")
    if accuracy <= 0 or max_iterations < 1:
        raise ValueError(f"need accuracy > 0 and max_iterations >= 1, got {accuracy} and {max_iterations}")
    return TBLite(
        method=canonical_method(method),
        electronic_temperature=float(electronic_temperature),
        charge=float(charge),
        multiplicity=int(uhf) + 1,
        max_iterations=int(max_iterations),
        accuracy=float(accuracy),
        # verbosity=0: tblite otherwise prints an SCF table for every single point.
        verbosity=0,
    )


def single_point(atoms: Atoms, calc: Calculator, name: str = "frame") -> Atoms:
    """Evaluate ``calc`` on ``atoms``; return a copy with a SinglePointCalculator (energy eV, forces eV/Å).

    Raises:
        ValueError: the SCF did not converge (or tblite failed otherwise), naming ``name``.
    """
    from ase.calculators.calculator import CalculationFailed

    work = atoms.copy()
    work.calc = calc
    try:
        energy = float(work.get_potential_energy())
        forces = np.array(work.get_forces(), dtype=np.float64)
    except CalculationFailed as err:
        # tblite keeps the previous wavefunction as a restart guess; drop it so the next frame starts clean.
        calc.reset()
        if hasattr(calc, "_res"):
            calc._res = None
        msg = str(err).strip() or "tblite failed"
        hint = ""
        if "converge" in msg.lower():
            hint = " (try a higher electronic temperature, --electronic-temperature, or more SCF iterations)"
        raise ValueError(f"{name}: xTB calculation failed: {msg}{hint}") from err
    out = atoms.copy()
    out.calc = SinglePointCalculator(out, energy=energy, forces=forces)
    return out


def label(
    atoms_list: Iterable[Atoms],
    method: str = "GFN2-xTB",
    electronic_temperature: float = 300.0,
    charge: int = 0,
    uhf: int = 0,
    max_iterations: int = 250,
    callback: Callable[[Atoms], None] | None = None,
    accuracy: float = 1.0,
) -> list[Atoms]:
    """Label structures with GFN-xTB energies (eV) and forces (eV/Å).

    Args:
        atoms_list: structures (molecules or periodic); they are not modified.
        method: ``"GFN2-xTB"`` (``"gfn2"``) or ``"GFN1-xTB"`` (``"gfn1"``).
        electronic_temperature: Fermi smearing temperature, K (higher helps SCF convergence of
            near-degenerate systems, e.g. twisted cumulenes).
        charge: total charge, e.
        uhf: number of unpaired electrons (multiplicity - 1).
        max_iterations: SCF iteration limit.
        callback: called with each labelled frame as it is produced (e.g. to append it to a file).
        accuracy: tblite's SCF convergence scale (smaller is tighter).
    Returns:
        Copies of the structures, each with a SinglePointCalculator holding ``energy`` and ``forces``.
    Raises:
        ValueError: an element beyond Rn (checked for all frames before any calculation), an unknown
            method, or an SCF that did not converge (the message names the frame index).
    """
    frames = list(atoms_list)
    method = canonical_method(method)
    for i, atoms in enumerate(frames):
        check_elements(atoms, method, where=f"frame {i}")
    calc = make_calculator(method, electronic_temperature, charge, uhf, max_iterations, accuracy)
    out = []
    for i, atoms in enumerate(frames):
        labelled = single_point(atoms, calc, name=f"frame {i}")
        out.append(labelled)
        if callback is not None:
            callback(labelled)
    return out
