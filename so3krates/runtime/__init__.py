"""Process tuning for the package's programs: opt-in, one call, never on import.

Importing any part of ``so3krates`` leaves the process as it was: no ``mallopt``, no JAX flag changed,
no restart. A program that wants the tuning the ``so3krates`` command runs with calls
:func:`configure` first thing, before any JAX array exists::

    import sys
    from so3krates import runtime

    runtime.configure(restart_argv=sys.argv)  # optional restart with huge pages, then buffer reuse

What it may do (each measured in docs/speed.md, each off with its environment variable):

* restart the process once with glibc's huge-page tunable (:mod:`so3krates.runtime.hugepages`;
  only with ``restart_argv``; ``SO3KRATES_HUGE_PAGES=0`` turns it off);
* keep XLA's per-call CPU buffers in glibc's heap and run JAX calls synchronously
  (:mod:`so3krates.runtime.cpu_memory`; ``SO3KRATES_REUSE_CPU_BUFFERS=0`` turns it off).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from so3krates.runtime import cpu_memory, hugepages

__all__ = ["RuntimeSettings", "configure", "settings"]


@dataclass(frozen=True)
class RuntimeSettings:
    """What :func:`configure` left in effect in this process."""

    huge_pages: bool  # started with glibc's huge-page tunable
    reuse_cpu_buffers: bool  # XLA's CPU buffers kept in glibc's heap, synchronous dispatch


def settings(environ: Mapping[str, str] = os.environ) -> RuntimeSettings:
    """The tuning in effect now (whoever set it)."""
    return RuntimeSettings(
        huge_pages="glibc.malloc.hugetlb=1" in environ.get("GLIBC_TUNABLES", ""),
        reuse_cpu_buffers=cpu_memory.reusing(),
    )


def configure(restart_argv: Sequence[str] | None = None, *, reuse_cpu_buffers: bool = True) -> RuntimeSettings:
    """Tune this process for the package's programs (module docstring); returns what is in effect.

    Args:
        restart_argv: the arguments after the interpreter to restart with glibc's huge-page tunable
            (``sys.argv`` for a script, ``["-m", "module", *sys.argv[1:]]`` for a module); None: no
            restart. A restart replaces the process, so call this before any other work.
        reuse_cpu_buffers: keep XLA's per-call buffers for reuse; must come before JAX's CPU backend
            starts (the first array or computation), else nothing is changed.
    """
    if restart_argv is not None:
        hugepages.restart_with_huge_pages(restart_argv)
    if reuse_cpu_buffers:
        cpu_memory.reuse_cpu_buffers()
    return settings()
