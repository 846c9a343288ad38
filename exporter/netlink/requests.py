"""Building sock_diag dump requests: inet_diag_req_v2, the older inet_diag_req (both address
families in one dump), unix_diag_req, and the inet_diag bytecode that filters by local port.

Layouts are from include/uapi/linux/{inet_diag,unix_diag}.h.
"""

from __future__ import annotations

import functools
import socket
import struct
from typing import Dict, FrozenSet, Iterable, List, Optional, Tuple

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


def inet_request(family: int, protocol: int, states: int = ALL_STATES,
                 bytecode: Optional[bytes] = None) -> bytes:
    """An inet_diag_req_v2 for one family and protocol, with an optional filter program."""
    pad = IPPROTO_RAW if protocol == IPPROTO_RAW else 0  # raw_diag: IPPROTO_RAW matches any
    return INET_REQ.pack(family, protocol, 0, pad, states, b"\0" * 48) + _bytecode_attr(bytecode)


def tcp_request_both_families(states: int = ALL_STATES,
                              bytecode: Optional[bytes] = None) -> bytes:
    """A TCPDIAG_GETSOCK request (send it with that message type): TCP of both families."""
    return INET_REQ_V1.pack(0, 0, 0, 0, b"\0" * 48, states, 0) + _bytecode_attr(bytecode)


def unix_request(states: int = ALL_STATES, show: int = UDIAG_SHOW_RQLEN) -> bytes:
    return UNIX_REQ.pack(socket.AF_UNIX, 0, 0, states, 0, show, 0xFFFFFFFF, 0xFFFFFFFF)


# --- filtering by local port in the kernel ---------------------------------------------------
#
# inet_diag runs a small bytecode program (INET_DIAG_REQ_BYTECODE) against every socket and sends
# only the ones it accepts (net/ipv4/inet_diag.c inet_diag_bc_run), so asking for "local port in
# these ranges" costs the kernel a few comparisons per socket and us nothing for sockets on other
# ports. The program is a sequence of ops {code, yes, no}, each port comparison followed by a
# second op whose ``no`` field holds the port; a comparison that holds moves on by ``yes``
# bytes, one that fails by ``no``. The program accepts when a jump lands exactly on its end and
# rejects when it jumps past it. inet_diag_bc_audit requires every ``no`` target to lie on the
# chain of ``yes`` jumps from the start (valid_cc), so every ``yes`` here just steps to the next
# op and all branching is done by ``no``.
#
# A chain of ranges would cost a comparison per listening port for every socket on the host
# (with 1,000 listening ports, three times the dump itself), so the ranges are searched as a
# balanced binary tree, about log2(ranges) + 2 comparisons per socket:
#
#     node:  S_GE <first port of the upper half> {no: -> lower half}  <upper half>  <lower half>
#     leaf:  S_GE lo {no: reject}  S_LE hi {no: reject}  JMP {no: end of program -> accept}
#
# S_GE/S_LE/JMP exist since Linux 2.6 (S_EQ would need 4.16).
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_JMP, INET_DIAG_BC_S_GE, INET_DIAG_BC_S_LE = 1, 2, 3
_BC_OP = struct.Struct("<BBH")
NLA = struct.Struct("<HH")
# A leaf is 20 bytes, an inner node 8; attribute lengths and jumps are 16 bits.
MAX_FILTER_RANGES = (0xFFFF - NLA.size - 4 + 8) // 28


def _bytecode_attr(bc: Optional[bytes]) -> bytes:
    return b"" if bc is None else NLA.pack(NLA.size + len(bc), INET_DIAG_REQ_BYTECODE) + bc


def port_ranges(ports: Iterable[int]) -> List[Tuple[int, int]]:
    """Sorted ports merged into inclusive (low, high) ranges of consecutive numbers."""
    out: List[Tuple[int, int]] = []
    for p in sorted(set(ports)):
        if out and p == out[-1][1] + 1:
            out[-1] = (out[-1][0], p)
        else:
            out.append((p, p))
    return out


def sport_filter(ports: Iterable[int]) -> Optional[bytes]:
    """inet_diag bytecode accepting sockets whose local port is in ``ports``.

    None when there are too many ranges for one attribute (callers then filter themselves).
    An empty ``ports`` gives a program that rejects everything.
    """
    ranges = port_ranges(ports)
    if len(ranges) > MAX_FILTER_RANGES:
        return None
    if not ranges:
        ranges = [(0xFFFF, 0)]  # nothing is >= 65535 and <= 0: reject all
    # Lay the tree out as (code, port, target) with targets as labels, then resolve offsets.
    prog: List[Tuple[int, int, object]] = []
    labels: Dict[object, int] = {}
    reject, accept = "reject", "accept"

    def emit(rs: List[Tuple[int, int]]) -> None:
        if len(rs) == 1:
            prog.append((INET_DIAG_BC_S_GE, rs[0][0], reject))
            prog.append((INET_DIAG_BC_S_LE, rs[0][1], reject))
            prog.append((INET_DIAG_BC_JMP, 0, accept))
            return
        mid = len(rs) // 2
        lower = object()
        prog.append((INET_DIAG_BC_S_GE, rs[mid][0], lower))
        emit(rs[mid:])
        labels[lower] = len(prog)  # index of the lower half's first op
        emit(rs[:mid])

    emit(ranges)
    offsets, off = [], 0
    for code, _port, _target in prog:
        offsets.append(off)
        off += 4 if code == INET_DIAG_BC_JMP else 8
    total = off
    out = bytearray()
    for (code, port, target), at in zip(prog, offsets):
        if code == INET_DIAG_BC_JMP:
            out += _BC_OP.pack(code, 4, total - at)  # runtime always takes "no": to the end
        else:
            to = total + 4 if target is reject else offsets[labels[target]]
            out += _BC_OP.pack(code, 8, to - at) + _BC_OP.pack(0, 0, port)
    return bytes(out)


@functools.lru_cache(maxsize=8)
def cached_sport_filter(ports: FrozenSet[int]) -> Optional[bytes]:
    return sport_filter(ports)
