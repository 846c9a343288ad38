"""The NETLINK_SOCK_DIAG socket: opening it, sending a dump request, reading the replies until
NLMSG_DONE, and the one policy that says what each errno means.

Replies arrive in chunks of up to 32 KiB (netlink_dump caps the skb at
SKB_WITH_OVERHEAD(32768)); :func:`dump` hands them to a handler several chunks at a time, and
:func:`walk` is the message-by-message reader that handlers fall back on. Message layouts are from
include/uapi/linux/netlink.h. A :class:`Channel` is one socket reused for the dumps of one
snapshot, and counts them.
"""

from __future__ import annotations

import errno as _errno
import os
import random
import socket
import struct
import threading
from typing import Callable, List, Optional, Tuple, Union

from exporter.procfs.errors import ParseError

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3
NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_DUMP = 0x300
NLM_F_DUMP_INTR = 0x10

NLMSG_HDR = struct.Struct("<IHHII")  # len, type, flags, seq, pid
NLMSG_HDRLEN = NLMSG_HDR.size  # 16
RECV_BUFSIZE = 64 * 1024  # more than the kernel's 32 KiB dump chunk


# --- the errno policy ------------------------------------------------------------------------
#
# Absent: the kernel has no such protocol or family (IPv6 off, a diag module not built): no data,
# and under source "auto" a reason to read /proc/net instead. Refused: permission, a seccomp or
# container policy: read /proc/net instead. Anything else is a failure of the collector.
ABSENT_ERRNOS = frozenset({_errno.ENOENT, _errno.EINVAL, _errno.EPROTONOSUPPORT,
                           _errno.ESOCKTNOSUPPORT, _errno.EOPNOTSUPP, _errno.EPFNOSUPPORT,
                           _errno.EAFNOSUPPORT})
REFUSED_ERRNOS = frozenset({_errno.EPERM, _errno.EACCES})
# What a kernel answers to a request form it does not know (the older TCPDIAG_GETSOCK request,
# or a bytecode program it audits differently): try the other form.
UNSUPPORTED_REQUEST_ERRNOS = frozenset({_errno.EINVAL, _errno.ENOENT, _errno.EOPNOTSUPP})


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

    @property
    def unsupported_request(self) -> bool:
        """The kernel does not know this form of request; another form may work."""
        return self.errno in UNSUPPORTED_REQUEST_ERRNOS


def open_socket() -> socket.socket:
    """A NETLINK_SOCK_DIAG socket of the calling thread's network namespace."""
    try:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                             NETLINK_SOCK_DIAG)
    except (OSError, AttributeError) as e:
        raise NetlinkError(getattr(e, "errno", None) or _errno.EAFNOSUPPORT,
                           f"netlink sock_diag unavailable: {e}") from None


SocketFactory = Callable[[], socket.socket]


class Channel:
    """One netlink socket for the dumps of one snapshot; counts the dumps it sends.

    Give it an open socket (kept open: the caller owns it, e.g. one opened inside another
    network namespace) or a factory called on the first dump (the socket is then closed by
    :meth:`close`).
    """

    def __init__(self, sock: Union[socket.socket, SocketFactory, None] = None) -> None:
        if sock is None or callable(sock) and not isinstance(sock, socket.socket):
            self._factory: Optional[SocketFactory] = sock or open_socket
            self._sock: Optional[socket.socket] = None
            self._own = True
        else:
            self._factory, self._sock, self._own = None, sock, False
        self.dumps = 0

    @property
    def sock(self) -> socket.socket:
        if self._sock is None:
            assert self._factory is not None
            self._sock = self._factory()
        return self._sock

    def close(self) -> None:
        if self._own and self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_seq_random = random.Random()


def _next_seq() -> int:
    """The sequence number of the next request: four bytes drawn at random from 0x98 to 0xB7.
    inet._regroup splits a reply at it, and bytes.split skips ahead past any byte that shares
    no bloom bit (its low six bits) with these; the bytes of socket records are mostly zeros,
    small numbers, 0x7f and 0xff, which do not. Drawn at random, the four bytes cannot be put
    into a socket's addresses in advance to mislead the split (which is checked in any case)."""
    r = _seq_random.getrandbits(20)
    return int.from_bytes(bytes(0x98 + (r >> s & 0x1F) for s in (0, 5, 10, 15)), "little")


# Bytes gathered before the handler is called: several kernel chunks.
BATCH_BYTES = 8 * RECV_BUFSIZE


def _may_end(buf: bytearray, start: int, end: int) -> bool:
    """Whether the chunk ``buf[start:end]`` may be the last of a dump, so that the handler must
    see it now: it ends with NLMSG_DONE (the kernel puts it last in the last chunk, 20 bytes:
    the header and the dump's error code), it starts with NLMSG_ERROR (a refused request is
    answered with that alone), or it is shorter than half a chunk (the kernel fills every
    chunk but the last; a short one is handed on at once, so nothing is ever left waiting for
    a reply that will not come)."""
    if end - start < RECV_BUFSIZE // 4:
        return True
    if NLMSG_HDR.unpack_from(buf, start)[1] == NLMSG_ERROR:
        return True
    return NLMSG_HDR.unpack_from(buf, end - NLMSG_HDRLEN - 4)[:2] == (NLMSG_HDRLEN + 4, NLMSG_DONE)


