"""/proc/net/{tcp,tcp6,udp,udp6,udplite,udplite6,raw,raw6} and /proc/net/unix: per-socket tables.

The fallback socket source where netlink sock_diag is refused: one row reader
(:func:`iter_socket_rows`) for every inet table, whose rows the socket snapshot
(:mod:`exporter.sockets`) decodes with the same pass as netlink's records. Formats are from
net/ipv4/tcp_ipv4.c (get_tcp4_sock), net/ipv4/udp.c (udp4_format_sock), net/ipv4/raw.c and
net/unix/af_unix.c (unix_seq_show).
"""

from __future__ import annotations

import socket
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Tuple

from exporter.procfs import REQUIRED, read_parsed, read_required
from exporter.procfs.errors import ParseError
from exporter.procfs.lines import table
from exporter.vocabulary.names import TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN

# /proc/net/unix "St" column is the socket's SS_* state (include/uapi/linux/net.h), and the
# __SO_ACCEPTCON flag (1 << 16) marks a listener.
SS_CONNECTED = 3
SO_ACCEPTCON = 1 << 16
# The netlink view (sk_state) of the same three situations, so both sources agree.
UNIX_ESTABLISHED, UNIX_UNCONNECTED, UNIX_LISTEN = TCP_ESTABLISHED, TCP_CLOSE, TCP_LISTEN


@dataclass(frozen=True)
class SocketRow:
    """One row of a /proc/net/{tcp,udp,udplite,raw}[6] table."""

    family: int  # socket.AF_INET or AF_INET6
    local: str
    local_port: int
    remote: str
    remote_port: int
    state: int
    tx_queue: int
    rx_queue: int
    uid: int
    inode: int


def _hex_addr(text: str) -> Tuple[int, str]:
    """Decode an address as the kernel prints it: each 32-bit word in host byte order, in hex
    (net/ipv4/tcp_ipv4.c get_tcp4_sock "%08X", net/ipv6/tcp_ipv6.c get_tcp6_sock "%08X" x4)."""
    if len(text) not in (8, 32):
        raise ValueError(f"address {text!r}")
    words = [int(text[i:i + 8], 16) for i in range(0, len(text), 8)]
    fam = socket.AF_INET if len(words) == 1 else socket.AF_INET6
    return fam, socket.inet_ntop(fam, struct.pack(f"={len(words)}I", *words))


def iter_socket_rows(lines: Iterable[str], path: str) -> Iterator[SocketRow]:
    """Rows of a /proc/net/tcp-style table, one at a time. Columns:
    ``sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode``.

    For a TCP listener rx_queue is the accept queue length (sk_ack_backlog) and tx_queue is 0:
    the backlog limit is not in this file.
    """
    for n, f in table(lines, path, lambda header: "local_address" in header, 10):
        if len(f) < 4:
            raise ParseError(path, f"expected at least 10 columns, got {len(f)}", n)
        try:
            la, lp = f[1].split(":")
            ra, rp = f[2].split(":")
            fam, local = _hex_addr(la)
            _, remote = _hex_addr(ra)
            lport, rport = int(lp, 16), int(rp, 16)
        except ValueError:
            raise ParseError(path, f"bad address {f[1]!r} {f[2]!r}", n) from None
        try:
            state = int(f[3], 16)
        except ValueError:
            raise ParseError(path, f"bad state {f[3]!r}", n) from None
        if len(f) < 10:
            raise ParseError(path, f"expected at least 10 columns, got {len(f)}", n)
        if ":" not in f[4]:
            raise ParseError(path, f"expected tx_queue:rx_queue, got {f[4]!r}", n)
        try:
            tx, rx = (int(x, 16) for x in f[4].split(":", 1))
            uid, inode = int(f[7]), int(f[9])
        except ValueError as e:
            raise ParseError(path, f"bad field: {e}", n) from None
        yield SocketRow(fam, local, lport, remote, rport, state, tx, rx, uid, inode)


def parse_socket_rows(lines: Iterable[str], path: str) -> List[SocketRow]:
    """Every row of a /proc/net/tcp-style table (see :func:`iter_socket_rows`)."""
    return list(iter_socket_rows(lines, path))


def read_socket_rows(root: str, name: str) -> Optional[List[SocketRow]]:
    """Rows of ``<root>/net/<name>``; None when the file is absent (IPv6 or the protocol off),
    but for the IPv4 TCP and UDP tables, which every kernel has: missing, they are a ParseError
    (``--path.procfs`` is not what it claims)."""
    read = read_required if f"net/{name}" in REQUIRED else read_parsed
    return read(root, lambda text, path: parse_socket_rows(text.splitlines(), path), "net", name)


def parse_unix(lines: Iterable[str], path: str) -> Counter:  # type: ignore[type-arg]
    """Count /proc/net/unix rows per (type, state) with netlink's state numbers.

    Columns: Num RefCount Protocol Flags Type St Inode [Path]. Only the first six are needed
    to count, so a table without Inode (or with columns added after it) is still counted.
    """
    counts: Counter = Counter()  # type: ignore[type-arg]
    for n, f in table(lines, path, lambda header: header.startswith("Num"), 7):
        if len(f) < 6:
            raise ParseError(path, f"expected at least 6 columns, got {len(f)}", n)
        try:
            flags, typ, st = int(f[3], 16), int(f[4], 16), int(f[5], 16)
        except ValueError:
            raise ParseError(path, f"bad flags/type/state {f[3:6]}", n) from None
        if flags & SO_ACCEPTCON:
            state = UNIX_LISTEN
        elif st == SS_CONNECTED:
            state = UNIX_ESTABLISHED
        else:
            state = UNIX_UNCONNECTED
        counts[(typ, state)] += 1
    return counts


def read_unix(root: str) -> Optional[Counter]:  # type: ignore[type-arg]
    """``<root>/net/unix`` counted per (type, state); None when absent."""
    return read_parsed(root, lambda text, path: parse_unix(text.splitlines(), path), "net", "unix")
