"""Building sock_diag dump requests: inet_diag_req_v2, the older inet_diag_req (both address
families in one dump) and unix_diag_req.

Layouts are from include/uapi/linux/{inet_diag,unix_diag}.h.
"""

from __future__ import annotations

import socket
import struct

IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE, IPPROTO_RAW = 6, 17, 136, 255
ALL_STATES = 0xFFFFFFFF

# struct inet_diag_req_v2: family, protocol, ext, pad (raw: protocol filter), states, sockid
INET_REQ = struct.Struct("<BBBBI48s")
# struct unix_diag_req: family, protocol, pad(2), states, ino, show, cookie[2]
UNIX_REQ = struct.Struct("<BBHIIIII")
UDIAG_SHOW_RQLEN = 0x10

# The request of the original tcp_diag interface (struct inet_diag_req, message type
# TCPDIAG_GETSOCK), which the kernel still serves (inet_diag_rcv_msg_compat) and turns into a
# dump of family AF_UNSPEC: both address families in one pass over the established hash, which
# IPv4 and IPv6 share, instead of one pass each.
TCPDIAG_GETSOCK = 18
INET_REQ_V1 = struct.Struct("<BBBB48sII")  # family, src_len, dst_len, ext, sockid, states, dbs


def inet_request(family: int, protocol: int, states: int = ALL_STATES) -> bytes:
    """An inet_diag_req_v2 for one family and protocol."""
    pad = IPPROTO_RAW if protocol == IPPROTO_RAW else 0  # raw_diag: IPPROTO_RAW matches any
    return INET_REQ.pack(family, protocol, 0, pad, states, b"\0" * 48)


def tcp_request_both_families(states: int = ALL_STATES) -> bytes:
    """A TCPDIAG_GETSOCK request (send it with that message type): TCP of both families."""
    return INET_REQ_V1.pack(0, 0, 0, 0, b"\0" * 48, states, 0)


def unix_request(states: int = ALL_STATES, show: int = UDIAG_SHOW_RQLEN) -> bytes:
    return UNIX_REQ.pack(socket.AF_UNIX, 0, 0, states, 0, show, 0xFFFFFFFF, 0xFFFFFFFF)
