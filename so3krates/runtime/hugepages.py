"""Transparent huge pages for XLA's CPU buffers, by restarting the process with glibc's malloc tunable.

XLA's CPU runtime allocates its buffers with ``malloc``. glibc ≥ 2.35 asks the kernel for 2 MiB
transparent huge pages for its large allocations when the process starts with
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (``madvise``, so it works with the common THP setting
``[madvise]``): fewer TLB misses on the per-edge arrays (measured in docs/speed.md, items 9 and 10).

A tunable is read once, when the process starts, so it cannot be switched on from Python:
:func:`restart_with_huge_pages` replaces the process by a copy of itself with the tunable set. It is
opt-in: :func:`so3krates.runtime.configure` with ``restart_argv`` calls it (the ``so3krates`` command
and the benchmarks do). ``SO3KRATES_HUGE_PAGES=0`` turns the restart off. Elsewhere (not Linux, or
the tunable already set) nothing happens; an older glibc ignores the tunable.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "SO3KRATES_HUGE_PAGES"
# Set in the restarted process: never restart twice, even if a C library rewrote GLIBC_TUNABLES.
RESTARTED = "SO3KRATES_HUGE_PAGES_RESTARTED"


def restart_environment(environ: Mapping[str, str], platform: str = sys.platform) -> dict[str, str] | None:
    """The environment to restart with, or None when no restart is needed or wanted."""
    if not platform.startswith("linux") or environ.get(OPT_OUT, "1") == "0" or environ.get(RESTARTED):
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables:  # set already (by us or by the user): keep the user's choice
        return None
    return {**environ, "GLIBC_TUNABLES": f"{tunables}:{TUNABLE}" if tunables else TUNABLE, RESTARTED: "1"}


def restart_with_huge_pages(arguments: Sequence[str]) -> None:
    """Replace this process by ``python *arguments`` with :data:`TUNABLE` set, unless not needed.

    Call it before any work (nothing of this process survives): ``arguments`` are what follows the
    interpreter, e.g. ``["-m", "so3krates.cli.main", *sys.argv[1:]]`` or ``[script, *sys.argv[1:]]``.
    """
    environment = restart_environment(os.environ)
    if environment is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *arguments], environment)
