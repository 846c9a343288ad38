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
import os
import socket
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Tuple, Union

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


def _open() -> socket.socket:
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                          NETLINK_SOCK_DIAG)
    except (OSError, AttributeError) as e:
        raise NetlinkError(getattr(e, "errno", None) or _errno.EAFNOSUPPORT,
                           f"netlink sock_diag unavailable: {e}") from None
    return s


_seq = 0


def _request(s: socket.socket, payload: bytes) -> int:
    global _seq
    _seq = (_seq + 1) & 0xFFFFFFFF
    hdr = NLMSG_HDR.pack(NLMSG_HDRLEN + len(payload), SOCK_DIAG_BY_FAMILY,
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
          *, sock: Optional[socket.socket] = None, source: str = "netlink") -> bool:
    """Send one dump request and feed the replies to the handlers. Returns NLM_F_DUMP_INTR seen.

    ``on_uniform(buf, start, end, L)`` gets runs where every message is exactly ``L`` bytes long
    and of type SOCK_DIAG_BY_FAMILY; ``on_messages(buf, off, ln)`` gets every other message, one
    at a time. Raises NetlinkError on an NLMSG_ERROR reply and ParseError on malformed data.
    """
    own = sock is None
    s = sock or _open()
    try:
        try:
            _request(s, payload)
        except OSError as e:
            raise NetlinkError(e.errno, f"netlink sock_diag request refused: {e.strerror}") from None
        buf = bytearray(RECV_BUFSIZE)
        interrupted = False
        while True:
            try:
                n = s.recv_into(buf)
            except OSError as e:
                raise NetlinkError(e.errno, f"netlink sock_diag read failed: {e.strerror}") from None
            done, intr = feed(buf, n, on_messages, on_uniform, source=source)
            interrupted |= intr
            if done:
                return interrupted
    finally:
        if own:
            s.close()


def feed(buf: bytearray, n: int, on_message: ChunkFn, on_uniform: Optional[RunFn] = None,
         *, source: str = "netlink") -> Tuple[bool, bool]:
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
        if typ != SOCK_DIAG_BY_FAMILY:
            off += step
            continue
        if try_uniform:
            # Try once per chunk: are all whole messages from here on this same length and
            # type? (A trailing NLMSG_DONE is shorter than any diag message, so it is left over.)
            try_uniform = False
            m = (n - off) // ln if step == ln else 0
            if m > 1 and _is_uniform(buf, off, m, ln):
                on_uniform(buf, off, off + m * ln, ln)  # type: ignore[misc]
                off += m * ln
                continue
        on_message(buf, off, ln)
        off += step
    return False, interrupted


def _is_uniform(buf: bytearray, start: int, m: int, ln: int) -> bool:
    """Whether the ``m`` messages from ``start`` are all ``ln`` bytes long and of type
    SOCK_DIAG_BY_FAMILY, checked in C over strided views of the length and type fields."""
    view = memoryview(buf)[start:start + m * ln]
    lens = view.cast("I")[0::ln // 4]
    types = view.cast("H")[2::ln // 2]
    return (lens.tobytes() == struct.pack("<I", ln) * m
            and types.tobytes() == struct.pack("<H", SOCK_DIAG_BY_FAMILY) * m)


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


def parse_inet_msg(buf: Union[bytes, bytearray], off: int = 0) -> InetSocket:
    """Decode one inet_diag_msg (``off`` points at the nlmsghdr)."""
    b = off + NLMSG_HDRLEN
    if len(buf) - b < INET_MSG_LEN:
        raise ParseError("netlink", f"inet_diag_msg truncated: {len(buf) - b} bytes")
    family, state = buf[b], buf[b + 1]
    sport, dport = struct.unpack_from(">HH", buf, b + 4)
    src = bytes(buf[b + 8:b + 24])
    dst = bytes(buf[b + 24:b + 40])
    (ifindex,) = struct.unpack_from("<I", buf, b + 40)
    _exp, rq, wq, uid, inode = INET_MSG_TAIL.unpack_from(buf, b + 52)
    return InetSocket(family, state, _addr(family, src), sport, _addr(family, dst), dport,
                      ifindex, rq, wq, uid, inode)


def list_inet(family: int, protocol: int, states: int = ALL_STATES, *,
              sock: Optional[socket.socket] = None) -> List[InetSocket]:
    """Every socket of one family and protocol in the given states, fully decoded."""
    out: List[InetSocket] = []

    def one(buf: bytearray, off: int, ln: int) -> None:
        out.append(parse_inet_msg(buf, off))

    _dump(inet_request(family, protocol, states), one, sock=sock)
    return out


def supported() -> bool:
    """Whether this process can open a NETLINK_SOCK_DIAG socket at all."""
    try:
        _open().close()
        return True
    except NetlinkError:
        return False


