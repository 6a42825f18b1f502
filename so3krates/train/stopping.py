"""When training stops before ``max_epochs``: early stopping, the time limit, Ctrl-C (SIGINT), SIGTERM."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class Interrupted(KeyboardInterrupt):
    """A signal arrived (Ctrl-C: SIGINT, or SIGTERM): stop, keeping the checkpoint and the best model.

    A KeyboardInterrupt, so that no ``except Exception`` on the way swallows it. ``signum`` is the
    signal; the command exits with 128 + signum (130 for Ctrl-C, 143 for SIGTERM), as a shell reports a
    process that the signal ended."""

    def __init__(self, signum: int = signal.SIGINT, message: str = "") -> None:
        super().__init__(message)
        self.signum = int(signum)


def signal_number(err: BaseException) -> int:
    """The signal behind an interruption: its ``signum``, SIGINT for a plain KeyboardInterrupt."""
    return int(getattr(err, "signum", signal.SIGINT))


def early_stop(patience: int | None, bad_epochs: int, validated: bool) -> bool:
    """Whether ``patience`` validations in a row have not improved on the best (checked after validating)."""
    return patience is not None and bad_epochs >= patience and validated


def out_of_time(max_time: float | None, elapsed: float, last_epoch_seconds: float | None) -> bool:
    """Whether another epoch as long as the last one would pass ``max_time`` seconds."""
    if max_time is None or last_epoch_seconds is None:
        return False
    return elapsed + last_epoch_seconds > max_time


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises :class:`Interrupted` inside the block. Only the main thread can handle signals:
    elsewhere they are left alone."""

    def on_sigterm(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@contextmanager
def write_failures(run_dir: Path, saved_epoch: Callable[[], int]) -> Iterator[None]:
    """A failed write while training (a full disk, a folder made read-only) stops the run with an
    OSError that names the file, the system's reason and what is safe: the checkpoint on disk (of epoch
    ``saved_epoch()``), which every write leaves whole, and how to continue from it."""
    try:
        yield
    except OSError as err:
        epoch = saved_epoch()
        kept = (
            f"the checkpoint of epoch {epoch} in {run_dir} is intact: fix that (free space) and continue with --resume"
            if epoch
            else "no epoch was checkpointed yet: fix that (free space) and train again"
        )
        raise type(err)(err.errno, f"{err.strerror or err}; training stopped, {kept}", err.filename) from None
