"""so3krates.runtime.hugepages: the restart with glibc's huge-page tunable, and the so3krates command's use of it."""

import os
import subprocess
import sys

import pytest

from so3krates.runtime.hugepages import OPT_OUT, RESTARTED, TUNABLE, restart_environment


def test_restart_environment_adds_the_tunable_once():
    env = restart_environment({"PATH": "/bin"}, platform="linux")
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": TUNABLE, RESTARTED: "1"}
    # The user's other tunables are kept; a restarted process does not restart again.
    env = restart_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, platform="linux")
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{TUNABLE}"
    assert restart_environment(env, platform="linux") is None
    # Even if the tunable were stripped from a restarted process's environment: no second restart.
    assert restart_environment({RESTARTED: "1"}, platform="linux") is None
    # The user's own choice of the tunable (even "off") wins.
    assert restart_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, platform="linux") is None


def test_no_restart_when_opted_out_or_not_linux():
    assert restart_environment({OPT_OUT: "0"}, platform="linux") is None
    assert restart_environment({}, platform="darwin") is None
    assert restart_environment({OPT_OUT: "1"}, platform="linux") is not None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables are Linux only")
def test_a_script_restarts_itself_with_the_tunable(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os, sys\n"
        "from so3krates import runtime\n"
        "print('started', flush=True)\n"
        "runtime.configure(restart_argv=sys.argv, reuse_cpu_buffers=False)\n"
        "print(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", OPT_OUT, RESTARTED)}
    out = subprocess.run([sys.executable, str(probe), "a", "b"], env=env, capture_output=True, text=True, check=True)
    # Two starts (the second with the tunable and the same arguments), one finish.
    assert out.stdout.splitlines() == ["started", "started", f"{TUNABLE} ['a', 'b']"]
    out = subprocess.run(
        [sys.executable, str(probe)], env={**env, OPT_OUT: "0"}, capture_output=True, text=True, check=True
    )
    assert out.stdout.splitlines() == ["started", "None []"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables are Linux only")
def test_the_so3krates_command_runs_after_the_restart():
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", OPT_OUT, RESTARTED)}
    command = [sys.executable, "-m", "so3krates.cli.main", "--version"]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.startswith("so3krates ")
