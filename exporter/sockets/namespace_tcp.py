"""TCP sockets by state and the accept queues of listening ports, of one network namespace,
through a sock_diag socket opened inside it (:mod:`exporter.netlink.namespace_sockets` opens
and keeps those).

The namespace is read through the same :class:`~exporter.sockets.snapshot.Snapshot` the host's
collectors use: one dump of both families, the listeners decoded in the same pass.
"""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Tuple

from exporter.procfs.errors import ParseError
from exporter.sockets.snapshot import Snapshot, Wants
from exporter.vocabulary.names import TCP_LISTEN


@dataclass
class NamespaceTcp:
    states: Counter[int]  # TCP sockets per kernel state number, both families
    # listening port -> (accept queue length, limit), summed over addresses and families
    ports: Dict[int, Tuple[int, int]] = field(default_factory=dict)
    listeners: int = 0


def read_namespace_tcp(sock: socket.socket, root: str, max_ports: int) -> NamespaceTcp:
    """TCP states and listeners of the namespace ``sock`` was opened in, with the queues of
    the lowest ``max_ports`` listening ports; ``root`` is a procfs root showing that
    namespace's net/ (for whether it has IPv6)."""
    with Snapshot(root, "netlink", netlink=sock, wants=Wants(listeners=True)) as snap:
        tables = snap.inet("tcp")
    if tables is None:
        raise ParseError("netlink", "the kernel has no TCP sock_diag")
    out = NamespaceTcp(Counter())
    for counts in tables.counts.values():
        out.states.update(counts.states)
    queues: Dict[int, Tuple[int, int]] = {}
    for listener in tables.listeners:
        if listener.protocol != "tcp":
            continue
        length, limit = queues.get(listener.port, (0, 0))
        queues[listener.port] = (length + (listener.queue or 0), limit + (listener.limit or 0))
    out.listeners = out.states.get(TCP_LISTEN, 0)
    out.ports = {port: queues[port] for port in sorted(queues)[:max_ports]}
    return out
