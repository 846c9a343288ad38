"""Collector ``ports``: use of the ephemeral (local) port range, overall and per destination.

The range is net.ipv4.ip_local_port_range minus net.ipv4.ip_local_reserved_ports (both apply
to IPv6 too). A local port counts as used when a non-listening TCP socket or any UDP socket has
it. Exhaustion happens per destination: connect() needs a local port that is free for its
(local address, remote address, remote port), so the same local port can serve many
destinations at once (__inet_hash_connect and __inet_check_established in
net/ipv4/inet_hashtables.c); the per-destination maximum is what runs out first, typically
because of TIME_WAIT sockets towards one busy backend.

Sockets come from netlink sock_diag, or from /proc/net/{tcp,tcp6,udp,udp6} where netlink is
refused (``--collector.ports.source``).
"""

from __future__ import annotations

import logging
import socket
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Dict, Iterator, List, Set, Tuple

from prometheus_client.core import Metric

from exporter.config import Config
from exporter.netlink import sockdiag as nl
from exporter.procfs import net_sockets, sysctl
from exporter.registry import MetricDoc, register

log = logging.getLogger(__name__)

PROTOCOLS = ("tcp", "udp")

M_AVAILABLE = MetricDoc(
    "netstat_ports_ephemeral_available", "gauge",
    "Local ports available for automatic assignment: the size of net.ipv4.ip_local_port_range "
    "minus the ports of net.ipv4.ip_local_reserved_ports inside it "
    "(/proc/sys/net/ipv4/ip_local_port_range, ip_local_reserved_ports).")
M_USED = MetricDoc(
    "netstat_ports_ephemeral_used", "gauge",
    "Distinct local ports of the ephemeral range (ip_local_port_range minus reserved ports) in "
    "use by non-listening TCP sockets (TIME_WAIT included) or by UDP sockets, IPv4 and IPv6 "
    "together (sock_diag, or /proc/net/tcp, tcp6, udp, udp6).",
    ("protocol",))
M_DEST_MAX = MetricDoc(
    "netstat_ports_ephemeral_destination_used_max", "gauge",
    "The most local ports of the ephemeral range in use towards one destination (local "
    "address, remote address, remote port): connect() fails with EADDRNOTAVAIL when this "
    "reaches netstat_ports_ephemeral_available. UDP counts connected sockets only.",
    ("protocol",))
M_DEST = MetricDoc(
    "netstat_ports_ephemeral_destination_used", "gauge",
    "Local ports of the ephemeral range in use towards one destination, for the N busiest "
    "destinations; destination is 'local address->remote address:remote port'.",
    ("protocol", "destination"),
    note="only with --collector.ports.top-destinations=N, N > 0")
METRICS = (M_AVAILABLE, M_USED, M_DEST_MAX, M_DEST)


@dataclass(frozen=True)
class Conn:
    src: str
    sport: int
    dst: str
    dport: int
    state: int


_FAMILIES = ((socket.AF_INET, "ipv4"), (socket.AF_INET6, "ipv6"))
_NUMBERS = {"tcp": nl.IPPROTO_TCP, "udp": nl.IPPROTO_UDP}
_PROC = {("tcp", "ipv4"): "tcp", ("tcp", "ipv6"): "tcp6", ("udp", "ipv4"): "udp",
         ("udp", "ipv6"): "udp6"}


def _dest(c: Conn) -> str:
    dst = f"[{c.dst}]" if ":" in c.dst else c.dst
    return f"{c.src}->{dst}:{c.dport}"


def ephemeral_ports(low: int, high: int, reserved: List[Tuple[int, int]]) -> Set[int]:
    """The ports connect() and autobind may pick: [low, high] minus the reserved ranges
    (inet_get_local_port_range and inet_is_local_reserved_port in include/net/ip.h)."""
    ports = set(range(max(low, 0), min(high, 65535) + 1))
    for a, b in reserved:
        ports.difference_update(range(a, b + 1))
    return ports


