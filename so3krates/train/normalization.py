"""Per-element energy shift and scale of the atomic energies, and the energy constant of A.14.

The model's atomic energy is E_i = scale[z_i] · MLP(x_i) + shift[z_i] (see ``So3krates``), so the network
only has to learn what is left after a per-element reference energy, in units of a typical force. The
shifts and c are float64 and added on the host (``so3krates.potential.reference_energy``).

* shift: least-squares fit of E_k ≈ Σ_z n_kz · s_z on the training set (n_kz: atoms of element z in
  structure k). The authors' release used the mean energy per atom; the per-element fit is better for
  mixed compositions and identical to it for a single composition up to how the constant is shared.
  With one composition only the system is rank deficient; lstsq then returns the minimum-norm
  solution, which still reproduces the mean energy exactly.
* scale: root mean square of the training forces (eV/Å), the same for every element.
* energy constant c (A.14, eqs. 36–37): with β = 1 no energy enters the loss, so the energy is known
  up to a constant; minimising Σ_k (f_E(R_k) + c − E_k)² gives c = mean_k(E_k − f_E(R_k)).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# The per-element energy shift and force scale are fitted on at most this many training frames (a
# random subset of a larger set): enough for a handful of numbers, and streams never load everything.
NORMALIZATION_FRAMES = 50_000


def composition_matrix(numbers: Sequence[np.ndarray], max_atomic_number: int) -> np.ndarray:
    """(M, Z+1) counts: entry (k, z) is the number of atoms of element z in structure k."""
    counts = np.zeros((len(numbers), max_atomic_number + 1))
    for k, z in enumerate(numbers):
        np.add.at(counts[k], np.asarray(z, dtype=np.int64), 1.0)
    return counts


def fit_energy_shifts(numbers: Sequence[np.ndarray], energies: np.ndarray, max_atomic_number: int) -> np.ndarray:
    """Per-element shifts s (Z+1,) minimising Σ_k (E_k − Σ_z n_kz s_z)²; zero for absent elements.

    Args:
        numbers: atomic numbers of each training structure.
        energies: (M,) total energies (eV).
        max_atomic_number: size of the model's element table minus one.
    """
    energies = np.asarray(energies, dtype=np.float64)
    counts = composition_matrix(numbers, max_atomic_number)
    present = np.flatnonzero(counts.sum(axis=0) > 0)
    shifts = np.zeros(max_atomic_number + 1)
    if len(energies) == 0 or len(present) == 0:
        return shifts
    solution, *_ = np.linalg.lstsq(counts[:, present], energies, rcond=None)
    shifts[present] = solution
    return shifts


def force_rms(forces: Sequence[np.ndarray] | None) -> float:
    """sqrt(mean F²) over all components of all training forces (eV/Å); 1.0 without forces."""
    if not forces:
        return 1.0
    flat = np.concatenate([np.asarray(f, dtype=np.float64).reshape(-1) for f in forces])
    rms = float(np.sqrt(np.mean(flat**2))) if flat.size else 0.0
    return rms if np.isfinite(rms) and rms > 1e-8 else 1.0


def initial_normalization(
    numbers: Sequence[np.ndarray],
    energies: np.ndarray | None,
    forces: Sequence[np.ndarray] | None,
    max_atomic_number: int,
    dtype: str = "float32",
) -> dict[str, np.ndarray]:
    """The ``normalization`` collection for a training set: scale (Z+1,) in ``dtype``, shift (Z+1,) and
    energy_offset () in float64.

    Without energies the shift is zero; with forces only the energy is then fixed by :func:`energy_constant`.
    """
    n = max_atomic_number + 1
    shift = np.zeros(n) if energies is None else fit_energy_shifts(numbers, energies, max_atomic_number)
    scale = np.full(n, force_rms(forces))
    return {
        "scale": scale.astype(dtype),
        "shift": shift,  # float64 whatever the model's dtype: added on the host (potential.reference_energy)
        "energy_offset": np.zeros((), np.float64),
    }


def normalization_from_frames(
    frames: Any,
    indices: np.ndarray,
    max_atomic_number: int,
    dtype: str,
    seed: int,
    max_frames: int = NORMALIZATION_FRAMES,
) -> dict[str, np.ndarray]:
    """:func:`initial_normalization` of ``frames`` at ``indices`` (a seeded subset of ``max_frames`` if more)."""
    if len(indices) > max_frames:
        indices = np.sort(np.random.default_rng(seed).choice(indices, max_frames, replace=False))
    return initial_normalization(
        [frames.numbers[int(i)] for i in indices],
        None if frames.energy is None else np.asarray(frames.energy[indices]),
        None if frames.forces is None else [frames.forces[int(i)] for i in indices],
        max_atomic_number,
        dtype,
    )


def energy_constant(reference: np.ndarray, predicted: np.ndarray) -> float:
    """c = mean(E_ref − E_pred) (A.14, eq. 37): the least-squares constant added to every energy."""
    reference = np.asarray(reference, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    if reference.size == 0:
        return 0.0
    return float(np.mean(reference - predicted))


def residual_energies(frames: Any, indices: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """E_k − Σ_i shift[z_i] of the frames at ``indices``, in float64: what c (A.14) is fitted to."""
    shift = np.asarray(shift, np.float64)
    return np.asarray(frames.energy[indices], np.float64) - np.array(
        [shift[frames.numbers[int(k)]].sum() for k in indices]
    )


def energy_constant_of_shards(reference: np.ndarray, predicted: np.ndarray) -> float:
    """:func:`energy_constant` over every process's shard (each passes its own; the same c comes back)."""
    import jax

    if jax.process_count() == 1:
        return energy_constant(reference, predicted)
    from jax.experimental import multihost_utils

    sums = multihost_utils.process_allgather(np.array([np.sum(reference - predicted), len(reference)]))
    return float(np.sum(sums[:, 0]) / max(np.sum(sums[:, 1]), 1))
