"""Float32 or float64: the model's dtype, and JAX's 64-bit mode switched on only where a user asks.

JAX computes in float32 unless ``jax_enable_x64`` is set, a process-wide switch. The package never flips
it as a side effect of an import or of loading a model: a float64 model or ``dtype="float64"`` needs it,
and it is switched on by :func:`enable_float64`, which the CLI calls for ``--dtype float64`` (or a model
trained in float64), the calculator for ``dtype="float64"``, and ``so3krates train`` for a float64
model configuration. Anything else that meets float64 without it gets a :class:`ValueError` saying so.

Energies are precise in either dtype: the reference energies (per-element shifts, the constant c) and
the sums over atoms are float64 on the host (:mod:`so3krates.potential`).
"""

from __future__ import annotations

import jax

from so3krates.deprecation import moved

DTYPES = ("float32", "float64")


def float64_enabled() -> bool:
    """Whether JAX's 64-bit mode is on in this process."""
    return bool(jax.config.jax_enable_x64)


def enable_float64() -> None:
    """Switch on JAX's 64-bit mode for this process (``jax_enable_x64``); call it before creating arrays
    that should be float64. Arrays that already exist keep their dtype."""
    jax.config.update("jax_enable_x64", True)


def check_dtype(dtype: str, where: str) -> str:
    """``dtype`` if it can run in this process; ValueError naming ``where`` otherwise."""
    if dtype not in DTYPES:
        raise ValueError(f"{where}: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "float64" and not float64_enabled():
        raise ValueError(
            f"{where}: float64 needs JAX's 64-bit mode, which is off in this process; ask for it explicitly "
            "(so3krates.precision.enable_float64(), the calculator's dtype='float64', the CLI's --dtype float64) "
            "or run the model in float32 (dtype='float32')"
        )
    return dtype


__getattr__ = moved(
    "so3krates.precision",
    {"add_dtype_argument": "so3krates.cli.shared", "dtype_for_run": "so3krates.run_dir"},
)