@register("ports", default_enabled=True,
          description="ephemeral port range size and use by TCP and UDP sockets, overall and "
                      "towards the busiest destination (local address, remote address, remote "
                      "port)",
          metrics=METRICS)
class PortsCollector:
    def __init__(self, config: Config) -> None:
        self.procfs = config.procfs
        self.top = config.ports_top_destinations
        self.source = config.ports_source

    def _netlink(self, proto: str, ephemeral: Set[int]) -> Dict[str, Set[int]]:
        """Local ports in the range per destination label ("" for unconnected sockets),
        counted while the dump streams in; only destinations are turned into text."""
        states = nl.ALL_STATES & ~(1 << nl.TCP_LISTEN) if proto == "tcp" else nl.ALL_STATES
        out: Dict[str, Set[int]] = defaultdict(set)
        for fam, _ in _FAMILIES:
            try:
                use = nl.local_port_use(fam, _NUMBERS[proto], states, ephemeral)
            except nl.NetlinkError as e:
                if e.absent:  # IPv6 off
                    continue
                raise
            for key, ports in use.items():
                if key[-2:] == b"\0\0":  # no peer: the port is used, towards nobody
                    out[""] |= ports
                else:
                    src, dst, dport = nl.decode_peer(fam, key)
                    out[_dest(Conn(src, 0, dst, dport, 0))] |= ports
        return out

    def _procfs(self, proto: str) -> List[Conn]:
        out: List[Conn] = []
        for _, fam in _FAMILIES:
            rows = net_sockets.read_socket_rows(self.procfs, _PROC[(proto, fam)])
            for r in rows or []:
                if proto == "tcp" and r.state == nl.TCP_LISTEN:
                    continue
                out.append(Conn(r.local, r.local_port, r.remote, r.remote_port, r.state))
        return out

    def _procfs_use(self, proto: str, ephemeral: Set[int]) -> Dict[str, Set[int]]:
        out: Dict[str, Set[int]] = defaultdict(set)
        for c in self._procfs(proto):
            if c.sport in ephemeral:
                # connected (UDP) or any non-listening TCP socket with a peer has a destination
                out[_dest(c) if c.dport else ""].add(c.sport)
        return out

    def _use(self, proto: str, ephemeral: Set[int]) -> Dict[str, Set[int]]:
        """Local ports in the range per destination label; "" holds sockets with no peer."""
        if self.source == "procfs" or not sys.platform.startswith("linux"):
            return self._procfs_use(proto, ephemeral)
        try:
            return self._netlink(proto, ephemeral)
        except nl.NetlinkError as e:
            if self.source == "netlink" or not e.falls_back:
                raise
            log.debug("netlink refused, reading /proc/net", extra={"err": str(e)})
            return self._procfs_use(proto, ephemeral)

    def collect(self) -> Iterator[Metric]:
        rng = sysctl.read_ints(self.procfs, "net/ipv4/ip_local_port_range")
        if rng is None:
            return
        if len(rng) != 2:
            raise sysctl.parse_error(self.procfs, "net/ipv4/ip_local_port_range",
                                     f"expected two ports, got {len(rng)}")
        reserved = sysctl.read_port_ranges(self.procfs, "net/ipv4/ip_local_reserved_ports")
        ephemeral = ephemeral_ports(rng[0], rng[1], reserved or [])
        available = M_AVAILABLE.family()
        available.add_metric([], float(len(ephemeral)))
        used, dmax, dest = M_USED.family(), M_DEST_MAX.family(), M_DEST.family()
        for proto in PROTOCOLS:
            per_dest = self._use(proto, ephemeral)
            ports: Set[int] = set().union(*per_dest.values())
            used.add_metric([proto], float(len(ports)))
            counts = Counter({d: len(p) for d, p in per_dest.items() if d})
            dmax.add_metric([proto], float(max(counts.values(), default=0)))
            if self.top:
                for d, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:self.top]:
                    dest.add_metric([proto, d], float(n))
        yield from (available, used, dmax)
        if self.top:
            yield dest
