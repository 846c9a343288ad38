"""Decoding inet_diag_msg replies (TCP, UDP, UDP-Lite, raw), in bulk.

:func:`dump_records` sends one request and hands the reply's messages to a *record sink* as runs
of fixed-stride records: ``sink(buf, start, end, stride)`` gets ``buf[start:end]`` holding
``(end - start) // stride`` records, each starting with the 72-byte ``struct inet_diag_msg``
(the netlink header is not included). A sink reads fields of all records at once with strided
slices, so no Python code runs per socket.

How a chunk becomes one run:

* every message the same length (one kind of socket: full sockets carry the same attributes,
  time-wait and request minisockets none): the chunk itself, stride = the message length;
* mixed lengths (a dump of every TCP state interleaves full sockets and time-wait minisockets,
  bucket by bucket of the established hash): the chunk is split at the 12 header bytes that every
  reply of this dump shares (type, flags, sequence number, port id), each piece's length is
  checked against the length its header declares (so a split inside a message cannot go
  unnoticed), and the pieces of each length are joined into one run of that stride;
* otherwise (an error, NLM_F_DUMP_INTR, a malformed chunk): message by message.

Every path gives the same records; the tests check that. Layouts are from
include/uapi/linux/inet_diag.h.
"""

from __future__ import annotations

import operator
import socket
import struct
from array import array
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain, compress, repeat
from typing import Callable, Dict, List, NamedTuple, Tuple, Union

from exporter.netlink.transport import (
    NLM_F_MULTI,
    NLMSG_DONE,
    NLMSG_HDR,
    NLMSG_HDRLEN,
    SOCK_DIAG_BY_FAMILY,
    AnySock,
    dump,
    walk,
)
from exporter.procfs.errors import ParseError
from exporter.vocabulary.model import Counts
from exporter.vocabulary.names import TCP_LISTEN

# struct inet_diag_msg: family, state, timer, retrans, sockid {sport, dport (network byte order),
# src[16], dst[16], if, cookie[2]}, expires, rqueue, wqueue, uid, inode.
INET_MSG_LEN = 72
# Offsets inside the record (the inet_diag_msg), in bytes; the 16- and 32-bit indices that the
# sinks use are these divided by 2 and 4.
REC_FAMILY, REC_STATE, REC_SPORT, REC_DPORT, REC_SRC, REC_DST = 0, 1, 4, 6, 8, 24
REC_IFINDEX, REC_RQUEUE, REC_WQUEUE, REC_UID, REC_INODE = 40, 56, 60, 64, 68
_INET_MSG = struct.Struct("<BB2xHH16s16sI8xIIIII")

RecordSink = Callable[[Union[bytes, bytearray], int, int, int], None]


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


def address(family: int, raw: bytes) -> str:
    """An address field (16 bytes, IPv4 in the first 4) as text."""
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    return socket.inet_ntop(socket.AF_INET6, raw[:16])


def swap16(port: int) -> int:
    """A port read little-endian from its network-byte-order field, as a number."""
    return (port & 0xFF) << 8 | port >> 8


def parse_record(buf: Union[bytes, bytearray], rec: int) -> InetSocket:
    """Decode one record (``rec`` points at the inet_diag_msg)."""
    if len(buf) - rec < INET_MSG_LEN:
        raise ParseError("netlink", f"inet_diag_msg truncated: {len(buf) - rec} bytes")
    family, state, sp, dp, src, dst, ifindex, _exp, rq, wq, uid, inode = \
        _INET_MSG.unpack_from(buf, rec)
    return InetSocket(family, state, address(family, src), swap16(sp), address(family, dst),
                      swap16(dp), ifindex, rq, wq, uid, inode)


def parse_inet_msg(buf: Union[bytes, bytearray], off: int = 0) -> InetSocket:
    """Decode one inet_diag_msg (``off`` points at the nlmsghdr)."""
    return parse_record(buf, off + NLMSG_HDRLEN)


def _check_len(ln: int) -> None:
    if ln < NLMSG_HDRLEN + INET_MSG_LEN:
        raise ParseError("netlink", f"inet_diag_msg of {ln} bytes, expected at least "
                                    f"{NLMSG_HDRLEN + INET_MSG_LEN}")




