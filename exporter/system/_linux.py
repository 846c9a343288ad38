"""Linux: every collector, from netlink sock_diag, /proc and /sys (the readers in
:mod:`exporter.netlink`, :mod:`exporter.procfs` and :mod:`exporter.sysfs`), under the
``--path.procfs`` and ``--path.sysfs`` roots."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

from exporter.config import ConfigError
from exporter.procfs import netdev, route, shows_live_net, snmp, snmp6
from exporter.sysfs import net_class
from exporter.system.common import Link, ProtocolTables, System


class LinuxSystem(System):
    name = "linux"
    collectors = frozenset({"sockets", "listeners", "protocols", "interfaces", "routes", "ports",
                            "limits", "netns", "tcpevents"})
    has_procfs = True

    def __init__(self, procfs: str = "/proc", sysfs: str = "/sys") -> None:
        self.procfs = procfs
        self.sysfs = sysfs

    def socket_source(self, asked: str) -> str:
        """As asked: for "auto" the TCP socket iterator on large tables, netlink, then /proc/net
        (exporter.sockets.snapshot). But netlink and the iterator read this process's own
        namespace, which only a mounted procfs shows: a copy of a /proc tree (test fixtures,
        another host's files) is read from its own files. "bpf" is refused at once when the
        iterator cannot be loaded."""
        if asked in ("auto", "bpf", "netlink") and not shows_live_net(self.procfs):
            if asked != "auto":
                raise ConfigError(
                    f"socket source {asked!r} reads this host's sockets, not those of "
                    f"--path.procfs {self.procfs!r}, a copy of a /proc tree rather than a "
                    "mounted procfs: use procfs or auto")
            return "procfs"
        if asked == "bpf":
            # Loaded now, once for the process, so that a refusal stops the start with the
            # reason rather than failing every scrape.
            from exporter.sockets.snapshot import tcp_iterator_problem

            problem = tcp_iterator_problem()
            if problem:
                raise ConfigError(f"socket source 'bpf' cannot load the TCP socket iterator: "
                                  f"{problem}; use auto or netlink")
        return asked

    def interfaces(self, wanted: Callable[[str], bool]) -> Dict[str, Link]:
        """/proc/net/dev's counters; state, MTU and speed from /sys/class/net, read only for
        the interfaces ``wanted`` accepts."""
        stats = netdev.read_netdev(self.procfs)
        out: Dict[str, Link] = {}
        for dev, counters in (stats or {}).items():
            if not wanted(dev):
                continue
            nc = net_class.read_net_class(self.sysfs, dev)
            if nc is None:
                out[dev] = Link(counters)
                continue
            out[dev] = Link(counters, up=nc.up, mtu=nc.mtu,
                            speed_bytes=None if nc.speed_mbps is None
                            else float(nc.speed_mbps) * 125000.0)
        return out

    def protocol_tables(self) -> ProtocolTables:
        return (snmp.read_snmp(self.procfs), snmp.read_netstat(self.procfs),
                snmp6.read_snmp6(self.procfs))

    def routes(self) -> Optional[List[route.Route]]:
        """/proc/net/route (the IPv4 main table) and /proc/net/ipv6_route without the
        local-table entries (:func:`exporter.procfs.route.in_main_table`)."""
        v4 = route.read_route(self.procfs)
        v6 = route.read_ipv6_route(self.procfs)
        if v4 is None and v6 is None:
            return None
        return [r for r in (v4 or []) + (v6 or []) if route.in_main_table(r)]


SYSTEM = LinuxSystem
