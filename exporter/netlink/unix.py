"""Decoding unix_diag_msg replies (AF_UNIX sockets), in bulk.

Layouts are from include/uapi/linux/unix_diag.h. With UDIAG_SHOW_RQLEN each message carries one
UNIX_DIAG_RQLEN attribute {rqueue, wqueue}, first after the header; a run of such messages of
one length (uniform_run: lengths are multiples of 4) is read with strided slices, anything else
message by message.
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
# The RQLEN attribute's header as it sits in a message: length 12, type UNIX_DIAG_RQLEN.
_RQLEN_HEAD = struct.pack("<HH", 12, UNIX_DIAG_RQLEN)
# bytes.translate table: each byte shifted left by four bits (within a byte)
_SHIFT4 = bytes((i << 4) & 0xFF for i in range(256))
# bytes.translate deletions: what is left of a column is its values of 16 and more
_NIBBLES = bytes(range(16))


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
        # A uniform run starts every message with the RQLEN attribute (4 + 8 bytes), the first
        # the kernel puts after the header when only UDIAG_SHOW_RQLEN is asked for
        # (sk_diag_fill in net/unix/diag.c); what follows it (UNIX_DIAG_SHUTDOWN, always sent
        # since Linux 3.10, 52 bytes a message in all) is not read. Checked on every message,
        # else walked. Columns are cut with strided byte slices and tested with bytes methods:
        # a Python-level pass over a chunk's 600 messages (max(), map()) cost more than the
        # kernel's dump of them.
        m = (end - start) // ln
        base = start + NLMSG_HDRLEN
        first = base + UNIX_MSG_LEN
        if ln < NLMSG_HDRLEN + UNIX_MSG_LEN + 12 or any(
                buf[first + j:end:ln] != _RQLEN_HEAD[j:j + 1] * m for j in range(4)):
            for i in range(start, end, ln):
                one(buf, i, ln)
            return
        types = bytes(buf[base + 1:end:ln])
        states = bytes(buf[base + 2:end:ln])
        # (type, state) as one byte, type << 4 | state (types 1, 2, 5; states up to 10), so
        # that the few distinct pairs are counted with bytes.count; the OR of the two columns
        # as integers is the bytewise OR, their bits apart
        if not states.translate(None, _NIBBLES) and not types.translate(None, _NIBBLES):
            pairs = (int.from_bytes(types.translate(_SHIFT4), "little")
                     | int.from_bytes(states, "little")).to_bytes(m, "little")
            for v in set(pairs):
                counts[(v >> 4, v & 15)] += pairs.count(v)
        else:
            counts.update(zip(types, states))
        words = memoryview(buf)[start:end].cast("I")
        step = ln // 4
        at = NLMSG_HDRLEN + UNIX_MSG_LEN + 4
        for k in (0, 1):
            off = start + at + 4 * k
            if all(buf[off + j:end:ln].count(0) == m for j in range(4)):
                continue  # every queue empty, the rule
            col = words[at // 4 + k::step]
            total = sum(col)
            i = states.find(TCP_LISTEN)
            while i >= 0:  # a listener's RQLEN fields are its accept queue and backlog
                total -= col[i]
                i = states.find(TCP_LISTEN, i + 1)
            sums[k] += total

    def chunk(buf: bytearray, n: int) -> Tuple[bool, bool]:
        return walk(buf, 0, n, one, on_run=lambda off: uniform_run(buf, off, n, run))

    intr = dump(unix_request(), chunk, sock=sock)
    return counts, sums[0], sums[1], intr
