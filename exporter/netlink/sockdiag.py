"""Socket dumps over NETLINK_SOCK_DIAG: the public API of :mod:`exporter.netlink`.

The work is split by job:

* :mod:`exporter.netlink.transport`: the socket, sending a request, reading replies until
  NLMSG_DONE, and the one errno policy (:class:`NetlinkError`: ``absent``, ``falls_back``,
  ``unsupported_request``);
* :mod:`exporter.netlink.requests`: inet_diag_req_v2, the older request that dumps both
  address families at once, unix_diag_req, and the bytecode that filters by local port;
* :mod:`exporter.netlink.inet`: inet_diag_msg replies decoded in bulk into runs of records;
* :mod:`exporter.netlink.unix`: unix_diag_msg replies.

This module re-exports what callers use and adds the small per-purpose readers below. The
socket snapshot of a scrape (:mod:`exporter.sockets`) is built on the same pieces.
"""

from __future__ import annotations

import socket
from collections import Counter
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

from exporter.netlink.inet import (
    INET_MSG_LEN,
    CountSink,
    InetSocket,
    QueueCounts,
    dump_records,
    list_records,
    parse_inet_msg,
    parse_record,
)
from exporter.netlink.requests import (
    ALL_STATES,
    INET_REQ,
    INET_REQ_V1,
    IPPROTO_RAW,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPPROTO_UDPLITE,
    MAX_FILTER_RANGES,
    TCPDIAG_GETSOCK,
    cached_sport_filter,
    inet_request,
    port_ranges,
    sport_filter,
    tcp_request_both_families,
    unix_request,
)
from exporter.netlink.transport import (
    NLM_F_DUMP_INTR,
    NLMSG_DONE,
    NLMSG_ERROR,
    SOCK_DIAG_BY_FAMILY,
    AnySock,
    Channel,
    NetlinkError,
    open_socket,
    uniform_run,
    walk,
)
from exporter.netlink.unix import UNIX_DIAG_RQLEN, count_unix
from exporter.sockets.names import (  # the kernel's state numbers, re-exported for callers
    TCP_CLOSE,
    TCP_ESTABLISHED,
    TCP_LISTEN,
    TCP_TIME_WAIT,
)

__all__ = [
    "ALL_STATES", "INET_MSG_LEN", "INET_REQ", "INET_REQ_V1", "IPPROTO_RAW", "IPPROTO_TCP",
    "IPPROTO_UDP", "IPPROTO_UDPLITE", "MAX_FILTER_RANGES", "NLMSG_DONE", "NLMSG_ERROR",
    "NLM_F_DUMP_INTR", "SOCK_DIAG_BY_FAMILY", "TCPDIAG_GETSOCK", "TCP_CLOSE", "TCP_ESTABLISHED", "TCP_LISTEN",
    "TCP_TIME_WAIT", "UNIX_DIAG_RQLEN",
    "Channel", "CountSink", "InetSocket", "NetlinkError", "QueueCounts", "count_by_port",
    "count_inet", "count_tcp_families", "count_unix", "dump_records", "feed", "inet_request",
    "list_inet", "open_socket", "parse_inet_msg", "parse_record", "port_ranges", "sport_filter",
    "unix_request",
]


def feed(buf: bytearray, n: int, on_message: Callable[[bytearray, int, int], None],
         on_uniform: Optional[Callable[[bytearray, int, int, int], None]] = None, *,
         source: str = "netlink", msg_type: int = SOCK_DIAG_BY_FAMILY) -> Tuple[bool, bool]:
    """Parse one received chunk ``buf[:n]``: runs of equal-length messages go to
    ``on_uniform(buf, start, end, length)``, every other message to ``on_message(buf, off,
    length)``. Returns (done, interrupted)."""
    run: Optional[Callable[[int], int]] = None
    if on_uniform is not None:
        uniform = on_uniform

        def run(off: int) -> int:
            return uniform_run(buf, off, n, uniform, msg_type)
    return walk(buf, 0, n, on_message, source=source, msg_type=msg_type, on_run=run)


