"""routes: /proc/net/route and /proc/net/ipv6_route readers, the collector on fixtures and its
cap, and a live cross-check against ``ip route`` / ``ip -6 route`` in a namespace with two veth
interfaces, three routes and a default route per family."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import struct
from collections import Counter
from typing import List, Set, Tuple

import pytest
from helpers import FIXTURES, select
from nshelpers import dump, needs_root, netns, run, sh
from prometheus_client import CollectorRegistry

from exporter.collectors.routes import RoutesCollector, RoutesOptions
from exporter.config import Config
from exporter.procfs import route
from exporter.procfs.errors import ParseError

HEAD = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"


def _hex(addr: str) -> str:
    """As the kernel prints a __be32: %08X of the word in host byte order (010200C0 for
    192.0.2.1 on little-endian machines)."""
    return f"{struct.unpack('=I', socket.inet_aton(addr))[0]:08X}"


def test_parse_route_host_byte_order() -> None:
    gw, net, mask = _hex("192.0.2.1"), _hex("10.99.0.0"), _hex("255.255.0.0")
    r = route.parse_route(HEAD + f"eth0\t00000000\t{gw}\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
                          f"*\t{net}\t00000000\t0201\t0\t0\t0\t{mask}\t0\t0\t0\n", "route")
    assert r[0] == route.Route("ipv4", "0.0.0.0/0", "192.0.2.1", "eth0", 100, 3)
    assert r[0].is_default
    assert r[1].destination == "10.99.0.0/16" and r[1].interface == "" and r[1].gateway == ""


@pytest.mark.parametrize("text,line", [
    ("Iface Foo\n", 1),
    (HEAD + "eth0\t00000000\n", 2),
    (HEAD + "eth0\tXXXXXXXX\t00000000\t0003\t0\t0\t0\t00000000\t0\t0\t0\n", 2),
])
def test_parse_route_rejects(text: str, line: int) -> None:
    with pytest.raises(ParseError) as e:
        route.parse_route(text, "route")
    assert e.value.line == line


def test_parse_ipv6_route_and_main_table_filter() -> None:
    rs = route.read_ipv6_route(os.path.join(FIXTURES, "proc", "new"))
    assert rs is not None and len(rs) == 7
    main = [r for r in rs if route.in_main_table(r)]
    assert [(r.destination, r.gateway, r.interface, r.metric) for r in main] == [
        ("fd00::/64", "", "eth0", 256), ("fe80::/64", "", "eth0", 256),
        ("::/0", "fd00::1", "eth0", 1024)]
    with pytest.raises(ParseError, match=r"ipv6_route:2: bad address"):
        route.read_ipv6_route(os.path.join(FIXTURES, "proc", "malformed"))
    with pytest.raises(ParseError, match=r"expected 10 columns, got 3"):
        route.parse_ipv6_route("a b c\n", "ipv6_route")
    assert route.read_ipv6_route(os.path.join(FIXTURES, "proc", "ipv6-disabled")) is None


def collect(**kw: object) -> CollectorRegistry:
    cfg = Config(procfs=os.path.join(FIXTURES, "proc", "new"),
                 options={"routes": RoutesOptions(**kw)})  # type: ignore[arg-type]
    reg = CollectorRegistry(auto_describe=False)
    reg.register(RoutesCollector(cfg))
    return reg


def test_collector_counts_defaults_and_cap() -> None:
    reg = collect()
    assert reg.get_sample_value("netstat_route_entries", {"family": "ipv4", "interface": "veth-a1"}) == 2
    assert reg.get_sample_value("netstat_route_entries", {"family": "ipv6", "interface": "eth0"}) == 3
    assert reg.get_sample_value("netstat_route_default_info", {
        "family": "ipv4", "gateway": "198.51.100.1", "interface": "wlan0", "metric": "600"}) == 1
    names = {m.name for m in reg.collect()}
    assert "netstat_route_info" not in names  # only with --collector.routes.table
    full = [s for m in collect(table=True).collect() for s in m.samples
            if s.name == "netstat_route_info"]
    assert len(full) == 9
    capped = [s for m in collect(table=True, max_routes=4).collect()
              for s in m.samples if s.name == "netstat_route_info"]
    assert len(capped) == 4
    # The counts still cover every route.
    counted = sum(s.value for m in collect(table=True, max_routes=4).collect()
                  for s in m.samples if s.name == "netstat_route_entries")
    assert counted == 9


# --- live -----------------------------------------------------------------------------------

Key = Tuple[str, str, str, str, str]


def _ip_routes(ns: str, family: str) -> List[Key]:
    out: List[Key] = []
    for r in json.loads(run(ns, "ip", "-j", "-6" if family == "ipv6" else "-4", "route")):
        dst = r["dst"]
        if dst == "default":
            dst = "::/0" if family == "ipv6" else "0.0.0.0/0"
        dst = str(ipaddress.ip_network(dst, strict=False))
        out.append((family, dst, r.get("gateway", ""), r.get("dev", ""),
                    str(r.get("metric", 0))))
    return out


@needs_root
def test_live_against_ip_route() -> None:
    with netns("rt") as ns, netns("rtpeer") as peer:
        sh(["ip", "-n", ns, "link", "add", "ra0", "type", "veth", "peer", "name", "pa0",
            "netns", peer],
           ["ip", "-n", ns, "link", "add", "ra1", "type", "veth", "peer", "name", "pa1",
            "netns", peer])
        for dev, v4, v6 in (("ra0", "10.81.0.1/24", "fd81::1/64"),
                            ("ra1", "10.82.0.1/24", "fd82::1/64")):
            sh(["ip", "-n", ns, "addr", "add", v4, "dev", dev],
               ["ip", "-n", ns, "addr", "add", v6, "dev", dev, "nodad"],
               ["ip", "-n", ns, "link", "set", dev, "up"],
               ["ip", "-n", peer, "link", "set", "p" + dev[1:], "up"])
        sh(["ip", "-n", ns, "route", "add", "10.90.0.0/16", "via", "10.81.0.2"],
           ["ip", "-n", ns, "route", "add", "10.91.0.0/24", "via", "10.82.0.2", "metric", "50"],
           ["ip", "-n", ns, "route", "add", "10.92.0.5/32", "dev", "ra1"],
           ["ip", "-n", ns, "route", "add", "default", "via", "10.81.0.254", "metric", "10"],
           ["ip", "-n", ns, "-6", "route", "add", "fd90::/48", "via", "fd81::2"],
           ["ip", "-n", ns, "-6", "route", "add", "fd91::/48", "via", "fd82::2", "metric", "7"],
           ["ip", "-n", ns, "-6", "route", "add", "fd92::5/128", "dev", "ra1"],
           ["ip", "-n", ns, "-6", "route", "add", "default", "via", "fd82::2", "metric", "100"])
        expected = _ip_routes(ns, "ipv4") + _ip_routes(ns, "ipv6")
        samples = dump(ns, "--collector.disable-defaults", "--collector.routes",
                       "--collector.routes.table")
        capped = dump(ns, "--collector.disable-defaults", "--collector.routes",
                      "--collector.routes.table", "--collector.routes.max-routes=3")
    # ip route lists what the namespace holds: 3 added routes + default + 2 connected per
    # family (IPv6 also fe80::/64 on each interface).
    assert len([k for k in expected if k[0] == "ipv4"]) == 6
    counts = Counter((k[0], k[3]) for k in expected)
    got_counts = {(s[1]["family"], s[1]["interface"]): s[2]
                  for s in select(samples, "netstat_route_entries")}
    assert got_counts == {k: float(v) for k, v in counts.items()}
    defaults = {(s[1]["family"], s[1]["gateway"], s[1]["interface"], s[1]["metric"])
                for s in select(samples, "netstat_route_default_info")}
    assert defaults == {("ipv4", "10.81.0.254", "ra0", "10"), ("ipv6", "fd82::2", "ra1", "100")}
    table: Set[Key] = {(s[1]["family"], s[1]["destination"], s[1]["gateway"],
                        s[1]["interface"], s[1]["metric"])
                       for s in select(samples, "netstat_route_info")}
    assert table == set(expected)
    assert len(select(capped, "netstat_route_info")) == 3
    assert sum(s[2] for s in select(capped, "netstat_route_entries")) == len(expected)
