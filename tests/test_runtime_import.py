"""Importing the package changes nothing in the process; only so3krates.runtime.configure() tunes it."""

import os
import subprocess
import sys
import textwrap
import warnings

import pytest

from so3krates.runtime.cpu_memory import OPT_OUT, _glibc

# A probe of glibc's malloc settings: page faults of the second 64 MiB malloc + memset + free. With
# glibc's defaults a block this large is mapped fresh every time (16,384 faults of 4 KiB pages); with
# the reuse settings of so3krates.runtime.cpu_memory it comes back from the heap (a handful).
PROBE = textwrap.dedent(
    """
    import ctypes, json, resource, sys

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    def malloc_faults(size=64 << 20):
        for _ in range(2):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            block = libc.malloc(size)
            ctypes.memset(block, 1, size)
            libc.free(block)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    import jax

    def state():
        return {"faults": malloc_faults(), "jax": {k: repr(v) for k, v in jax.config.values.items()}}

    before = state()
    import so3krates.potential, so3krates.calculator, so3krates.train, so3krates.md, so3krates.cli.main
    import so3krates.inference, so3krates.compile, so3krates.run_dir
    after_import = state()
    if sys.argv[1] == "configure":
        from so3krates import runtime
        runtime.configure()
    print(json.dumps([before, after_import, state()]))
    """
)


def _run(mode: str) -> list[dict]:
    import json

    env = {k: v for k, v in os.environ.items() if k != OPT_OUT}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(_glibc() is None, reason="glibc's malloc only")
def test_importing_the_package_leaves_malloc_and_jax_as_they_were():
    before, after_import, _ = _run("import")
    assert after_import["jax"] == before["jax"]  # every JAX flag, x64 and async dispatch included
    assert before["faults"] >= 30 and after_import["faults"] >= 30  # still glibc's defaults: mapped afresh


@pytest.mark.skipif(_glibc() is None, reason="glibc's malloc only")
def test_configure_is_what_tunes_the_process():
    _, after_import, configured = _run("configure")
    assert after_import["faults"] >= 30
    assert configured["faults"] < 30  # the block now comes back from the heap
    changed = {k for k in configured["jax"] if configured["jax"][k] != after_import["jax"][k]}
    assert changed == {"jax_cpu_enable_async_dispatch"}


@pytest.mark.parametrize("old", ["cpu_memory", "hugepages"])
def test_old_module_paths_still_resolve_with_a_warning(old):
    import importlib

    module = importlib.import_module(f"so3krates.{old}")
    new = importlib.import_module(f"so3krates.runtime.{old}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert module.OPT_OUT is new.OPT_OUT
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
