"""Socket dumps over NETLINK_SOCK_DIAG (inet_diag for TCP/UDP/UDP-Lite/raw, unix_diag for AF_UNIX).

Two ways to read a dump:

* :func:`count_inet` / :func:`count_unix` count sockets per state (and sum queue bytes) while the
  dump streams in, never holding more than one receive buffer, so memory stays flat however many
  sockets there are. No per-socket extensions are requested, so the kernel sends only the fixed
  ``inet_diag_msg`` (plus a few unconditional attributes on full sockets).
* :func:`list_inet` decodes every socket (addresses, queues, uid, inode) for the collectors that
  need per-socket detail (listeners, ports).

Message layouts are from include/uapi/linux/{netlink,sock_diag,inet_diag,unix_diag}.h.

Speed: a dump arrives in chunks of up to 32 KiB (netlink_dump caps the skb at
SKB_WITH_OVERHEAD(32768)). When every message in a chunk has the same length, which is the rule
for one kind of socket (time-wait and request minisockets carry no attributes; full sockets
carry the same set), the state bytes are taken with one strided slice and counted in C; otherwise
the chunk is walked message by message. Both paths give the same answer; the tests check that.
"""

from __future__ import annotations

import errno as _errno
import functools
import os
import socket
import struct
from collections import Counter
from dataclasses import dataclass
from typing import (
    AbstractSet,
    Callable,
    Dict,
    FrozenSet,
    Iterable,
    Iterator,
    List,
    Optional,
    Set,
    Tuple,
    Union,
)

from exporter.procfs.errors import ParseError

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3
NLM_F_REQUEST = 0x01
NLM_F_DUMP = 0x300
NLM_F_DUMP_INTR = 0x10

IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE, IPPROTO_RAW = 6, 17, 136, 255

NLMSG_HDR = struct.Struct("<IHHII")  # len, type, flags, seq, pid
NLMSG_HDRLEN = NLMSG_HDR.size  # 16
# struct inet_diag_req_v2: family, protocol, ext, pad (raw: protocol filter), states, sockid
INET_REQ = struct.Struct("<BBBBI48s")
# struct inet_diag_msg without the sockid: family, state, timer, retrans; then after the 48-byte
# sockid: expires, rqueue, wqueue, uid, inode.
INET_MSG_LEN = 72
INET_MSG_STATE = NLMSG_HDRLEN + 1  # 17
INET_MSG_RQUEUE = NLMSG_HDRLEN + 56  # 72
INET_MSG_TAIL = struct.Struct("<IIIII")  # expires, rqueue, wqueue, uid, inode at offset 16+52
# struct unix_diag_req: family, protocol, pad(2), states, ino, show, cookie[2]
UNIX_REQ = struct.Struct("<BBHIIIII")
UNIX_MSG_LEN = 16  # family, type, state, pad, ino, cookie[2]
UDIAG_SHOW_RQLEN = 0x10
UNIX_DIAG_RQLEN = 4

ALL_STATES = 0xFFFFFFFF
RECV_BUFSIZE = 64 * 1024  # more than the kernel's 32 KiB dump chunk

# Kernel socket states, include/net/tcp_states.h.
TCP_ESTABLISHED, TCP_SYN_SENT, TCP_SYN_RECV, TCP_FIN_WAIT1, TCP_FIN_WAIT2 = 1, 2, 3, 4, 5
TCP_TIME_WAIT, TCP_CLOSE, TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_LISTEN, TCP_CLOSING = 6, 7, 8, 9, 10, 11
TCP_NEW_SYN_RECV, TCP_BOUND_INACTIVE = 12, 13


