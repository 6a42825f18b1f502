"""Lebedev quadrature grids on the unit sphere for Euclidean fast attention, and the rule of which grid
integrates which ERoPE frequency (docs/efa.md §3).

The directions and weights are e3x's (``e3x.so3.lebedev_quadrature``); the safe frequencies T(M) and
the checks built on them are this package's.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import jax
import numpy as np

# T(M)/π for every Lebedev grid e3x provides: the largest b with |Σ_m w_m cos(b u_m·n) − sinc(b)| ≤ 1e-5
# for all b' ≤ b, worst case over 300 random directions n plus the axes and the diagonal (our own
# recomputation, step 0.005π; within 0.04π of the paper's Tab. S3 where both exist, and below it where
# the paper is optimistic, e.g. M = 350: 6.295 vs 6.5). tests/test_efa.py re-derives a few entries.
LEBEDEV_SAFE_FREQUENCY: dict[int, float] = {
    6: 0.065, 14: 0.26, 26: 0.535, 38: 0.885, 50: 1.28, 74: 1.675, 86: 2.2, 110: 2.645, 146: 3.16,
    170: 3.86, 194: 4.14, 230: 4.67, 266: 5.205, 302: 5.725, 350: 6.295, 434: 7.365, 590: 9.04,
    770: 10.745, 974: 12.47, 1202: 14.215, 1454: 15.98, 1730: 17.755, 2030: 19.545, 2354: 21.345,
    2702: 23.155, 3074: 24.94, 3470: 26.7, 3890: 28.485, 4334: 30.305, 4802: 32.17, 5294: 34.035,
    5810: 35.91,
}  # fmt: skip
LEBEDEV_SIZES: tuple[int, ...] = tuple(sorted(LEBEDEV_SAFE_FREQUENCY))
# Use at most 95 % of T(M): the table is a worst case over sampled directions, not a proof.
HEADROOM = 0.95


def safe_frequency(num_points: int) -> float:
    """The largest b_max (dimensionless, b = θ·r) allowed on the M-point Lebedev grid: 0.95·T(M)."""
    return HEADROOM * math.pi * LEBEDEV_SAFE_FREQUENCY[num_points]


def lebedev_size(num: int) -> int:
    """The Lebedev grid e3x returns for ``num=num``: the largest size ≤ num (ValueError below 6)."""
    fitting = [m for m in LEBEDEV_SIZES if m <= num]
    if not fitting:
        raise ValueError(f"no Lebedev grid has at most {num} points; the smallest has 6")
    return fitting[-1]


def smallest_safe_grid(max_frequency: float) -> int:
    """The smallest Lebedev size whose safe frequency covers b_max (ValueError beyond the largest)."""
    for m in LEBEDEV_SIZES:
        if max_frequency <= safe_frequency(m):
            return m
    raise ValueError(
        f"b_max = {max_frequency:.4g} ({max_frequency / math.pi:.3g}π) exceeds the safe frequency of the "
        f"largest Lebedev grid (5810 points: {safe_frequency(5810) / math.pi:.3g}π)"
    )


def check_grid(num: int | None, max_frequency: float, exact_size: bool = False) -> int:
    """Choose the grid size and check the safe-frequency rule b_max ≤ 0.95·T(M) (docs/efa.md §3).

    Args:
        num: requested number of points M (rounded down to a Lebedev size, or, with ``exact_size``, it must
            be one); None: the smallest grid that is safe for ``max_frequency``.
        max_frequency: b_max = θ_max·r_max.
    Returns:
        The chosen Lebedev size.
    Raises:
        ValueError: the grid cannot integrate the frequency (the message names the grid that can), or
            ``num`` is not a Lebedev size with ``exact_size``.
    """
    if not max_frequency > 0:
        raise ValueError(f"the maximum ERoPE frequency b_max must be positive, got {max_frequency}")
    if num is None:
        return smallest_safe_grid(max_frequency)
    size = lebedev_size(int(num))
    if exact_size and size != num:
        larger = [m for m in LEBEDEV_SIZES if m > num]
        raise ValueError(
            f"efa_grid_size = {num} is not a Lebedev grid size (nearest: {size}"
            f"{f' and {larger[0]}' if larger else ''}); sizes: {', '.join(map(str, LEBEDEV_SIZES))}"
        )
    if max_frequency > safe_frequency(size):
        try:
            hint = f"; the smallest grid safe for it has {smallest_safe_grid(max_frequency)} points"
        except ValueError as err:
            hint = f"; {err}"
        raise ValueError(
            f"the {size}-point Lebedev grid cannot integrate ERoPE frequency b_max = {max_frequency:.4g} "
            f"({max_frequency / math.pi:.3g}π): its safe limit is 0.95·T({size}) = "
            f"{safe_frequency(size) / math.pi:.3g}π, beyond which rotational invariance breaks silently{hint}"
        )
    return size


@dataclass(frozen=True, eq=False)
class LebedevGrid:
    """A Lebedev quadrature grid on the unit sphere (host-side constants).

    Attributes:
        num_points: M, the size actually used.
        directions: (M, 3) unit vectors u_m.  weights: (M,) w_m, Σ_m w_m = 1 (a spherical mean).
        max_frequency: b_max it was validated for.  max_length: r_max in Å.
        safe_frequency: 0.95·T(M), the largest b_max it may be used with.
    """

    num_points: int
    directions: np.ndarray
    weights: np.ndarray
    max_frequency: float
    max_length: float
    safe_frequency: float


@functools.lru_cache(maxsize=64)
def lebedev_grid(num: int | None, max_frequency: float, max_length: float) -> LebedevGrid:
    """The Lebedev grid for ERoPE frequencies up to θ_max = b_max / r_max, validated by the safe-frequency rule.

    Args:
        num: requested M; e3x rounds down to the largest Lebedev size ≤ num (the chosen size is
            ``grid.num_points``). None: the smallest safe grid for ``max_frequency``.
        max_frequency: b_max (dimensionless).
        max_length: r_max in Å, the largest distance within a structure the grid is meant for.
    Raises:
        ValueError: b_max > 0.95·T(M) (see :func:`check_grid`), or r_max ≤ 0.
    """
    import e3x  # only needed here; importing the model config does not pull it in

    if not max_length > 0:
        raise ValueError(f"r_max (efa_max_length) must be positive, got {max_length}")
    size = check_grid(num, max_frequency)
    with jax.ensure_compile_time_eval():  # constants, also when first called while tracing a jit
        directions, weights = e3x.so3.lebedev_quadrature(num=size)
    directions, weights = np.asarray(directions, np.float64), np.asarray(weights, np.float64)
    assert len(weights) == size, (size, len(weights))
    return LebedevGrid(size, directions, weights, float(max_frequency), float(max_length), safe_frequency(size))
