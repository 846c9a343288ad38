"""Connection limits: how many connections are open, in which state, and which one gives way
when the limit is reached.

Threads are one per connection, so open connections are capped (:data:`MAX_CONNECTIONS`). A cap
alone lets anyone who can reach the port lock Prometheus out without credentials: 256 kept-alive
idle connections, or 300 that never send a byte, and every new connection is refused until
theirs time out. So when the table is full, a new connection takes the place of one that is not
doing anything, the longest-waiting first, in this order:

1. idle kept-alive connections whose client never showed valid credentials (only when basic
   auth is on; without it no client is told apart from another);
2. connections still in their TLS handshake or request head (the ones a flood of silent or
   drip-feeding clients holds); a real scrape sends its request at once, so it is the newest of
   these and the last to go;
3. idle kept-alive connections of authenticated clients (Prometheus between two scrapes; it
   reconnects for its next scrape, as it does after any idle close).

Connections answering a request are never reclaimed; only when every open connection is busy is
the new one refused. Limits per client address were considered and not used: Prometheus, its
high-availability twin and an attacker on the same host or behind the same NAT share an
address, and a per-address limit would make them compete exactly where this ordering does not.

A reclaimed connection is shut down (``shutdown(2)`` on its descriptor), which wakes its thread
from ``recv`` or the TLS handshake at once; the thread then ends as for a client that closed.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Dict, Optional, Tuple

from exporter.web.telemetry import HTTPStats

# Open connections at most; beyond it a connection is reclaimed or the new one refused.
MAX_CONNECTIONS = 256

WAITING, IDLE, BUSY = "waiting", "idle", "busy"


class Slot:
    """One open connection's entry in the table."""

    __slots__ = ("fd", "family", "client", "state", "since", "trusted", "closed")

    def __init__(self, sock: socket.socket, client: str) -> None:
        self.fd = sock.fileno()
        self.family = sock.family
        self.client = client
        self.state = WAITING
        self.since = time.monotonic()
        self.trusted = False  # a request on it passed basic auth
        self.closed = False  # reclaimed, or released by its own thread


class ConnectionTable:
    def __init__(self, stats: HTTPStats, limit: int = MAX_CONNECTIONS) -> None:
        self.limit = limit
        self.stats = stats
        self._lock = threading.Lock()
        self._slots: Dict[int, Slot] = {}  # by id(slot)

    def admit(self, sock: socket.socket, client: str) -> Optional[Tuple[Slot, Optional[Slot]]]:
        """A slot for the new connection, and the slot reclaimed to make room (if one was);
        None when every open connection is busy and the new one must be refused."""
        with self._lock:
            victim = None
            if len(self._slots) >= self.limit:
                victim = self._victim()
                if victim is None:
                    self.stats.add("refused")
                    return None
                self._close(victim)
                self.stats.add_reclaimed(IDLE if victim.state == IDLE else WAITING)
            slot = Slot(sock, client)
            self._slots[id(slot)] = slot
            self.stats.add("open")
            return slot, victim

    def _victim(self) -> Optional[Slot]:
        def rank(s: Slot) -> Tuple[int, float]:
            if s.state == IDLE and not s.trusted:
                return 0, s.since
            if s.state == WAITING:
                return 1, s.since
            return 2, s.since  # IDLE and trusted

        candidates = [s for s in self._slots.values() if s.state != BUSY]
        return min(candidates, key=rank) if candidates else None

    def _close(self, slot: Slot) -> None:
        """Shut the connection down under the lock: its thread releases the slot (and closes
        the descriptor) only after taking the lock, so the descriptor is still its own."""
        del self._slots[id(slot)]
        self.stats.add("open", -1)
        slot.closed = True
        try:
            with socket.fromfd(slot.fd, slot.family, socket.SOCK_STREAM) as dup:
                dup.shutdown(socket.SHUT_RDWR)  # acts on the socket, not on the duplicate fd
        except OSError:
            pass  # the client has closed it already

    def set(self, slot: Slot, state: str) -> bool:
        """Move ``slot`` to ``state``; False if it was reclaimed meanwhile."""
        with self._lock:
            if slot.closed:
                return False
            if slot.state != state:
                slot.state, slot.since = state, time.monotonic()
            return True

    def trust(self, slot: Slot) -> None:
        slot.trusted = True

    def release(self, slot: Slot) -> None:
        """The connection's thread is done with it; call before closing the descriptor."""
        with self._lock:
            if not slot.closed:
                slot.closed = True
                del self._slots[id(slot)]
                self.stats.add("open", -1)

    def __len__(self) -> int:
        with self._lock:
            return len(self._slots)