def count_inet(family: int, protocol: int, states: int = ALL_STATES, *,
               sock: AnySock = None) -> QueueCounts:
    """Count one family's sockets of one protocol per state, streaming; queue bytes summed over
    the non-listening ones."""
    sink = CountSink()
    intr = dump_records(inet_request(family, protocol, states), sink, sock=sock)
    return sink.family(family, intr)


def count_tcp_families(states: int = ALL_STATES, *, sock: AnySock = None
                       ) -> Dict[int, QueueCounts]:
    """Like :func:`count_inet` for TCP, IPv4 and IPv6 in one dump (TCPDIAG_GETSOCK walks the
    established hash, shared by both families, once); where the kernel refuses that request,
    one dump per family."""
    chan = sock if isinstance(sock, Channel) else Channel(sock)
    try:
        sink = CountSink()
        try:
            intr = dump_records(tcp_request_both_families(states), sink, sock=chan,
                                msg_type=TCPDIAG_GETSOCK)
            return {f: sink.family(f, intr) for f in (socket.AF_INET, socket.AF_INET6)}
        except NetlinkError as e:
            if not e.unsupported_request:
                raise
        out: Dict[int, QueueCounts] = {}
        for fam in (socket.AF_INET, socket.AF_INET6):
            try:
                out[fam] = count_inet(fam, IPPROTO_TCP, states, sock=chan)
            except NetlinkError as e6:
                if fam == socket.AF_INET6 and e6.absent:
                    continue  # IPv6 off
                raise
        return out
    finally:
        if chan is not sock:
            chan.close()


def list_inet(family: int, protocol: int, states: int = ALL_STATES, *,
              sock: AnySock = None) -> List[InetSocket]:
    """Every socket of one family and protocol in the given states, fully decoded."""
    return list_records(inet_request(family, protocol, states), sock=sock)


def count_by_port(family: int, protocol: int, states: int, ports: Iterable[int], *,
                  sock: AnySock = None) -> Counter[Tuple[int, int]]:
    """Count sockets per (local port, state), for local ports in ``ports`` only, filtered in
    the kernel by :func:`sport_filter` (or here, should the kernel refuse the program)."""
    wanted = frozenset(ports)
    if not wanted:
        return Counter()
    counts: Counter[Tuple[int, int]] = Counter()

    def sink(buf: Union[bytes, bytearray], start: int, end: int, stride: int) -> None:
        h = memoryview(buf)[start:end].cast("H")
        counts.update(zip(h[2::stride // 2], bytes(buf[start + 1:end:stride])))

    def dump(bc: Optional[bytes]) -> None:
        if family == socket.AF_UNSPEC and protocol == IPPROTO_TCP:
            try:
                dump_records(tcp_request_both_families(states, bc), sink, sock=sock,
                             msg_type=TCPDIAG_GETSOCK)
                return
            except NetlinkError as e:
                if not e.unsupported_request:
                    raise
                counts.clear()
            for fam in (socket.AF_INET, socket.AF_INET6):
                try:
                    dump_records(inet_request(fam, protocol, states, bc), sink, sock=sock)
                except NetlinkError as e:
                    if fam == socket.AF_INET6 and e.absent:
                        continue  # IPv6 off
                    raise
            return
        dump_records(inet_request(family, protocol, states, bc), sink, sock=sock)

    bc = cached_sport_filter(wanted)
    if bc is not None:
        try:
            dump(bc)
        except NetlinkError as e:
            if not e.unsupported_request:
                raise
            counts.clear()  # a kernel that audits the program differently: filter here
            bc = None
    if bc is None:
        dump(None)
    out: Counter[Tuple[int, int]] = Counter()
    for (raw, state), n in counts.items():
        port = (raw & 0xFF) << 8 | raw >> 8
        if port in wanted:
            out[(port, state)] += n
    return out