class NetlinkError(OSError):
    """The kernel refused a request (an NLMSG_ERROR reply, or the socket call itself failed)."""

    @property
    def absent(self) -> bool:
        """The kernel has no such protocol or family (IPv6 off, no diag module): no data."""
        return self.errno in ABSENT_ERRNOS

    @property
    def falls_back(self) -> bool:
        """Whether a reader should try /proc/net instead: netlink refused (permission, a
        seccomp or container policy) or not implemented for this protocol."""
        return self.errno is None or self.errno in ABSENT_ERRNOS | REFUSED_ERRNOS


ABSENT_ERRNOS = frozenset({_errno.ENOENT, _errno.EINVAL, _errno.EPROTONOSUPPORT,
                           _errno.ESOCKTNOSUPPORT, _errno.EOPNOTSUPP, _errno.EPFNOSUPPORT,
                           _errno.EAFNOSUPPORT})
REFUSED_ERRNOS = frozenset({_errno.EPERM, _errno.EACCES})


@dataclass
class QueueCounts:
    """Per-state socket counts of one (protocol, family) dump, and summed queue bytes.

    ``states`` maps the kernel's state number to a count. Queue bytes are summed over the
    sockets that are *not* listening: on a listener the kernel's queue fields hold the accept
    queue length and backlog, which are not bytes.
    """

    states: Counter  # type: ignore[type-arg]
    rx_queue: int = 0
    tx_queue: int = 0
    interrupted: bool = False  # NLM_F_DUMP_INTR: the table changed during the dump


@dataclass(frozen=True)
class InetSocket:
    family: int
    state: int
    src: str
    sport: int
    dst: str
    dport: int
    ifindex: int
    rqueue: int
    wqueue: int
    uid: int
    inode: int


def open_socket() -> socket.socket:
    """A NETLINK_SOCK_DIAG socket, to reuse across the dumps of one scrape."""
    return _open()


def _open() -> socket.socket:
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                          NETLINK_SOCK_DIAG)
    except (OSError, AttributeError) as e:
        raise NetlinkError(getattr(e, "errno", None) or _errno.EAFNOSUPPORT,
                           f"netlink sock_diag unavailable: {e}") from None
    return s


_seq = 0


def _request(s: socket.socket, payload: bytes, msg_type: int = SOCK_DIAG_BY_FAMILY) -> int:
    global _seq
    _seq = (_seq + 1) & 0xFFFFFFFF
    hdr = NLMSG_HDR.pack(NLMSG_HDRLEN + len(payload), msg_type,
                         NLM_F_REQUEST | NLM_F_DUMP, _seq, 0)
    s.sendto(hdr + payload, (0, 0))
    return _seq


def inet_request(family: int, protocol: int, states: int) -> bytes:
    pad = IPPROTO_RAW if protocol == IPPROTO_RAW else 0  # raw_diag: IPPROTO_RAW matches any
    return INET_REQ.pack(family, protocol, 0, pad, states, b"\0" * 48)


def unix_request(states: int = ALL_STATES, show: int = UDIAG_SHOW_RQLEN) -> bytes:
    return UNIX_REQ.pack(socket.AF_UNIX, 0, 0, states, 0, show, 0xFFFFFFFF, 0xFFFFFFFF)


# A chunk handler gets (buffer, start, end) of a run of SOCK_DIAG_BY_FAMILY messages.
ChunkFn = Callable[[bytearray, int, int], None]


RunFn = Callable[[bytearray, int, int, int], None]


