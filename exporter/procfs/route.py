"""/proc/net/route and /proc/net/ipv6_route: the routing tables.

/proc/net/route (net/ipv4/fib_trie.c fib_route_seq_show) lists the IPv4 main table only, one
route per line, addresses as the ``%08X`` of a ``__be32`` -- that is, in host byte order, so on
little-endian machines 192.0.2.1 reads ``010200C0``::

    Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
    eth0	00000000	010200C0	0003	0	0	0	00000000	0	0	0

Unreachable/prohibit routes have no device and print ``*``.

/proc/net/ipv6_route (net/ipv6/route.c ipv6_route_native_seq_show) lists every table, main and
local alike, with no table column::

    dest plen src plen nexthop metric refcnt use flags dev   (addresses in 32 hex digits)

:func:`in_main_table` tells the local-table entries apart by their flags, as far as the file
allows.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import List, Optional

from exporter.procfs import read_parsed, read_required
from exporter.procfs.errors import ParseError
from exporter.procfs.lines import rows

# include/uapi/linux/route.h and include/uapi/linux/ipv6_route.h
RTF_UP = 0x0001
RTF_GATEWAY = 0x0002
RTF_REJECT = 0x0200
RTF_ANYCAST = 0x00100000
RTF_LOCAL = 0x80000000


@dataclass(frozen=True)
class Route:
    family: str  # "ipv4" | "ipv6"
    destination: str  # CIDR, e.g. "10.0.0.0/24", "::/0"
    gateway: str  # "" when the route has no gateway (RTF_GATEWAY clear)
    interface: str  # "" for a route without a device ("*" in /proc/net/route)
    metric: int
    flags: int

    @property
    def is_default(self) -> bool:
        return self.destination in ("0.0.0.0/0", "::/0")


def _v4(hexword: str) -> str:
    # Host byte order: pack natively to get the address bytes back.
    return socket.inet_ntoa(struct.pack("=I", int(hexword, 16)))


def parse_route(text: str, path: str) -> List[Route]:
    lines = text.splitlines()
    if not lines:
        return []
    head = lines[0].split()
    need = ("Iface", "Destination", "Gateway", "Flags", "Metric", "Mask")
    if not all(c in head for c in need):
        raise ParseError(path, f"header does not name {', '.join(need)}", 1)
    col = {c: head.index(c) for c in need}
    out: List[Route] = []
    for n, f in rows(lines[1:], start=2):
        if len(f) < len(head):
            raise ParseError(path, f"expected {len(head)} columns, got {len(f)}", n)
        try:
            dst, gw, mask = (_v4(f[col[c]]) for c in ("Destination", "Gateway", "Mask"))
            flags = int(f[col["Flags"]], 16)
            metric = int(f[col["Metric"]])
        except (ValueError, struct.error):
            raise ParseError(path, "bad address, flags or metric", n) from None
        try:
            net = ipaddress.IPv4Network(f"{dst}/{mask}", strict=False)
        except ValueError:
            raise ParseError(path, f"bad netmask {mask}", n) from None
        dev = f[col["Iface"]]
        out.append(Route("ipv4", str(net), gw if flags & RTF_GATEWAY else "",
                         "" if dev == "*" else dev, metric, flags))
    return out


def _v6(hex32: str) -> str:
    if len(hex32) != 32:
        raise ValueError(hex32)
    return socket.inet_ntop(socket.AF_INET6, bytes.fromhex(hex32))


@lru_cache(maxsize=4096)  # a host's IPv6 routes change seldom; each is formatted once
def _v6_network(hex32: str, plen: int) -> str:
    """The destination column and prefix length as ipaddress writes the network (host bits
    cleared)."""
    return str(ipaddress.IPv6Network(f"{_v6(hex32)}/{plen}", strict=False))


def parse_ipv6_route(text: str, path: str) -> List[Route]:
    out: List[Route] = []
    for n, f in rows(text.splitlines()):
        if len(f) != 10:
            raise ParseError(path, f"expected 10 columns, got {len(f)}", n)
        try:
            net = _v6_network(f[0], int(f[1], 16))
            nexthop = _v6(f[4])
            metric, flags = int(f[5], 16), int(f[8], 16)
        except ValueError:
            raise ParseError(path, "bad address, prefix length, metric or flags", n) from None
        out.append(Route("ipv6", net, nexthop if flags & RTF_GATEWAY else "", f[9],
                         metric, flags))
    return out


_MULTICAST6 = str(ipaddress.IPv6Network("ff00::/8"))


def in_main_table(r: Route) -> bool:
    """Whether an /proc/net/ipv6_route entry is one ``ip -6 route`` (the main table) shows.

    The file has no table column, so local-table entries are recognised by what the kernel puts
    there: local and anycast addresses carry RTF_LOCAL or RTF_ANYCAST (addrconf_f6i_alloc in
    net/ipv6/route.c), the per-device ff00::/8 routes are added to the local table
    (addrconf_add_mroute in net/ipv6/addrconf.c), and ip6_null_entry (reject, metric
    0xffffffff, on lo) is the terminator of every table. Routes of policy-routing tables cannot
    be told apart and count as main. IPv4 entries are always main (/proc/net/route shows no
    other table).
    """
    if r.family == "ipv4":
        return True
    if r.flags & (RTF_LOCAL | RTF_ANYCAST):
        return False
    if r.flags & RTF_REJECT and r.metric == 0xFFFFFFFF and r.destination == "::/0":
        return False
    return r.destination != _MULTICAST6  # both as ipaddress writes a network


def read_route(root: str) -> Optional[List[Route]]:
    """``<root>/net/route``; missing, a ParseError (every Linux kernel has it)."""
    return read_required(root, parse_route, "net", "route")


def read_ipv6_route(root: str) -> Optional[List[Route]]:
    """``<root>/net/ipv6_route``; None when absent (IPv6 off)."""
    return read_parsed(root, parse_ipv6_route, "net", "ipv6_route")
