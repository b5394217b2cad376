"""Work repeated in background threads while a test does something else (pulls during a rolling
update, a drain or a garbage collection; samples of the tasks running during one)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")


@contextmanager
def repeating(step: Callable[[int, int], T], *, threads: int = 1, interval: float = 0,
              join_timeout: float = 120) -> Iterator[list[T]]:
    """Calls ``step(thread, n)`` (the thread's number, the call's number in that thread) back to
    back in ``threads`` threads, ``interval`` seconds apart, from entry until the ``with`` block
    ends, then waits for each thread's current call. Yields the list of results, appended as
    they come."""
    stop, results = threading.Event(), []

    def loop(thread: int) -> None:
        n = 0
        while not stop.is_set():
            results.append(step(thread, n))
            n += 1
            if interval:
                time.sleep(interval)

    workers = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield results
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=join_timeout)
