"""so3krates.runtime.cpu_memory via runtime.configure: XLA's per-call buffers reused, not mapped afresh per call."""

import os
import subprocess
import sys
import textwrap

import pytest

from so3krates.runtime.cpu_memory import LARGE_SHARE, OPT_OUT, _glibc, reuse_cpu_buffers

# A program (made with so3krates.compile.jit) whose one intermediate, exp(a), is 64 MiB: above the largest
# block glibc serves from its heap (32 MiB), so without reuse its pages are mapped and faulted in every call.
PROBE = textwrap.dedent(
    """
    import resource
    import sys
    from so3krates import runtime
    from so3krates.runtime import cpu_memory
    from so3krates.compile import jit

    runtime.configure()  # before any array, as the so3krates command does
    import jax
    import jax.numpy as jnp

    cpu_memory.LARGE_SHARE = float(sys.argv[1])

    @jit
    def f(a):
        return (jax.lax.optimization_barrier(jnp.exp(a)) * 2).sum()  # exp(a) materialised: 64 MiB

    a = jnp.ones((16384, 1024), jnp.float32)
    for _ in range(5):  # the heap settles in the first calls
        f(a).block_until_ready()
    with cpu_memory.not_kept():  # glibc's defaults for eager work, then the kept settings again
        (jnp.exp(a) * 2).block_until_ready()
    for _ in range(5):
        f(a).block_until_ready()
    faults = []
    for _ in range(7):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        f(a).block_until_ready()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    faults = sorted(faults)[3]  # the median call: an occasional call may find the heap rearranged
    print(faults, jax.config.values["jax_cpu_enable_async_dispatch"], cpu_memory.reusing())
    """
)


def test_nothing_is_done_when_opted_out_or_too_late():
    assert reuse_cpu_buffers({OPT_OUT: "0"}) is False
    # JAX's CPU backend started before the package is imported: the dispatch can no longer change.
    code = (
        "import jax, jax.numpy as jnp; jnp.zeros(1).block_until_ready(); from so3krates import runtime; "
        "print(runtime.configure().reuse_cpu_buffers, jax.config.values['jax_cpu_enable_async_dispatch'])"
    )
    env = {k: v for k, v in os.environ.items() if k != OPT_OUT}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


@pytest.mark.skipif(_glibc() is None, reason="glibc's malloc only")
def test_the_package_stops_the_page_faults_of_every_call_until_memory_is_large():
    env = {k: v for k, v in os.environ.items() if k != OPT_OUT}

    def faults_per_call(share: float = LARGE_SHARE, **extra: str) -> list[str]:
        command = [sys.executable, "-c", PROBE, str(share)]
        return subprocess.run(command, env={**env, **extra}, capture_output=True, text=True, check=True).stdout.split()

    # Now and then a process re-faults the block on some calls before its heap settles (docs/speed.md
    # item 10): the best of three processes, each the median of seven calls.
    runs = [faults_per_call() for _ in range(3)]
    assert all((asynchronous, reusing) == ("False", "True") for _, asynchronous, reusing in runs)
    reused = min(float(faults) for faults, _, _ in runs)
    fresh, asynchronous, reusing = faults_per_call(**{OPT_OUT: "0"})
    assert (asynchronous, reusing) == ("True", "False")
    # 64 MiB mapped afresh is 16,384 faults of 4 KiB pages (32 of 2 MiB ones where THP is "always").
    assert float(fresh) >= 30
    assert float(reused) < 10
    # Past the share of the machine's memory (here: any), guard() gives the process glibc's defaults back.
    guarded, asynchronous, reusing = faults_per_call(share=0.0)
    assert (asynchronous, reusing) == ("False", "False")
    assert float(guarded) >= 30
