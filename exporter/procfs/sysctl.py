"""/proc/sys: kernel parameters (sysctls) as integers.

``read_ints(root, "net/ipv4/tcp_mem")`` reads ``<root>/sys/net/ipv4/tcp_mem``; a missing file
(a module not loaded, such as nf_conntrack, or a parameter this kernel lacks) is None. Most
networking sysctls are per network namespace (net/ipv4/sysctl_net_ipv4.c ipv4_net_table);
tcp_mem is global.
"""

from __future__ import annotations

import os
from typing import List, Optional, Tuple

from exporter.procfs import read_parsed
from exporter.procfs.errors import ParseError


def parse_ints(text: str, path: str) -> List[int]:
    """Whitespace-separated integers (``32768\\t60999``, ``287898 383867 575796``)."""
    out: List[int] = []
    for v in text.split():
        try:
            out.append(int(v))
        except ValueError:
            raise ParseError(path, f"not an integer: {v[:40]!r}", 1) from None
    if not out:
        raise ParseError(path, "empty", 1)
    return out


def _path(root: str, name: str) -> str:
    return os.path.join(root, "sys", *name.split("/"))


def parse_error(root: str, name: str, message: str) -> ParseError:
    """A ParseError naming ``<root>/sys/<name>``, for callers that check the value count."""
    return ParseError(_path(root, name), message, 1)


def read_ints(root: str, name: str) -> Optional[List[int]]:
    """``<root>/sys/<name>`` as integers; None when absent."""
    return read_parsed(root, parse_ints, "sys", *name.split("/"))


def read_int(root: str, name: str) -> Optional[int]:
    """A single-valued sysctl; None when absent."""
    v = read_ints(root, name)
    if v is None:
        return None
    if len(v) != 1:
        raise ParseError(_path(root, name), f"expected one value, got {len(v)}", 1)
    return v[0]


def parse_port_ranges(text: str, path: str) -> List[Tuple[int, int]]:
    """``ip_local_reserved_ports``: ``8080,9000-9010`` -> ``[(8080, 8080), (9000, 9010)]``;
    an empty file is no reserved ports (proc_do_large_bitmap in kernel/sysctl.c prints ranges
    separated by commas)."""
    out: List[Tuple[int, int]] = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise ParseError(path, f"bad port range {part[:40]!r}", 1) from None
        if not 0 <= a <= b <= 65535:
            raise ParseError(path, f"bad port range {part[:40]!r}", 1)
        out.append((a, b))
    return out


def read_port_ranges(root: str, name: str) -> Optional[List[Tuple[int, int]]]:
    """A port-range list sysctl such as ``net/ipv4/ip_local_reserved_ports``; None when absent."""
    return read_parsed(root, parse_port_ranges, "sys", *name.split("/"))
