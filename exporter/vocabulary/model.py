"""What a socket reading holds: the one count type (:class:`Counts`, also what the netlink
readers return), listeners, ephemeral port use, the tables of one protocol. Plain data,
importing nothing of the exporter."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Mapping, Optional, Tuple


@dataclass
class Counts:
    """Sockets of one (protocol, family) per kernel state number, and the bytes queued on the
    non-listening ones (None when the source has no queues: psutil, /proc/net/unix). On a
    listener the kernel's queue fields hold the accept queue and backlog, which are not bytes."""

    states: Counter[int] = field(default_factory=Counter)
    rx_queue: Optional[int] = 0
    tx_queue: Optional[int] = 0
    interrupted: bool = False  # NLM_F_DUMP_INTR: the kernel's table changed during the dump


@dataclass
class Listener:
    """One listening socket: TCP in LISTEN, or UDP bound to a port and not connected."""

    protocol: str
    family: str
    address: str
    port: int
    inode: int = 0  # 0: unknown (psutil) or a socket without a file (held by the kernel)
    uid: Optional[int] = None  # the socket's owner
    queue: Optional[int] = None
    limit: Optional[int] = None
    pids: Tuple[int, ...] = ()  # psutil only: the holders it found


@dataclass(frozen=True)
class EphemeralRange:
    """net.ipv4.ip_local_port_range minus ip_local_reserved_ports: the ports connect() and
    autobind may pick. For testing a column of records' ports in C: ``blocks`` is a
    bytes.translate table from a port's high byte (the first of a network-order port field) to
    0 (none of its 256 ports in the range), 1 (all) or 2 (some), and ``rows``, for each block
    of some, a translate table from the port's low byte to 1 or 0."""

    ports: FrozenSet[int]
    blocks: bytes = bytes(256)
    rows: Mapping[int, bytes] = field(default_factory=dict)


@dataclass
class PortUse:
    """Ephemeral ports in use by one protocol: how many distinct ones, and per destination
    (``local address->remote address:remote port``) how many."""

    used: int = 0
    destinations: Counter[str] = field(default_factory=Counter)


@dataclass
class InetTables:
    """Everything one protocol's socket tables gave in one pass, for every collector."""

    protocol: str
    source: str  # "netlink", "procfs" or "psutil"
    counts: Dict[str, Counts] = field(default_factory=dict)  # by family, present families only
    listeners: List[Listener] = field(default_factory=list)
    # TCP sockets whose local port is a listening port, by (local port, state), in the states
    # of a connection accepted on a listening port only (names.LISTENER_CONNECTION_STATES).
    connections: Counter[Tuple[int, int]] = field(default_factory=Counter)
    ports: Optional[PortUse] = None  # when ephemeral use was asked for and the range is known
    interrupted: bool = False  # the kernel flagged the dump as interrupted (NLM_F_DUMP_INTR)

    @property
    def families(self) -> List[str]:
        return list(self.counts)


@dataclass
class UnixTables:
    """AF_UNIX sockets per (type, state) with queue bytes of non-listeners (None from
    /proc/net/unix)."""

    source: str
    counts: Counter[Tuple[int, int]] = field(default_factory=Counter)
    rx_queue: Optional[int] = None
    tx_queue: Optional[int] = None
