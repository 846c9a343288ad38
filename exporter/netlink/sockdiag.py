"""Socket dumps over NETLINK_SOCK_DIAG: the public API of :mod:`exporter.netlink`.

The work is split by job:

* :mod:`exporter.netlink.transport`: the socket, sending a request, reading replies until
  NLMSG_DONE, and the one errno policy (:class:`NetlinkError`: ``absent``, ``falls_back``,
  ``unsupported_request``);
* :mod:`exporter.netlink.requests`: inet_diag_req_v2, the older request that dumps both
  address families at once, and unix_diag_req;
* :mod:`exporter.netlink.inet`: inet_diag_msg replies decoded in bulk into runs of records;
* :mod:`exporter.netlink.unix`: unix_diag_msg replies.

This module re-exports what callers use and adds :func:`list_inet`, a decoded listing. The
socket snapshot of a scrape (:mod:`exporter.sockets`) is built on the same pieces.
"""

from __future__ import annotations

from typing import List

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
    TCPDIAG_GETSOCK,
    inet_request,
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
)
from exporter.netlink.unix import UNIX_DIAG_RQLEN, count_unix
from exporter.vocabulary.names import (  # the kernel's state numbers, re-exported for callers
    TCP_CLOSE,
    TCP_ESTABLISHED,
    TCP_LISTEN,
    TCP_TIME_WAIT,
)

__all__ = [
    "ALL_STATES", "INET_MSG_LEN", "INET_REQ", "INET_REQ_V1", "IPPROTO_RAW", "IPPROTO_TCP",
    "IPPROTO_UDP", "IPPROTO_UDPLITE", "NLMSG_DONE", "NLMSG_ERROR",
    "NLM_F_DUMP_INTR", "SOCK_DIAG_BY_FAMILY", "TCPDIAG_GETSOCK", "TCP_CLOSE", "TCP_ESTABLISHED", "TCP_LISTEN",
    "TCP_TIME_WAIT", "UNIX_DIAG_RQLEN",
    "Channel", "CountSink", "InetSocket", "NetlinkError", "QueueCounts", "count_unix",
    "dump_records", "inet_request", "list_inet", "open_socket", "parse_inet_msg", "parse_record",
    "tcp_request_both_families", "unix_request",
]


def list_inet(family: int, protocol: int, states: int = ALL_STATES, *,
              sock: AnySock = None) -> List[InetSocket]:
    """Every socket of one family and protocol in the given states, fully decoded."""
    return list_records(inet_request(family, protocol, states), sock=sock)
