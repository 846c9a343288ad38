"""/proc/net/snmp6: IPv6 protocol counters, one ``Name value`` pair per line.

Printed by net/ipv6/proc.c (snmp6_seq_show): the Ip6, Icmp6, Udp6 and UdpLite6 groups, each
name being the group followed by the field (``Ip6InReceives``, ``Udp6RcvbufErrors``). Icmp6
also lists named per-type counters (``Icmp6InEchos``) and, for types seen so far, numbered
ones (``Icmp6OutType135``; snmp6_seq_show_icmpv6). The file is absent when IPv6 is disabled
(``ipv6.disable=1``) or not built: that is no data, not an error.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Dict, Optional, Tuple

from exporter.procfs import read_parsed
from exporter.procfs.errors import ParseError
from exporter.procfs.lines import rows

# Longest prefix first: "UdpLite6..." must not be taken for "Udp6"-something.
GROUPS = ("UdpLite6", "Icmp6", "Udp6", "Ip6")

Groups = Dict[str, Dict[str, int]]


@lru_cache(maxsize=1024)  # the names the kernel prints: a bounded set
def split_name(name: str) -> Optional[Tuple[str, str]]:
    """``Udp6RcvbufErrors`` -> ``("Udp6", "RcvbufErrors")``; None for an unknown group."""
    for g in GROUPS:
        if name.startswith(g) and len(name) > len(g):
            return g, name[len(g):]
    return None


def parse_snmp6(text: str, path: str) -> Groups:
    """``{"Ip6": {"InReceives": 1, ...}, "Udp6": {...}}``. Names of a group this parser does
    not know are kept under the group ``""`` with the whole name as the field."""
    out: Groups = {}
    for n, f in rows(text.splitlines()):
        if len(f) != 2:
            raise ParseError(path, f"expected 'Name value', got {len(f)} fields", n)
        try:
            v = int(f[1])
        except ValueError:
            raise ParseError(path, f"value of {f[0]} is not a number: {f[1]!r}", n) from None
        parts = split_name(f[0])
        group, field = parts if parts is not None else ("", f[0])
        out.setdefault(group, {})[field] = v
    return out


def read_snmp6(root: str) -> Optional[Groups]:
    """``<root>/net/snmp6``; None when absent (IPv6 off)."""
    return read_parsed(root, parse_snmp6, "net", "snmp6")
