"""Collector ``ports``: use of the ephemeral (local) port range, overall and per destination.

The range is net.ipv4.ip_local_port_range minus net.ipv4.ip_local_reserved_ports (both apply
to IPv6 too). A local port counts as used when a non-listening TCP socket or any UDP socket has
it. Exhaustion happens per destination: connect() needs a local port that is free for its
(local address, remote address, remote port), so the same local port can serve many
destinations at once (__inet_hash_connect and __inet_check_established in
net/ipv4/inet_hashtables.c); the per-destination maximum is what runs out first, typically
because of TIME_WAIT sockets towards one busy backend.

Sockets come from the scrape's socket snapshot (:mod:`exporter.sockets`): the same pass over
the TCP and UDP tables that the sockets and listeners collectors use counts the ports, so this
collector adds no dump of its own. Sources as for the sockets collector
(``--collector.ports.source``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from prometheus_client.core import Metric

from exporter.collectors.api import Flag, MetricDoc, SocketBase, register
from exporter.sockets.snapshot import SOURCES, Snapshot, Wants

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
class PortsOptions:
    top_destinations: int = 0
    source: str = "auto"


FLAGS = (
    Flag("top_destinations", "Export the local-port use of the N busiest destinations "
                             "(local address, remote address, remote port).", min=0),
    Flag("source", "Where the ports collector reads sockets: bpf (TCP counted in the kernel), "
                   "netlink sock_diag, /proc/net, or psutil; auto tries them in that order, "
                   "bpf only for TCP tables of 2,000 sockets or more (500 where bound "
                   "sockets are found through the open files).", choices=SOURCES),
)


@register("ports", default_enabled=True, metrics=METRICS, options=PortsOptions, flags=FLAGS)
class PortsCollector(SocketBase[PortsOptions]):
    """ephemeral port range size and use by TCP and UDP sockets, overall and towards the busiest
    destination (local address, remote address, remote port)"""

    def socket_wants(self) -> Wants:
        return Wants(ephemeral=True)

    def collect_snapshot(self, snap: Snapshot) -> Iterator[Metric]:
        rng = snap.ephemeral()
        if rng is None:
            return  # no ip_local_port_range: no data
        available = M_AVAILABLE.family()
        available.add_metric([], float(len(rng.ports)))
        used, dmax, dest = M_USED.family(), M_DEST_MAX.family(), M_DEST.family()
        for proto in PROTOCOLS:
            tables = snap.inet(proto)
            if tables is None or tables.ports is None:
                continue
            use = tables.ports
            used.add_metric([proto], float(use.used))
            dmax.add_metric([proto], float(max(use.destinations.values(), default=0)))
            if self.opts.top_destinations:
                ranked = sorted(use.destinations.items(), key=lambda kv: (-kv[1], kv[0]))
                for d, n in ranked[:self.opts.top_destinations]:
                    dest.add_metric([proto, d], float(n))
        yield from (available, used, dmax)
        if self.opts.top_destinations:
            yield dest
