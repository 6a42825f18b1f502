"""``jax.jit`` with the XLA compile options the package's programs run fastest with.

Every jitted entry point of the package (the potential, the training and evaluation steps, the MD
chunks) is made with :func:`jit`, so that one setting here reaches all of them.

On the CPU, jaxlib 0.10 (the version this project is developed with) hands every matrix product to
YNNPACK by default (XLA's "individual dot" library fusions). This model's products are many and small
(416 × 128 × 132 for the radial filters of the Table 3 toluene batch), and for them XLA's own dot
emitter is faster. The same programs compiled both ways and called in alternation
(``benchmarks/compile_options.py``, docs/speed.md item 8): toluene × 4 energy + forces 27.5 → 23.1 ms,
with the radial-filter table 15.5 → 13.0 ms, training step 59.4 → 56.8 ms; the water droplets of 51 to
2,001 atoms unchanged within this machine's noise. The option is only passed where the backend is the
CPU and this jaxlib accepts it; elsewhere :func:`jit` is plain ``jax.jit``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax

from so3krates import cpu_memory

# Before JAX starts its CPU backend (the first array or computation), as every program of the package
# is made here: XLA's per-call buffers reused instead of mapped afresh for every call (so3krates.cpu_memory;
# SO3KRATES_REUSE_CPU_BUFFERS=0 turns it off).
cpu_memory.reuse_cpu_buffers()

CPU_OPTIONS: dict[str, Any] = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def compiler_options(backend: str) -> dict[str, Any]:
    """The options for ``backend``: :data:`CPU_OPTIONS` on a CPU whose jaxlib accepts them, else none."""
    if backend != "cpu":
        return {}
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS).lower(1.0).compile()
    except Exception:  # noqa: BLE001 (an older jax or jaxlib: no such option, or no compiler_options)
        return {}
    return dict(CPU_OPTIONS)


class _LazyJit:
    """A ``jax.jit`` made on first use: choosing the options asks for the default backend, which
    must not be started before ``jax.distributed.initialize`` in multi-process training."""

    def __init__(self, fun: Callable, kwargs: dict[str, Any]) -> None:
        self._fun, self._kwargs = fun, kwargs
        functools.update_wrapper(self, fun)

    @functools.cached_property
    def jitted(self) -> Any:
        options = compiler_options(jax.default_backend())
        kwargs = {**self._kwargs, "compiler_options": options} if options else self._kwargs
        return jax.jit(self._fun, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        cpu_memory.guard()  # before: memory grown since (eager work, data) must not meet a kept block
        out = self.jitted(*args, **kwargs)
        cpu_memory.guard()  # after: the call has finished (synchronous dispatch while reusing)
        return out

    def __getattr__(self, name: str) -> Any:  # lower, trace, eval_shape, ... of the jitted function
        if name in ("_fun", "_kwargs"):  # not set yet (copying, unpickling): no recursion through self.jitted
            raise AttributeError(name)
        return getattr(self.jitted, name)


def jit(fun: Callable, **kwargs: Any) -> Callable:
    """``jax.jit(fun, **kwargs)`` with :func:`compiler_options` for the default backend."""
    return _LazyJit(fun, kwargs)
