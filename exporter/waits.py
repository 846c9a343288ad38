"""Time a thread spends waiting for a lock another scrape holds, kept per thread so that a
collector's duration can leave it out.

``netstat_exporter_collector_duration_seconds`` is read as what a collector costs: two scrapes
that run the same collector at once (say ``collect[]=listeners`` and a full scrape) serialise on
the listeners' owner cache, and without this the second would report the first one's work as its
own.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator, Protocol


class _Lock(Protocol):
    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...

    def release(self) -> None: ...


_local = threading.local()


@contextmanager
def acquired(lock: _Lock) -> Iterator[None]:
    """``with lock:``, adding the time spent waiting for it to this thread's account."""
    start = time.perf_counter()
    lock.acquire()
    _local.seconds = getattr(_local, "seconds", 0.0) + time.perf_counter() - start
    try:
        yield
    finally:
        lock.release()


def take() -> float:
    """Seconds this thread waited since the last call, and reset the account."""
    seconds: float = getattr(_local, "seconds", 0.0)
    _local.seconds = 0.0
    return seconds
