"""Single-flight: concurrent identical calls share one execution.

Prometheus servers in a high-availability pair, a second Prometheus, or a person with curl often
scrape the same exporter at the same moment. Each scrape walks every socket table and every
process's descriptors, so ten concurrent scrapes would do ten times the work on a busy host and
each would take ten times as long. A scrape that arrives while an identical one (same
collectors, same format) is running waits for it and answers with the same body, as Go's
``singleflight`` does: its figures are older than its own collection's would have been by less
than one collection's time, and it is answered sooner. Nothing is kept once the call returns, so
a scrape never gets figures collected before the previous scrape was answered.
"""

from __future__ import annotations

import threading
from typing import Callable, Dict, Generic, Hashable, Optional, Tuple, TypeVar

V = TypeVar("V")


class _Call(Generic[V]):
    def __init__(self) -> None:
        self.callers = 1
        self.done = threading.Event()
        self.value: Optional[V] = None
        self.error: Optional[BaseException] = None


class SingleFlight(Generic[V]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: Dict[Hashable, _Call[V]] = {}

    def do(self, key: Hashable, fn: Callable[[], V]) -> Tuple[V, bool]:
        """``fn()``'s value, run here or by the identical call already running; and whether it
        was shared (True) or computed by this call (False)."""
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if call is None:
                call = self._calls[key] = _Call()
            else:
                call.callers += 1
        if not leader:
            call.done.wait()
            if call.error is not None:
                raise call.error
            return call.value, True  # type: ignore[return-value]
        try:
            call.value = fn()
        except BaseException as e:
            call.error = e
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call.done.set()
        return call.value, False

    def callers(self) -> int:
        """How many calls are running or waiting now, whatever their key."""
        with self._lock:
            return sum(call.callers for call in self._calls.values())