def _uniform(buf: bytearray, start: int, end: int, msg_type: int) -> int:
    """The message length if ``buf[start:end]`` is whole messages of one length, all of type
    ``msg_type`` with flags NLM_F_MULTI only; else 0. Checked in C over strided views."""
    ln: int = NLMSG_HDR.unpack_from(buf, start)[0]
    if ln < NLMSG_HDRLEN + INET_MSG_LEN or ln % 4 or (end - start) % ln:
        return 0
    m = (end - start) // ln
    view = memoryview(buf)[start:end]
    words, halves = view.cast("I"), view.cast("H")
    if (words[0::ln // 4].tobytes() == struct.pack("<I", ln) * m
            and halves[2::ln // 2].tobytes() == struct.pack("<H", msg_type) * m
            and halves[3::ln // 2].tobytes() == struct.pack("<H", NLM_F_MULTI) * m):
        return ln
    return 0


_PAD = b"\0\0\0\0"


@lru_cache(maxsize=64)
def _selector(size: int) -> bytes:
    """A bytes.translate table mapping byte ``size`` to 1 and every other byte to 0."""
    return bytes(1 if i == size else 0 for i in range(256))


def _regroup(buf: bytearray, start: int, end: int, msg_type: int
             ) -> List[Tuple[bytes, int, int]]:
    """Whole messages of type ``msg_type`` in ``buf[start:end]`` sharing one header apart from
    the length, regrouped as runs of records of one stride each: ``[(run, first, stride), ...]``
    with the first record at ``run[first:]``; [] when the region is not such messages.

    The region is split at the sequence number, the one header field that the request chose
    (transport._next_seq makes its four bytes rare in socket records, so that the search skips
    most of the region). Part 0 is then the first message's length, type and flags; part i is
    message i's port id and body, then the next message's length, type and flags (the last one
    followed by a zero length and the type and flags): four bytes shorter than the message.
    Every column that the split leaves at a fixed place is checked: the port ids, the types
    and flags, and the length words against the parts' own lengths, so that the same four
    bytes inside a body cannot go unnoticed."""
    seq, pid = NLMSG_HDR.unpack_from(buf, start)[3:]
    head = struct.pack("<HH", msg_type, NLM_F_MULTI)
    if buf[start + 4:start + 8] != head:
        return []
    parts = b"".join((memoryview(buf)[start:end], b"\0\0\0\0", head)).split(
        struct.pack("<I", seq))
    first = parts[0]
    if len(first) != 8 or first[4:] != head:
        return []
    parts[0] = b""
    lens: Union[bytes, List[int]]
    try:
        lens = bytes(map(len, parts))  # a byte a part: the selectors below stay in C
    except ValueError:
        lens = list(map(len, parts))  # records longer than 255 bytes
    sizes = set(lens)
    sizes.discard(0)
    # The length words, gathered from where they end up: message i declares its length in the
    # third word from the end of part i-1 (the first in parts[0]).
    tails = [first[:4]]
    runs = []
    pid_word, head_word = struct.pack("<I", pid), head
    for size in sizes:
        if size % 4 or size < INET_MSG_LEN + 12:
            return []
        # Four bytes of padding end the run, so that it holds whole strides from the first
        # record on (the records start after each part's port id).
        if len(sizes) == 1:
            same = b"".join(chain(parts, (_PAD,)))
        elif isinstance(lens, bytes):
            same = b"".join(chain(compress(parts, lens.translate(_selector(size))), (_PAD,)))
        else:
            same = b"".join(chain(compress(parts, map(operator.eq, lens, repeat(size))),
                                  (_PAD,)))
        k, n = size // 4, len(same) // size
        cols = memoryview(same)[:n * size].cast("I")
        if (cols[0::k].tobytes() != pid_word * n
                or cols[k - 1::k].tobytes() != head_word * n):
            return []
        tails.append(cols[k - 2::k].tobytes())
        runs.append((same, 4, size))
    words = b"".join(tails)
    declared: Union[bytes, array[int]]
    if max(sizes) + 4 < 256:
        # Every length fits its low byte: the others must be zero, and the low bytes are
        # counted as bytes (array.count makes an int of every word).
        if sum(words[i::4].count(0) for i in (1, 2, 3)) != 3 * (len(words) // 4):
            return []
        declared = words[0::4]
    else:
        declared = array("I")
        declared.frombytes(words)
    # Every message is 4 bytes longer than its part. The sequence number occurring inside a
    # body would split it in two parts, neither of which any length word declares (and whose
    # port id and type columns would not hold): the counts would no longer match.
    if declared.count(0) != 1 or any(declared.count(size + 4) != lens.count(size)
                                     for size in sizes):
        return []
    # Listeners come first in a dump and are full sockets, the longest records: longest first.
    runs.sort(key=lambda r: -r[2])
    return runs


def dump_records(payload: bytes, sink: RecordSink, *, sock: AnySock = None,
                 msg_type: int = SOCK_DIAG_BY_FAMILY) -> bool:
    """Send one inet_diag dump request; hand every reply to ``sink`` as runs of records.
    Returns whether the dump was flagged interrupted."""

    def one(buf: bytearray, off: int, ln: int) -> None:
        _check_len(ln)
        sink(bytes(buf[off + NLMSG_HDRLEN:off + NLMSG_HDRLEN + INET_MSG_LEN]), 0,
             INET_MSG_LEN, INET_MSG_LEN)

    def chunk(buf: bytearray, n: int) -> Tuple[bool, bool]:
        end = n
        # The last chunk ends with NLMSG_DONE (20 bytes): take the messages before it in bulk
        # and read it with walk(), which checks it for an error.
        if n >= NLMSG_HDRLEN + 4 and NLMSG_HDR.unpack_from(buf, n - 20)[:2] == (20, NLMSG_DONE):
            end = n - 20
        if end < NLMSG_HDRLEN + INET_MSG_LEN:
            return walk(buf, 0, n, one, msg_type=msg_type)
        ln = _uniform(buf, 0, end, msg_type)
        if ln:
            sink(buf, NLMSG_HDRLEN, end, ln)
        else:
            runs = _regroup(buf, 0, end, msg_type)
            if not runs:
                return walk(buf, 0, n, one, msg_type=msg_type)
            for run, first, stride in runs:
                sink(run, first, len(run), stride)
        if end == n:
            return False, False
        return walk(buf, end, n, one, msg_type=msg_type)

    return dump(payload, chunk, sock=sock, msg_type=msg_type)


class Run(NamedTuple):
    """Strided views of one run of records: 32-bit words, 16-bit halves, their strides, and the
    family and state byte of every record."""

    words: memoryview
    halves: memoryview
    s4: int
    s2: int
    families: bytes
    states: bytes



# Sockets of one family per state and queue bytes of non-listeners: the one count type.
QueueCounts = Counts


def _all_zero(words: memoryview) -> bool:
    """Whether a strided view of 32-bit words is all zeros, found out on the bytes (no Python
    int per socket)."""
    raw = words.tobytes()
    return raw.count(0) == len(raw)


def _sum(words: memoryview) -> int:
    """The sum of a strided view of 32-bit words; most queues are empty."""
    return 0 if _all_zero(words) else sum(words)


class CountSink:
    """A record sink that counts sockets per (family, state) and sums queue bytes of
    non-listeners per family, in C over strided slices."""

    def __init__(self) -> None:
        self.states: Dict[int, Counter[int]] = {}  # family -> state -> sockets
        self.queues: Dict[int, List[int]] = {}  # family -> [rx bytes, tx bytes]

    def __call__(self, buf: Union[bytes, bytearray], start: int, end: int, stride: int) -> None:
        if end > start:
            self.count(buf, start, end, stride)

    def count(self, buf: Union[bytes, bytearray], start: int, end: int, stride: int) -> Run:
        view = memoryview(buf)[start:end]
        w, h = view.cast("I"), view.cast("H")
        s4, s2 = stride // 4, stride // 2
        fams = bytes(buf[start:end:stride])
        states = bytes(buf[start + 1:end:stride])
        rq, wq = w[REC_RQUEUE // 4::s4], w[REC_WQUEUE // 4::s4]
        if fams.count(fams[0]) == len(fams):
            self._count_states(fams[0], states)
            q = self.queue(fams[0])
            q[0] += _sum(rq)
            q[1] += _sum(wq)
        else:
            # Both families in one run (a TCP dump of both): the states of every family but
            # the commonest picked out with a translate table as selector, the commonest's
            # being the rest; the queues summed per family only when not all empty (time-wait
            # records, most of such a table, have none).
            total: Counter[int] = Counter()
            self._add_states(total, states)
            by_count = sorted(set(fams), key=fams.count)
            for fam in by_count[:-1]:
                sel = fams.translate(_selector(fam))
                picked: Counter[int] = Counter()
                self._add_states(picked, bytes(compress(states, sel)))
                self._count_states_of(fam, picked)
                total.subtract(picked)
            self._count_states_of(by_count[-1], total)
            for col, k in ((rq, 0), (wq, 1)):
                if not _all_zero(col):
                    for fam in by_count:
                        self.queue(fam)[k] += sum(compress(col, fams.translate(_selector(fam))))
        i = states.find(TCP_LISTEN)
        while i >= 0:  # a listener's queue fields are its accept queue: take them back out
            q = self.queue(fams[i])
            q[0] -= rq[i]
            q[1] -= wq[i]
            i = states.find(TCP_LISTEN, i + 1)
        return Run(w, h, s4, s2, fams, states)

    def _count_states(self, fam: int, states: bytes) -> None:
        c = self.states.get(fam)
        if c is None:
            c = self.states[fam] = Counter()
        self._add_states(c, states)

    @staticmethod
    def _add_states(c: Counter[int], states: bytes) -> None:
        for st in set(states):  # a handful of distinct states: one count each, in C
            c[st] += states.count(st)

    def _count_states_of(self, fam: int, counts: Counter[int]) -> None:
        c = self.states.get(fam)
        if c is None:
            c = self.states[fam] = Counter()
        for st, n in counts.items():
            if n:
                c[st] += n

    def queue(self, fam: int) -> List[int]:
        q = self.queues.get(fam)
        if q is None:
            q = self.queues[fam] = [0, 0]
        return q

    def family(self, fam: int, interrupted: bool = False) -> QueueCounts:
        """The counts of one family."""
        q = self.queues.get(fam, [0, 0])
        return Counts(Counter(self.states.get(fam, {})), q[0], q[1], interrupted)


def list_records(payload: bytes, *, sock: AnySock = None,
                 msg_type: int = SOCK_DIAG_BY_FAMILY) -> List[InetSocket]:
    """Every socket of a dump, fully decoded (for tests and small dumps)."""
    out: List[InetSocket] = []

    def sink(buf: Union[bytes, bytearray], start: int, end: int, stride: int) -> None:
        out.extend(parse_record(buf, i) for i in range(start, end, stride))

    dump_records(payload, sink, sock=sock, msg_type=msg_type)
    return out
