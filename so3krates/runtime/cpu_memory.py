"""Reuse XLA's CPU buffers between calls instead of mapping fresh memory for every call.

Each call of a compiled XLA program on the CPU allocates one block for all its intermediate arrays
(33 MiB for the Table 3 toluene batch, 77 MB for its training step, ~270 MB for a 201-atom water
droplet) and frees it at the end. glibc's ``malloc`` maps a block above 32 MB fresh from the kernel
and unmaps it afterwards, every call, and the kernel zeroes the fresh pages each time before XLA can
write to them (docs/speed.md item 10 has the page-fault counts). Two settings together make the block come
from the heap and stay there:

* ``mallopt(M_MMAP_MAX, 0)`` and ``mallopt(M_TRIM_THRESHOLD, -1)``: glibc serves large requests from
  its heap and keeps freed memory for the next request instead of giving it back;
* ``jax_cpu_enable_async_dispatch = False``: the program runs in the calling thread, whose heap is
  glibc's main one. With asynchronous dispatch it runs in a worker thread, and a worker thread's heap
  is at most 64 MB, so the block is mapped and unmapped per call whatever the malloc settings.

With both, calls take almost no page faults after the first few (docs/speed.md item 10). Nothing
happens on import: :func:`so3krates.runtime.configure` (which the ``so3krates`` command and the
benchmarks call first thing) applies them through :func:`reuse_cpu_buffers`;
``SO3KRATES_REUSE_CPU_BUFFERS=0`` makes that call do nothing.

The costs, and what bounds them: memory kept in the heap can be split by later long-lived allocations,
so that a larger request needs new memory beside it. Eager JAX work, op by op, with many large arrays
of different lifetimes, is where that adds up (it doubled the memory of a 10,002-atom droplet's
``Potential.init``), so :func:`not_kept` restores glibc's defaults around it; and :func:`guard`, called
before and after every call of :func:`so3krates.compile.jit`, hands glibc its defaults back for good
once the process's peak resident memory passes a third of the machine's. On the CPU a JAX call returns
only when its result is ready (the package's training loop prepares batches in a thread of its own
anyway).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import resource
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import jax

OPT_OUT = "SO3KRATES_REUSE_CPU_BUFFERS"
# mallopt parameters (glibc's malloc.h) and glibc's defaults for them
M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD = -1, 128 * 1024
M_MMAP_MAX, DEFAULT_MMAP_MAX = -4, 65536
NEVER = -1  # M_TRIM_THRESHOLD -1: never give freed memory back (mallopt(3))
# Reuse stops once the process's peak resident memory passes this share of the machine's (see guard()).
LARGE_SHARE = 1 / 3

_reusing = False


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library of this process if it is glibc, else None (musl, macOS, Windows); looked up once."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl's mallopt does nothing)
    except (OSError, AttributeError):
        return None
    return libc


def reuse_cpu_buffers(environ: Mapping[str, str] = os.environ) -> bool:
    """Make glibc keep and reuse XLA's per-call buffers (module docstring); True if it did.

    :func:`so3krates.runtime.configure` calls it. It must run before JAX starts its CPU backend (the
    first array or computation): afterwards the dispatch cannot change, and nothing is done. Nothing is
    done either with ``SO3KRATES_REUSE_CPU_BUFFERS=0`` or outside glibc.
    """
    global _reusing
    libc = _glibc()
    if environ.get(OPT_OUT, "1") == "0" or libc is None:
        return False
    if _reusing:  # called before
        return True
    try:
        from jax._src import xla_bridge  # backends_are_initialized: no public equivalent

        if xla_bridge.backends_are_initialized():  # too late: the CPU client keeps the dispatch it was made with
            return False
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    except (AttributeError, KeyError, ImportError):  # an older JAX without the function or the option
        return False
    _reusing = _keep(libc, True)
    return _reusing


def _keep(libc: ctypes.CDLL, keep: bool) -> bool:
    """glibc's settings for keeping large blocks in the heap (``keep``) or its defaults; True if taken."""
    mmap_max, trim = (0, NEVER) if keep else (DEFAULT_MMAP_MAX, DEFAULT_TRIM_THRESHOLD)
    return bool(libc.mallopt(M_MMAP_MAX, mmap_max)) and bool(libc.mallopt(M_TRIM_THRESHOLD, trim))


@functools.cache
def machine_memory() -> int:
    """Bytes of memory this process may use: the machine's, or its control group's limit if lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()  # cgroup v2
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def guard() -> None:
    """Stop reusing once this process's peak resident memory passes :data:`LARGE_SHARE` of the machine's:
    glibc's defaults back, the kept free memory returned (``malloc_trim``). Costs a microsecond."""
    global _reusing
    if not _reusing:
        return
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    if peak < LARGE_SHARE * machine_memory():
        return
    libc = _glibc()  # glibc: reuse is only ever switched on there
    _keep(libc, False)
    libc.malloc_trim(0)
    _reusing = False


def reusing() -> bool:
    """Whether XLA's buffers are being kept for reuse now (:func:`reuse_cpu_buffers`, :func:`guard`)."""
    return _reusing


@contextlib.contextmanager
def not_kept() -> Iterator[None]:
    """glibc's defaults inside the block: for eager JAX work (op by op, as ``Potential.init`` does), whose
    many large arrays of different lifetimes would otherwise fragment the heap and stay (a 10,002-atom
    droplet's initialisation: 10 GB resident instead of 5)."""
    if not _reusing:
        yield
        return
    libc = _glibc()  # glibc: reuse is only ever switched on there
    _keep(libc, False)
    try:
        yield
    finally:
        libc.malloc_trim(0)
        if _reusing:
            _keep(libc, True)
