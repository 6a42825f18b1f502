"""``jax.jit`` with the XLA compile options the package's programs run fastest with.

Every jitted entry point of the package (the potential, the training and evaluation steps, the MD
chunks) is made with :func:`jit`, so that one setting here reaches all of them.

On the CPU, jaxlib 0.10 hands every matrix product to YNNPACK by default (XLA's "individual dot"
library fusions). This model's products are many and small, and for them XLA's own dot emitter is
faster (``benchmarks/compile_options.py``, docs/speed.md item 8), so :func:`jit` switches those fusions
off. The option is per program, not per process, and only passed where the backend is the CPU and
this jaxlib accepts it; elsewhere :func:`jit` is plain ``jax.jit``. Each call also runs
:func:`so3krates.runtime.cpu_memory.guard` (a no-op unless :func:`so3krates.runtime.configure` turned
buffer reuse on).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax

from so3krates.runtime import cpu_memory

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