# A chunk handler gets (buffer, length) of received chunks (whole messages, one or several
# kernel chunks) and returns (done, interrupted).
ChunkHandler = Callable[[bytearray, int], Tuple[bool, bool]]
AnySock = Union[socket.socket, Channel, None]


def dump(payload: bytes, handler: ChunkHandler, *, sock: AnySock = None,
         msg_type: int = SOCK_DIAG_BY_FAMILY) -> bool:
    """Send one dump request and feed every reply chunk to ``handler`` until it says done.
    Returns whether the kernel flagged the dump as interrupted (NLM_F_DUMP_INTR: a table changed
    while it was read). Raises NetlinkError when the kernel refuses."""
    chan = sock if isinstance(sock, Channel) else Channel(sock)
    try:
        s = chan.sock
        hdr = NLMSG_HDR.pack(NLMSG_HDRLEN + len(payload), msg_type,
                             NLM_F_REQUEST | NLM_F_DUMP, _next_seq(), 0)
        try:
            s.sendto(hdr + payload, (0, 0))
        except OSError as e:
            raise NetlinkError(e.errno, f"netlink sock_diag request refused: {e.strerror}") from None
        chan.dumps += 1
        # Replies are gathered several chunks at a time before the handler sees them: what a
        # handler does once per call (views, checks, counters) is then paid once per batch
        # rather than once per 32 KiB, which at 100,000 sockets is 300 times a dump.
        buf = _take_buffer()
        try:
            return _receive(s, buf, handler)
        finally:
            _give_buffer(buf)
    finally:
        if chan is not sock:
            chan.close()


def _receive(s: socket.socket, buf: bytearray, handler: ChunkHandler) -> bool:
    view = memoryview(buf)
    try:
        n = 0
        interrupted = False
        while True:
            try:
                k = s.recv_into(view[n:])
            except OSError as e:
                raise NetlinkError(e.errno, f"netlink sock_diag read failed: {e.strerror}") from None
            if k == 0:
                raise ParseError("netlink", "netlink socket closed before NLMSG_DONE")
            piece, n = n, n + k
            if n + RECV_BUFSIZE <= BATCH_BYTES and not _may_end(buf, piece, n):
                continue  # room for another whole chunk, and the dump goes on
            done, intr = handler(buf, n)
            interrupted |= intr
            if done:
                return interrupted
            n = 0
    finally:
        view.release()


# Receive buffers, reused: a fresh 512 KiB buffer is zeroed page by page, which costs a dump of
# a small table more than its decoding. As many are kept as dumps ran at once (at most four).
_buffers: List[bytearray] = []
_buffers_lock = threading.Lock()


def _take_buffer() -> bytearray:
    with _buffers_lock:
        if _buffers:
            return _buffers.pop()
    return bytearray(BATCH_BYTES)


def _give_buffer(buf: bytearray) -> None:
    with _buffers_lock:
        if len(_buffers) < 4:
            _buffers.append(buf)


# A message handler gets (buffer, offset of the nlmsghdr, message length).
MessageFn = Callable[[bytearray, int, int], None]


def walk(buf: bytearray, start: int, n: int, on_message: MessageFn, *, source: str = "netlink",
         msg_type: int = SOCK_DIAG_BY_FAMILY,
         on_run: Optional[Callable[[int], int]] = None) -> Tuple[bool, bool]:
    """Read the messages of ``buf[start:n]`` one by one. Returns (done, interrupted).

    ``on_message`` gets every message of type ``msg_type``. ``on_run(off)``, if given, is asked
    once, at the first such message, whether it can take a run of messages from there in bulk;
    it returns where the run ends (``off`` when it took none). Raises NetlinkError on an
    NLMSG_ERROR reply or an error reported in NLMSG_DONE, ParseError on malformed data.
    """
    off = start
    interrupted = False
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
        if on_run is not None:
            run_end = on_run(off)
            on_run = None
            if run_end > off:
                off = run_end
                continue
        on_message(buf, off, ln)
        off += step
    return False, interrupted


RunFn = Callable[[bytearray, int, int, int], None]


def uniform_run(buf: bytearray, off: int, n: int, run: RunFn,
                msg_type: int = SOCK_DIAG_BY_FAMILY) -> int:
    """If the whole messages from ``off`` on are all one length and of type ``msg_type``, hand
    them to ``run(buf, start, end, length)`` and return where they end; else return ``off``.
    (A trailing NLMSG_DONE is shorter than any diag message, so it is left over.)"""
    ln: int = NLMSG_HDR.unpack_from(buf, off)[0]
    if ln % 4 or ln < NLMSG_HDRLEN:
        return off
    m = (n - off) // ln
    if m < 2:
        return off
    end = off + m * ln
    # each byte of the headers' length and type, cut as one strided slice per byte position
    # (a strided memoryview's tobytes took three times as long)
    head = struct.pack("<IH", ln, msg_type)
    if all(buf[off + j:end:ln] == head[j:j + 1] * m for j in range(6)):
        run(buf, off, end, ln)
        return end
    return off
