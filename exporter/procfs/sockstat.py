"""/proc/net/sockstat and /proc/net/sockstat6: socket totals kept by the kernel.

Format (net/ipv4/proc.c sockstat_seq_show, net/ipv6/proc.c sockstat6_seq_show)::

    sockets: used 166
    TCP: inuse 6 orphan 0 tw 2 alloc 9 mem 1
    UDP: inuse 3 mem 2
    UDPLITE: inuse 0
    RAW: inuse 0
    FRAG: inuse 0 memory 0

Scope differs per field: ``sockets used``, every ``inuse``, TCP ``tw`` and FRAG are per network
namespace; TCP ``orphan``, ``alloc`` and every ``mem`` are host-wide (global counters).
``mem`` is in pages; FRAG ``memory`` is in bytes.
"""

from __future__ import annotations

from typing import AbstractSet, Dict, Optional

from exporter.procfs import read_parsed
from exporter.procfs.errors import ParseError

Sockstat = Dict[str, Dict[str, int]]


def parse_sockstat(text: str, path: str, protos: Optional[AbstractSet[str]] = None) -> Sockstat:
    """``{"TCP": {"inuse": 6, ...}, "sockets": {"used": 166}, ...}``; with ``protos``, only
    those lines are parsed (and checked)."""
    out: Sockstat = {}
    for n, line in enumerate(text.splitlines(), start=1):
        proto, sep, rest = line.partition(":")
        if protos is not None and sep and proto not in protos:
            continue
        f = rest.split()
        if not sep:
            if not line.strip():
                continue
            raise ParseError(path, "expected 'PROTO: key value ...'", n)
        if not f or len(f) % 2:
            raise ParseError(path, f"expected key/value pairs after {proto!r}", n)
        try:
            out[proto.strip()] = dict(zip(f[0::2], map(int, f[1::2])))
        except ValueError:
            k, v = next((k, v) for k, v in zip(f[0::2], f[1::2]) if not _is_int(v))
            raise ParseError(path, f"value of {proto} {k} is not a number: {v!r}", n) from None
    return out


def _is_int(v: str) -> bool:
    try:
        int(v)
    except ValueError:
        return False
    return True


def read_sockstat(root: str, name: str = "sockstat") -> Optional[Sockstat]:
    """Read ``<root>/net/sockstat`` (or ``sockstat6``); None when absent."""
    return read_parsed(root, parse_sockstat, "net", name)


def parse_protocols(text: str, path: str) -> Dict[str, int]:
    """/proc/net/protocols (net/core/sock.c proto_seq_show): ``{"UNIX-STREAM": 2, ...}``, the
    sockets column of every protocol, the kernel's per-namespace in-use count
    (sock_prot_inuse_get); ``-1`` for a protocol that keeps none. The header names the
    columns; a file without one is refused."""
    lines = text.splitlines()
    if not lines or lines[0].split()[:3] != ["protocol", "size", "sockets"]:
        raise ParseError(path, "expected the header 'protocol  size sockets ...'", 1)
    out: Dict[str, int] = {}
    for n, line in enumerate(lines[1:], start=2):
        f = line.split()
        if not f:
            continue
        if len(f) < 3:
            raise ParseError(path, f"expected 'name size sockets ...', got {line.strip()!r}", n)
        try:
            out[f[0]] = int(f[2])
        except ValueError:
            raise ParseError(path, f"sockets of {f[0]} is not a number: {f[2]!r}", n) from None
    return out


def read_protocols(root: str) -> Optional[Dict[str, int]]:
    """``<root>/net/protocols``, parsed; None when absent."""
    return read_parsed(root, parse_protocols, "net", "protocols")
