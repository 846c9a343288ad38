"""Decoding unix_diag_msg replies (AF_UNIX sockets), in bulk.

Layouts are from include/uapi/linux/unix_diag.h. With UDIAG_SHOW_RQLEN each message carries one
UNIX_DIAG_RQLEN attribute {rqueue, wqueue}; a run of such messages is 44 bytes each and is read
with strided slices, anything else message by message.
"""

from __future__ import annotations

import struct
from collections import Counter
from typing import Iterator, Tuple

from exporter.netlink.requests import unix_request
from exporter.netlink.transport import NLMSG_HDRLEN, AnySock, dump, uniform_run, walk
from exporter.procfs.errors import ParseError
from exporter.vocabulary.names import TCP_LISTEN

UNIX_MSG_LEN = 16  # family, type, state, pad, ino, cookie[2]
UNIX_DIAG_RQLEN = 4


def attributes(buf: bytearray, off: int, end: int) -> Iterator[Tuple[int, int, int]]:
    """(type, payload offset, payload length) of each netlink attribute in buf[off:end]."""
    while off + 4 <= end:
        alen, atype = struct.unpack_from("<HH", buf, off)
        if alen < 4 or off + alen > end:
            raise ParseError("netlink", f"bad attribute length {alen} at byte {off}")
        yield atype & 0x3FFF, off + 4, alen - 4
        off += (alen + 3) & ~3


def count_unix(*, sock: AnySock = None) -> Tuple[Counter[Tuple[int, int]], int, int, bool]:
    """Count AF_UNIX sockets per (type, state). Returns (counts, rx_bytes, tx_bytes, interrupted).

    For a listener the RQLEN fields are the accept queue and backlog, so listeners are left out
    of the byte sums.
    """
    counts: Counter[Tuple[int, int]] = Counter()
    sums = [0, 0]

    def one(buf: bytearray, off: int, ln: int) -> None:
        base = off + NLMSG_HDRLEN
        if ln < NLMSG_HDRLEN + UNIX_MSG_LEN:
            raise ParseError("netlink", f"unix_diag_msg of {ln} bytes")
        typ, state = buf[base + 1], buf[base + 2]
        counts[(typ, state)] += 1
        if state == TCP_LISTEN:
            return
        for atype, aoff, alen in attributes(buf, base + UNIX_MSG_LEN, off + ln):
            if atype == UNIX_DIAG_RQLEN and alen >= 8:
                rq, wq = struct.unpack_from("<II", buf, aoff)
                sums[0] += rq
                sums[1] += wq

    def run(buf: bytearray, start: int, end: int, ln: int) -> None:
        # A uniform run is msg(16) + one RQLEN attribute (4 + 8) = 44 bytes: check that the
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

    def chunk(buf: bytearray, n: int) -> Tuple[bool, bool]:
        return walk(buf, 0, n, one, on_run=lambda off: uniform_run(buf, off, n, run))

    intr = dump(unix_request(), chunk, sock=sock)
    return counts, sums[0], sums[1], intr