def _dump(payload: bytes, on_messages: ChunkFn, on_uniform: Optional[RunFn] = None,
          *, sock: Optional[socket.socket] = None, source: str = "netlink",
          msg_type: int = SOCK_DIAG_BY_FAMILY) -> bool:
    """Send one dump request and feed the replies to the handlers. Returns NLM_F_DUMP_INTR seen.

    ``msg_type`` is the request's and the replies' message type: SOCK_DIAG_BY_FAMILY, or
    TCPDIAG_GETSOCK for the older request that dumps both address families at once.

    ``on_uniform(buf, start, end, L)`` gets runs where every message is exactly ``L`` bytes long
    and of type SOCK_DIAG_BY_FAMILY; ``on_messages(buf, off, ln)`` gets every other message, one
    at a time. Raises NetlinkError on an NLMSG_ERROR reply and ParseError on malformed data.
    """
    own = sock is None
    s = sock or _open()
    try:
        try:
            _request(s, payload, msg_type)
        except OSError as e:
            raise NetlinkError(e.errno, f"netlink sock_diag request refused: {e.strerror}") from None
        buf = bytearray(RECV_BUFSIZE)
        interrupted = False
        while True:
            try:
                n = s.recv_into(buf)
            except OSError as e:
                raise NetlinkError(e.errno, f"netlink sock_diag read failed: {e.strerror}") from None
            done, intr = feed(buf, n, on_messages, on_uniform, source=source, msg_type=msg_type)
            interrupted |= intr
            if done:
                return interrupted
    finally:
        if own:
            s.close()


def feed(buf: bytearray, n: int, on_message: ChunkFn, on_uniform: Optional[RunFn] = None,
         *, source: str = "netlink", msg_type: int = SOCK_DIAG_BY_FAMILY) -> Tuple[bool, bool]:
    """Parse one received chunk ``buf[:n]``. Returns (done, interrupted).

    Exposed for tests, which feed captured and hand-made chunks through it.
    """
    off = 0
    interrupted = False
    try_uniform = on_uniform is not None
    if n == 0:
        raise ParseError(source, "netlink socket closed before NLMSG_DONE")
    while off < n:
        if n - off < NLMSG_HDRLEN:
            raise ParseError(source, f"truncated netlink header at byte {off} of {n}")
        ln, typ, flags, _seq_, _pid = NLMSG_HDR.unpack_from(buf, off)
        if ln < NLMSG_HDRLEN or off + ln > n:
            raise ParseError(source, f"bad netlink message length {ln} at byte {off} of {n}")
        if typ == NLMSG_DONE:
            # A dump that failed says so in NLMSG_DONE's payload (netlink_dump copies the dump
            # callback's error there): e.g. -ENOENT when no sock_diag handler exists for the
            # protocol (raw_diag not built). Treating it as "no sockets" would report a silent 0.
            if ln >= NLMSG_HDRLEN + 4:
                (err,) = struct.unpack_from("<i", buf, off + NLMSG_HDRLEN)
                if err < 0:
                    raise NetlinkError(-err, "netlink sock_diag dump failed: "
                                             f"{os.strerror(-err)}")
            return True, interrupted
        if typ == NLMSG_ERROR:
            if ln < NLMSG_HDRLEN + 4:
                raise ParseError(source, "truncated NLMSG_ERROR")
            (err,) = struct.unpack_from("<i", buf, off + NLMSG_HDRLEN)
            if err == 0:  # an ACK, not an error
                off += (ln + 3) & ~3
                continue
            raise NetlinkError(-err, f"netlink sock_diag request failed: {os.strerror(-err)}")
        if flags & NLM_F_DUMP_INTR:
            interrupted = True
        step = (ln + 3) & ~3
        if typ != msg_type:
            off += step
            continue
        if try_uniform:
            # Try once per chunk: are all whole messages from here on this same length and
            # type? (A trailing NLMSG_DONE is shorter than any diag message, so it is left over.)
            try_uniform = False
            m = (n - off) // ln if step == ln else 0
            if m > 1 and _is_uniform(buf, off, m, ln, msg_type):
                on_uniform(buf, off, off + m * ln, ln)  # type: ignore[misc]
                off += m * ln
                continue
        on_message(buf, off, ln)
        off += step
    return False, interrupted


