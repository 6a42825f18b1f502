"""Running test children: several processes on localhost that must all succeed (``jax.distributed``)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Sequence


def free_port() -> int:
    """A TCP port nobody listens on right now (for a ``jax.distributed`` coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_together(
    commands: Sequence[Sequence[str]], env: dict[str, str], timeout: float = 300, merge_stderr: bool = True
) -> list[str]:
    """Start every command at once, wait for all, assert each exits 0; returns their outputs.

    With ``merge_stderr`` the output is stdout and stderr together; otherwise stdout alone (stderr is
    still shown when a process fails). A process still running when another fails is killed.
    """
    procs = [
        subprocess.Popen(
            list(command),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    outputs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, (out if merge_stderr else err)[-4000:]
            outputs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return outputs
