"""/proc/net/dev: per-interface traffic counters of this network namespace.

Format (net/core/net-procfs.c dev_seq_show, dev_seq_printf_stats)::

    Inter-|   Receive                                                |  Transmit
     face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets ...
        lo: 18991757  349819    0    0    0     0          0         0 18991757  349819 ...

Column names are taken from the second header line, as prometheus/procfs does, so a kernel that
adds a column does not shift the others. The device name ends at the last colon before the
numbers: interface names may contain colons (aliases such as ``eth0:1``).
"""

from __future__ import annotations

from typing import Dict, List, Optional

from exporter.procfs import read_required
from exporter.procfs.errors import ParseError

# device -> {"receive_bytes": ..., "transmit_colls": ...}
NetDev = Dict[str, Dict[str, int]]


def _columns(header: str, path: str) -> List[str]:
    parts = header.split("|")
    if len(parts) != 3:
        raise ParseError(path, "expected 'face |receive columns|transmit columns'", 2)
    rx, tx = parts[1].split(), parts[2].split()
    if not rx or not tx:
        raise ParseError(path, "no receive or transmit columns in the header", 2)
    return [f"receive_{c}" for c in rx] + [f"transmit_{c}" for c in tx]


def parse_netdev(text: str, path: str) -> NetDev:
    lines = text.splitlines()
    if len(lines) < 2:
        raise ParseError(path, "missing the two header lines", len(lines) + 1)
    if "Receive" not in lines[0] or "Transmit" not in lines[0]:
        raise ParseError(path, "first header line does not name Receive and Transmit", 1)
    cols = _columns(lines[1], path)
    out: NetDev = {}
    for n, line in enumerate(lines[2:], start=3):
        if not line.strip():
            continue
        dev, sep, rest = line.rpartition(":")
        dev = dev.strip()
        if not sep or not dev:
            raise ParseError(path, "expected 'device: counters'", n)
        nums = rest.split()
        if len(nums) != len(cols):
            raise ParseError(path, f"{dev} has {len(nums)} values, the header names {len(cols)}",
                             n)
        try:
            out[dev] = {c: int(v) for c, v in zip(cols, nums)}
        except ValueError:
            raise ParseError(path, f"non-numeric counter for {dev}", n) from None
    return out


def read_netdev(root: str) -> Optional[NetDev]:
    """``<root>/net/dev``; missing, a ParseError (every Linux kernel has it)."""
    return read_required(root, parse_netdev, "net", "dev")
