"""When training stops before ``max_epochs``: early stopping, the time limit, SIGTERM."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Interrupted(Exception):
    """SIGTERM arrived: stop like Ctrl-C, keeping the best model."""


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
        raise Interrupted()

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
