"""Running the ``so3krates`` command in tests: in process (fast) or as a child process (signals, kills),
and the one check every bad-input test makes (exit code, message fragments, no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Outcome:
    """Exit code and printed output of one command."""

    code: int
    out: str
    err: str


def cli(args: list[str], capsys: pytest.CaptureFixture) -> Outcome:
    """``so3krates ARGS`` through the CLI entry point in this process (an escaping exception fails the test)."""
    from so3krates.cli.main import main

    capsys.readouterr()  # drop what earlier calls printed
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


def cli_process(args: list[str], timeout: float = 300, env: dict[str, str] | None = None, cwd: Path | None = None):
    """``python -m so3krates.cli.main ARGS`` as a child process (the installed command without the
    huge-page restart); returns an :class:`Outcome`."""
    full_env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    done = subprocess.run(
        [sys.executable, "-m", "so3krates.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd,
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


def assert_clean_error(outcome: Outcome, *fragments: str, code: int = 2) -> None:
    """The command failed with ``code``, printed no Python traceback, and its error message contains
    every fragment (file, frame, flag, problem)."""
    printed = outcome.out + outcome.err
    assert "Traceback" not in printed, printed[-3000:]
    assert outcome.code == code, f"exit {outcome.code}, expected {code}:\n{printed[-3000:]}"
    for fragment in fragments:
        assert fragment in outcome.err, f"{fragment!r} not in the error message:\n{outcome.err[-3000:]}"
