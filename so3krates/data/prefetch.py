"""Prefetching: build the next items (frames, graphs of the next batches) in a background thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

_DONE = object()


class Prefetcher(Iterator):
    """Runs ``load(item)`` for each item of ``items`` in a daemon thread, ``depth`` results ahead.

    Errors in the thread are raised in the consumer at the batch where they happened.
    """

    def __init__(self, load: Any, items: Iterable[Any], depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be ≥ 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._work, args=(load, iter(items)), daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, load: Any, items: Iterator[Any]) -> None:
        try:
            for item in items:
                if self._stop.is_set() or not self._put(("ok", load(item))):
                    return
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            self._put(("error", err))
            return
        self._put(("done", _DONE))

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Any:
        if self._finished:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == "ok":
            return value
        self._finished = True
        self._thread.join()
        if kind == "error":
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop the background thread (pending results are dropped)."""
        self._stop.set()
        self._finished = True
        self._thread.join(timeout=5)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