def _is_uniform(buf: bytearray, start: int, m: int, ln: int,
                msg_type: int = SOCK_DIAG_BY_FAMILY) -> bool:
    """Whether the ``m`` messages from ``start`` are all ``ln`` bytes long and of type
    ``msg_type``, checked in C over strided views of the length and type fields."""
    view = memoryview(buf)[start:start + m * ln]
    lens = view.cast("I")[0::ln // 4]
    types = view.cast("H")[2::ln // 2]
    return (lens.tobytes() == struct.pack("<I", ln) * m
            and types.tobytes() == struct.pack("<H", msg_type) * m)


def count_inet(family: int, protocol: int, states: int = ALL_STATES, *,
               queues: bool = True, sock: Optional[socket.socket] = None) -> QueueCounts:
    """Count one family's sockets of one protocol per state, streaming.

    ``queues`` sums rqueue/wqueue of non-listening sockets. LISTEN sockets are counted but
    their queue fields (accept queue, backlog) are left out of the sums.
    """
    counts: Counter = Counter()  # type: ignore[type-arg]
    sums = [0, 0]

    def one(buf: bytearray, off: int, ln: int) -> None:
        if ln < NLMSG_HDRLEN + INET_MSG_LEN:
            raise ParseError("netlink", f"inet_diag_msg of {ln} bytes, expected at least "
                                        f"{NLMSG_HDRLEN + INET_MSG_LEN}")
        state = buf[off + INET_MSG_STATE]
        counts[state] += 1
        if queues and state != TCP_LISTEN:
            rq, wq = struct.unpack_from("<II", buf, off + INET_MSG_RQUEUE)
            sums[0] += rq
            sums[1] += wq

    def run(buf: bytearray, start: int, end: int, ln: int) -> None:
        if ln < NLMSG_HDRLEN + INET_MSG_LEN:
            raise ParseError("netlink", f"inet_diag_msg of {ln} bytes, expected at least "
                                        f"{NLMSG_HDRLEN + INET_MSG_LEN}")
        st = bytes(buf[start + INET_MSG_STATE:end:ln])
        counts.update(st)
        if queues:
            words = memoryview(buf)[start:end].cast("I")
            step = ln // 4
            rq = sum(words[INET_MSG_RQUEUE // 4::step])
            wq = sum(words[INET_MSG_RQUEUE // 4 + 1::step])
            if rq or wq:
                listening = st.count(TCP_LISTEN)
                if listening:  # rare: take the listeners' queue fields back out
                    for i in range(start, end, ln):
                        if buf[i + INET_MSG_STATE] == TCP_LISTEN:
                            r, w = struct.unpack_from("<II", buf, i + INET_MSG_RQUEUE)
                            rq -= r
                            wq -= w
                sums[0] += rq
                sums[1] += wq

    intr = _dump(inet_request(family, protocol, states), one, run, sock=sock)
    return QueueCounts(counts, sums[0], sums[1], intr)


def count_unix(*, sock: Optional[socket.socket] = None) -> Tuple[Counter, int, int, bool]:  # type: ignore[type-arg]
    """Count AF_UNIX sockets per (type, state). Returns (counts, rx_bytes, tx_bytes, interrupted).

    With UDIAG_SHOW_RQLEN each message carries UNIX_DIAG_RQLEN {rqueue, wqueue}; for a listener
    those are the accept queue and backlog, so listeners are left out of the byte sums.
    """
    counts: Counter = Counter()  # type: ignore[type-arg]
    sums = [0, 0]

    def one(buf: bytearray, off: int, ln: int) -> None:
        base = off + NLMSG_HDRLEN
        if ln < NLMSG_HDRLEN + UNIX_MSG_LEN:
            raise ParseError("netlink", f"unix_diag_msg of {ln} bytes")
        typ, state = buf[base + 1], buf[base + 2]
        counts[(typ, state)] += 1
        if state == TCP_LISTEN:
            return
        for atype, aoff, alen in _attrs(buf, base + UNIX_MSG_LEN, off + ln):
            if atype == UNIX_DIAG_RQLEN and alen >= 8:
                rq, wq = struct.unpack_from("<II", buf, aoff)
                sums[0] += rq
                sums[1] += wq

    def run(buf: bytearray, start: int, end: int, ln: int) -> None:
        # A uniform unix run is msg(16) + one RQLEN attribute (4 + 8) = 44 bytes: check that the
        # attribute sits where expected, else walk it.
        base = start + NLMSG_HDRLEN
        attr_types = bytes(buf[base + UNIX_MSG_LEN + 2:end:ln])
        if ln != NLMSG_HDRLEN + UNIX_MSG_LEN + 12 or \
                attr_types != bytes([UNIX_DIAG_RQLEN]) * ((end - start) // ln):
            for i in range(start, end, ln):
                one(buf, i, ln)
            return
        types = bytes(buf[base + 1:end:ln])
        states = bytes(buf[base + 2:end:ln])
        counts.update(zip(types, states))
        words = memoryview(buf)[start:end].cast("I")
        step = ln // 4
        first = (NLMSG_HDRLEN + UNIX_MSG_LEN + 4) // 4
        rq = sum(words[first::step])
        wq = sum(words[first + 1::step])
        if states.count(TCP_LISTEN):
            for i in range(start, end, ln):
                if buf[i + NLMSG_HDRLEN + 2] == TCP_LISTEN:
                    r, w = struct.unpack_from("<II", buf, i + first * 4)
                    rq -= r
                    wq -= w
        sums[0] += rq
        sums[1] += wq

    intr = _dump(unix_request(), one, run, sock=sock)
    return counts, sums[0], sums[1], intr


def _attrs(buf: bytearray, off: int, end: int) -> Iterator[Tuple[int, int, int]]:
    """(type, payload offset, payload length) of each netlink attribute in buf[off:end]."""
    while off + 4 <= end:
        alen, atype = struct.unpack_from("<HH", buf, off)
        if alen < 4 or off + alen > end:
            raise ParseError("netlink", f"bad attribute length {alen} at byte {off}")
        yield atype & 0x3FFF, off + 4, alen - 4
        off += (alen + 3) & ~3


def _addr(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    return socket.inet_ntop(socket.AF_INET6, raw[:16])


# The whole inet_diag_msg in one go: family, state, (timer, retrans), sport, dport (network byte
# order, swapped below), src, dst, ifindex, (cookie), expires, rqueue, wqueue, uid, inode.
_INET_MSG = struct.Struct("<BB2xHH16s16sI8xIIIII")


def parse_inet_msg(buf: Union[bytes, bytearray], off: int = 0) -> InetSocket:
    """Decode one inet_diag_msg (``off`` points at the nlmsghdr)."""
    b = off + NLMSG_HDRLEN
    if len(buf) - b < INET_MSG_LEN:
        raise ParseError("netlink", f"inet_diag_msg truncated: {len(buf) - b} bytes")
    family, state, sp, dp, src, dst, ifindex, _exp, rq, wq, uid, inode = \
        _INET_MSG.unpack_from(buf, b)
    return InetSocket(family, state, _addr(family, src), (sp & 0xFF) << 8 | sp >> 8,
                      _addr(family, dst), (dp & 0xFF) << 8 | dp >> 8, ifindex, rq, wq, uid, inode)


def list_inet(family: int, protocol: int, states: int = ALL_STATES, *,
              sock: Optional[socket.socket] = None) -> List[InetSocket]:
    """Every socket of one family and protocol in the given states, fully decoded."""
    out: List[InetSocket] = []

    def one(buf: bytearray, off: int, ln: int) -> None:
        out.append(parse_inet_msg(buf, off))

    _dump(inet_request(family, protocol, states), one, sock=sock)
    return out


# family, state, sport (network byte order, as read little-endian), src (16 bytes, IPv4 in the
# first 4), ifindex, rqueue, wqueue, uid, inode: what a listener needs, in one unpack.
_INET_BRIEF = struct.Struct("<BB2xH2x16s16xI8x4xIIII")
InetBrief = Tuple[int, int, int, bytes, int, int, int, int, int]


def list_inet_brief(family: int, protocol: int, states: int = ALL_STATES, *,
                    sock: Optional[socket.socket] = None) -> List[InetBrief]:
    """Like :func:`list_inet`, as plain tuples and without formatting addresses, for callers
    with many sockets: (family, state, sport, src, ifindex, rqueue, wqueue, uid, inode). ``sport``
    is in network byte order read as little-endian (swap it); ``src`` is the raw 16 bytes."""
    out: List[InetBrief] = []
    unpack = _INET_BRIEF.unpack_from

    def one(buf: bytearray, off: int, ln: int) -> None:
        if ln < NLMSG_HDRLEN + INET_MSG_LEN:
            raise ParseError("netlink", f"inet_diag_msg of {ln} bytes, expected at least "
                                        f"{NLMSG_HDRLEN + INET_MSG_LEN}")
        out.append(unpack(buf, off + NLMSG_HDRLEN))

    def run(buf: bytearray, start: int, end: int, ln: int) -> None:
        if ln < NLMSG_HDRLEN + INET_MSG_LEN:
            raise ParseError("netlink", f"inet_diag_msg of {ln} bytes, expected at least "
                                        f"{NLMSG_HDRLEN + INET_MSG_LEN}")
        out.extend(unpack(buf, i) for i in range(start + NLMSG_HDRLEN, end, ln))

    _dump(inet_request(family, protocol, states), one, run, sock=sock)
    return out




# --- counting by local port, filtered in the kernel ------------------------------------------
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
_NLA = struct.Struct("<HH")
MSG_SPORT = NLMSG_HDRLEN + 4  # idiag_sport, network byte order, after family/state/timer/retrans
# A leaf is 20 bytes, an inner node 8; attribute lengths and jumps are 16 bits.
MAX_FILTER_RANGES = (0xFFFF - _NLA.size - 4 + 8) // 28


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


# The request of the original tcp_diag interface (struct inet_diag_req, message type
# TCPDIAG_GETSOCK), which the kernel still serves (inet_diag_rcv_msg_compat) and turns into a
# dump of family AF_UNSPEC: both address families in one pass over the established hash, which
# IPv4 and IPv6 share, instead of one pass each.
TCPDIAG_GETSOCK = 18
INET_REQ_V1 = struct.Struct("<BBBB48sII")  # family, src_len, dst_len, ext, sockid, states, dbs


@functools.lru_cache(maxsize=8)
def _cached_filter(ports: FrozenSet[int]) -> Optional[bytes]:
    return sport_filter(ports)


def count_by_port(family: int, protocol: int, states: int, ports: Iterable[int], *,
                  sock: Optional[socket.socket] = None) -> Counter[Tuple[int, int]]:
    """Count sockets per (local port, state), for local ports in ``ports`` only.

    ``family`` AF_UNSPEC counts IPv4 and IPv6 TCP sockets in one dump (falling back to one dump
    per family where the kernel refuses the older request). Streams like :func:`count_inet`: the
    kernel filters by port (see :func:`sport_filter`), runs of equal-length messages are counted
    with strided slices, and nothing is kept per socket. Should the kernel refuse the filter, or
    the ports not fit in one, every socket is dumped and the others are dropped here.
    """
    wanted = frozenset(ports)
    if not wanted:
        return Counter()
    counts: Counter[Tuple[int, int, int]] = Counter()

    def one(buf: bytearray, off: int, ln: int) -> None:
        if ln < NLMSG_HDRLEN + INET_MSG_LEN:
            raise ParseError("netlink", f"inet_diag_msg of {ln} bytes, expected at least "
                                        f"{NLMSG_HDRLEN + INET_MSG_LEN}")
        counts[(buf[off + MSG_SPORT], buf[off + MSG_SPORT + 1], buf[off + INET_MSG_STATE])] += 1

    def run(buf: bytearray, start: int, end: int, ln: int) -> None:
        if ln < NLMSG_HDRLEN + INET_MSG_LEN:
            raise ParseError("netlink", f"inet_diag_msg of {ln} bytes, expected at least "
                                        f"{NLMSG_HDRLEN + INET_MSG_LEN}")
        counts.update(zip(buf[start + MSG_SPORT:end:ln], buf[start + MSG_SPORT + 1:end:ln],
                          buf[start + INET_MSG_STATE:end:ln]))

    def dump(bc: Optional[bytes]) -> None:
        attr = b"" if bc is None else _NLA.pack(_NLA.size + len(bc), INET_DIAG_REQ_BYTECODE) + bc
        if family == socket.AF_UNSPEC and protocol == IPPROTO_TCP:
            try:
                _dump(INET_REQ_V1.pack(0, 0, 0, 0, b"\0" * 48, states, 0) + attr, one, run,
                      sock=sock, msg_type=TCPDIAG_GETSOCK)
                return
            except NetlinkError as e:
                if e.errno not in (_errno.EINVAL, _errno.ENOENT, _errno.EOPNOTSUPP):
                    raise
                counts.clear()
            for fam in (socket.AF_INET, socket.AF_INET6):
                try:
                    _dump(inet_request(fam, protocol, states) + attr, one, run, sock=sock)
                except NetlinkError as e:
                    if fam == socket.AF_INET6 and e.errno in (
                            _errno.ENOENT, _errno.EAFNOSUPPORT, _errno.EOPNOTSUPP):
                        continue  # IPv6 off
                    raise
            return
        _dump(inet_request(family, protocol, states) + attr, one, run, sock=sock)

    bc = _cached_filter(wanted)
    if bc is not None:
        try:
            dump(bc)
        except NetlinkError as e:
            if e.errno != _errno.EINVAL:
                raise
            counts.clear()  # a kernel that audits the program differently: filter here
            bc = None
    if bc is None:
        dump(None)
    out: Counter[Tuple[int, int]] = Counter()
    for (hi, lo, state), n in counts.items():
        port = hi << 8 | lo
        if port in wanted:
            out[(port, state)] += n
    return out


def count_tcp_families(states: int = ALL_STATES, *, sock: Optional[socket.socket] = None
                       ) -> Dict[int, QueueCounts]:
    """Like :func:`count_inet` for TCP, for IPv4 and IPv6 at once, keyed by family.

    Uses the TCPDIAG_GETSOCK request, which walks the established hash (shared by both
    families) once instead of once per family; where the kernel refuses it, two v2 dumps. Each
    message names its family (idiag_family), so the counts split exactly.
    """
    counts: Dict[int, Counter[int]] = {socket.AF_INET: Counter(), socket.AF_INET6: Counter()}
    sums: Dict[int, List[int]] = {socket.AF_INET: [0, 0], socket.AF_INET6: [0, 0]}
    fam_at = NLMSG_HDRLEN  # idiag_family, the byte before the state

    def check(ln: int) -> None:
        if ln < NLMSG_HDRLEN + INET_MSG_LEN:
            raise ParseError("netlink", f"inet_diag_msg of {ln} bytes, expected at least "
                                        f"{NLMSG_HDRLEN + INET_MSG_LEN}")

    def bucket(fam: int) -> Tuple[Counter[int], List[int]]:
        if fam not in counts:
            raise ParseError("netlink", f"inet_diag_msg of unexpected family {fam}")
        return counts[fam], sums[fam]

    def one(buf: bytearray, off: int, ln: int) -> None:
        check(ln)
        c, q = bucket(buf[off + fam_at])
        state = buf[off + INET_MSG_STATE]
        c[state] += 1
        if state != TCP_LISTEN:
            rq, wq = struct.unpack_from("<II", buf, off + INET_MSG_RQUEUE)
            q[0] += rq
            q[1] += wq

    def run(buf: bytearray, start: int, end: int, ln: int) -> None:
        check(ln)
        fams = bytes(buf[start + fam_at:end:ln])
        states = bytes(buf[start + INET_MSG_STATE:end:ln])
        words = memoryview(buf)[start:end].cast("I")
        rqs = words[INET_MSG_RQUEUE // 4::ln // 4]
        wqs = words[INET_MSG_RQUEUE // 4 + 1::ln // 4]
        if fams.count(fams[0]) == len(fams) and states.count(TCP_LISTEN) == 0:
            # One family, no listener among them (the rule for the minisocket and full-socket
            # groups): count in C.
            c, q = bucket(fams[0])
            c.update(states)
            q[0] += sum(rqs)
            q[1] += sum(wqs)
            return
        for fam, state, rq, wq in zip(fams, states, rqs, wqs):
            c, q = bucket(fam)
            c[state] += 1
            if state != TCP_LISTEN:
                q[0] += rq
                q[1] += wq

    intr = False
    try:
        intr = _dump(INET_REQ_V1.pack(0, 0, 0, 0, b"\0" * 48, states, 0), one, run, sock=sock,
                     msg_type=TCPDIAG_GETSOCK)
    except NetlinkError as e:
        if e.errno not in (_errno.EINVAL, _errno.ENOENT, _errno.EOPNOTSUPP):
            raise
        out: Dict[int, QueueCounts] = {}
        for fam in (socket.AF_INET, socket.AF_INET6):
            try:
                out[fam] = count_inet(fam, IPPROTO_TCP, states, sock=sock)
            except NetlinkError as e6:
                if fam == socket.AF_INET6 and e6.errno in (
                        _errno.ENOENT, _errno.EAFNOSUPPORT, _errno.EOPNOTSUPP):
                    continue  # IPv6 off
                raise
        return out
    return {fam: QueueCounts(counts[fam], sums[fam][0], sums[fam][1], intr) for fam in counts}


# Where the ports and addresses sit in a message (from the start of the nlmsghdr):
# idiag_sport, idiag_dport (network byte order), idiag_src[16], idiag_dst[16].
MSG_PEER = NLMSG_HDRLEN + 4  # sport(2) dport(2) src(16) dst(16): 36 bytes


def local_port_use(family: int, protocol: int, states: int, wanted: AbstractSet[int], *,
                   sock: Optional[socket.socket] = None) -> Dict[bytes, Set[int]]:
    """Local ports in ``wanted`` used by the dumped sockets, grouped by peer, streaming.

    The key is the raw (src, dst, dport) of the socket: 34 bytes, undecoded, so that a dump of
    100,000 sockets builds no per-socket object; :func:`decode_peer` turns the few keys that are
    shown back into addresses. An unconnected socket's key has dport 0.
    """
    out: Dict[bytes, Set[int]] = {}

    def one(buf: bytearray, off: int, ln: int) -> None:
        if ln < NLMSG_HDRLEN + INET_MSG_LEN:
            raise ParseError("netlink", f"inet_diag_msg of {ln} bytes, expected at least "
                                        f"{NLMSG_HDRLEN + INET_MSG_LEN}")
        p = off + MSG_PEER
        sport = buf[p] << 8 | buf[p + 1]
        if sport in wanted:
            key = bytes(buf[p + 4:p + 36]) + bytes(buf[p + 2:p + 4])
            s = out.get(key)
            if s is None:
                out[key] = {sport}
            else:
                s.add(sport)

    _dump(inet_request(family, protocol, states), one, sock=sock)
    return out


def decode_peer(family: int, key: bytes) -> Tuple[str, str, int]:
    """(local address, remote address, remote port) of a :func:`local_port_use` key."""
    return _addr(family, key[:16]), _addr(family, key[16:32]), key[32] << 8 | key[33]
