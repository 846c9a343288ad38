"""Collector ``routes``: what ``netstat -r`` / ``ip route`` / ``ip -6 route`` show, bounded.

Route counts per family and interface and the default routes are always exported; the full
table only with ``--collector.routes.table``, and then at most
``--collector.routes.max-routes`` routes (a router's table can hold a million). IPv4 comes from
/proc/net/route (the main table), IPv6 from /proc/net/ipv6_route without the local-table
entries (see :func:`exporter.procfs.route.in_main_table`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Iterator, List, Set, Tuple

from prometheus_client.core import Metric

from exporter.collectors.api import Base, Flag, MetricDoc, register
from exporter.labels import label_value

M_ROUTES = MetricDoc(
    "netstat_route_entries", "gauge",
    "Routes per address family and outgoing interface, as ip route and ip -6 route list them "
    "(/proc/net/route: the IPv4 main table; /proc/net/ipv6_route without local-table entries). "
    "interface is empty for routes without a device (unreachable, prohibit).",
    ("family", "interface"))
M_DEFAULT = MetricDoc(
    "netstat_route_default_info", "gauge",
    "A default route (destination 0.0.0.0/0 or ::/0), value 1; gateway is empty for a route "
    "without one (a point-to-point device).",
    ("family", "gateway", "interface", "metric"))
M_INFO = MetricDoc(
    "netstat_route_info", "gauge",
    "One route, value 1. At most --collector.routes.max-routes routes are listed, IPv4 first in "
    "file order; the rest are counted in netstat_route_entries but not listed.",
    ("family", "destination", "gateway", "interface", "metric"),
    note="only with --collector.routes.table")
METRICS = (M_ROUTES, M_DEFAULT, M_INFO)


@dataclass(frozen=True)
class RoutesOptions:
    table: bool = False
    max_routes: int = 1000


FLAGS = (
    Flag("table", "Export every route as netstat_route_info."),
    Flag("max_routes", "Routes listed by --collector.routes.table at most; the rest are only "
                       "counted.", min=0),
)


@register("routes", default_enabled=True, metrics=METRICS, options=RoutesOptions, flags=FLAGS)
class RoutesCollector(Base[RoutesOptions]):
    """route counts per family and interface and the default routes from /proc/net/route and
    /proc/net/ipv6_route (netstat -r); the whole table, capped, with --collector.routes.table"""

    def collect(self) -> Iterator[Metric]:
        table = self.system.routes()
        if table is None:
            return
        routes = [dataclasses.replace(r, interface=label_value(r.interface)) for r in table]
        counts: Counter[Tuple[str, str]] = Counter((r.family, r.interface) for r in routes)
        total = M_ROUTES.family()
        for (fam, dev), n in sorted(counts.items()):
            total.add_metric([fam, dev], float(n))
        # Emit each label set once: routes that differ only in what the labels leave out
        # (TOS, table, source prefix) would otherwise be duplicate series.
        default = M_DEFAULT.family()
        seen: Set[Tuple[str, ...]] = set()
        for r in routes:
            labels: Tuple[str, ...] = (r.family, r.gateway, r.interface, str(r.metric))
            if r.is_default and labels not in seen:
                seen.add(labels)
                default.add_metric(list(labels), 1.0)
        out: List[Metric] = [total, default]
        if self.opts.table:
            info = M_INFO.family()
            listed: Set[Tuple[str, ...]] = set()
            for r in routes:
                if len(listed) >= self.opts.max_routes:
                    break
                labels = (r.family, r.destination, r.gateway, r.interface, str(r.metric))
                if labels not in listed:
                    listed.add(labels)
                    info.add_metric(list(labels), 1.0)
            out.append(info)
        yield from out
