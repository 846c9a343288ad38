"""One pass over a protocol's socket records that produces what every collector needs.

Every source hands its sockets to :class:`InetPass` as runs of fixed-stride records laid out as
the kernel's ``struct inet_diag_msg`` (netlink gives them so; /proc/net rows and psutil entries
are packed into the same layout by :mod:`exporter.sockets.sources`). For each run it counts, with
strided slices and C-level iteration (nothing in Python per socket except listeners):

* sockets per (family, state) and the queue bytes of non-listeners (sockets collector);
* listeners, fully decoded, and connections per (listening port, state), in the states a
  connection accepted on a listening port can be in (listeners collector);
* distinct ephemeral local ports in use, and per destination (local address, remote address,
  remote port) how many (ports collector).

TCP listeners come first in a dump (the kernel walks the listening hash before the established
hash, and /proc/net/tcp lists them first), so the listening ports are known before the
connections to them arrive.
"""

from __future__ import annotations

import operator
import socket
import struct
from array import array
from collections import Counter
from itertools import compress, repeat
from typing import Dict, Iterable, List, Optional, Set, Tuple, Union

from exporter.netlink.inet import (
    REC_DPORT,
    REC_DST,
    REC_SPORT,
    REC_SRC,
    CountSink,
    Run,
    address,
    swap16,
)
from exporter.vocabulary.model import Counts, EphemeralRange, InetTables, Listener, PortUse
from exporter.vocabulary.names import (
    FAMILY_NAMES,
    LISTENER_CONNECTION_STATES,
    TCP_CLOSE,
    TCP_LISTEN,
)

AF_INET = int(socket.AF_INET)
# A record, unpacked for a listener: family, state, sport, src, ifindex, rqueue, wqueue, uid,
# inode (ports in network byte order read little-endian).
_LISTENER = struct.Struct("<BB2xH2x16s16xI8x4xIIII")
Buffer = Union[bytes, bytearray]

_ADDRESSES: Dict[Tuple[int, bytes, int], str] = {}
# bytes.translate table: 1 for AF_INET, 0 for any other family byte
_IS_AF_INET = bytes(1 if i == AF_INET else 0 for i in range(256))
# bytes.translate tables: 1 for one family, 0 for any other family byte
_IS_FAMILY = {f: bytes(1 if i == f else 0 for i in range(256)) for f in range(256)}
# bytes.translate tables: 1 for any family but AF_INET; 1 for any state but LISTEN
_NOT_AF_INET = bytes(0 if i == AF_INET else 1 for i in range(256))
_NOT_LISTEN = bytes(0 if i == TCP_LISTEN else 1 for i in range(256))
_MIXED = 2  # a block of 256 ports partly in the ephemeral range (EphemeralRange.blocks)
_MIXED_TO_0 = bytes(0 if i == _MIXED else i for i in range(256))


def _and(a: bytes, b: bytes) -> bytes:
    """The bytewise AND of two 0/1 masks of one length (as integers, in C)."""
    return (int.from_bytes(a, "little") & int.from_bytes(b, "little")).to_bytes(len(a), "little")


# The destination of a UDP (port, destination) pair: the record bytes after the local port of a
# pair with whole addresses, (dport, src, dst) of an IPv4 one.
_PAIR_DEST = operator.itemgetter(slice(REC_DPORT - REC_SPORT, None))
_PAIR_DEST4 = operator.itemgetter(1, 2, 3)


def _format(family: int, raw: bytes, ifindex: int) -> str:
    """An address as ss prints it, ``%<device>`` added for a socket bound to one; memoised,
    listeners share few addresses."""
    key = (family, raw, ifindex)
    text = _ADDRESSES.get(key)
    if text is None:
        if len(_ADDRESSES) > 4096:
            _ADDRESSES.clear()
        text = address(family, raw)
        if ifindex:
            try:
                text = f"{text}%{socket.if_indextoname(ifindex)}"
            except OSError:
                text = f"{text}%{ifindex}"
        _ADDRESSES[key] = text
    return text


class InetPass(CountSink):
    """The record sink of one protocol (both families) for one snapshot."""

    def __init__(self, protocol: str, *, listeners: bool = True, connections: bool = True,
                 ephemeral: Optional[EphemeralRange] = None) -> None:
        super().__init__()
        self.protocol = protocol
        self.tcp = protocol == "tcp"
        self.want_listeners = listeners or connections
        self.want_connections = connections and self.tcp
        self.ephemeral = ephemeral
        self.listeners: List[Listener] = []
        self._lports: Set[int] = set()  # listening TCP ports, raw (byte-swapped)
        self._conn: Counter[int] = Counter()  # state | raw port << 16
        self._used: Set[int] = set()  # ephemeral ports in use, raw
        # per destination: TCP counts sockets, since a TCP 4-tuple is unique in the established
        # hash (__inet_check_established); UDP sockets may share one (SO_REUSEPORT), so UDP
        # keeps (port, destination) pairs and counts distinct ports. These two hold the
        # records of families other than IPv4, per family, keyed by bytes of the record (see
        # _destinations_whole).
        self._dest: Dict[int, Counter[bytes]] = {}
        self._dest_pairs: Dict[int, Set[bytes]] = {}
        # the same for IPv4 records, keyed by (dport, first word of src, of dst) only
        self._dest4: Counter[Tuple[int, ...]] = Counter()
        self._pairs4: Set[Tuple[int, ...]] = set()
        # TCP IPv4 records: one int per socket (see _packed), and the local addresses
        # numbered in it
        self._dest_packed: Counter[int] = Counter()
        self._src_index: Dict[int, int] = {}
        self._src_words: List[int] = []

    # --- the sink ----------------------------------------------------------------------------

    def __call__(self, buf: Buffer, start: int, end: int, stride: int) -> None:
        if end <= start:
            return
        run = self.count(buf, start, end, stride)
        w, h, s4, s2, fams, states = run
        listening = states.count(TCP_LISTEN)
        if listening and self.want_listeners:
            self._listeners(buf, start, stride, states, TCP_LISTEN)
        if not self.tcp and self.want_listeners and TCP_CLOSE in states:
            self._listeners(buf, start, stride, states, TCP_CLOSE)
        sports = h[2::s2].tolist()
        if self.want_connections and self._lports:
            # one int per record, state | raw port << 16, assembled with strided byte copies:
            # counting ints costs a third of counting (port, state) tuples
            keys = bytearray(4 * len(states))
            keys[0::4] = states
            keys[2::4] = buf[start + REC_SPORT:end:stride]
            keys[3::4] = buf[start + REC_SPORT + 1:end:stride]
            self._conn.update(compress(memoryview(keys).cast("I").tolist(),
                                       map(self._lports.__contains__, sports)))
        if self.ephemeral is not None:
            sel = self._ephemeral_mask(buf, start, end, stride)
            if listening and self.tcp:  # a listener's port is not an ephemeral port in use
                sel = _and(sel, states.translate(_NOT_LISTEN))
            if 1 not in sel:
                return
            self._used.update(compress(sports, sel))
            if fams.count(AF_INET) == len(fams):  # IPv4 only (the rule)
                self._destinations4(buf, start, end, stride, run, sports, sel)
                return
            # Both families: the IPv4 records go the IPv4 way and the others with whole
            # addresses, so that every destination is keyed one way only.
            sel4 = _and(sel, fams.translate(_IS_AF_INET))
            if 1 in sel4:
                self._destinations4(buf, start, end, stride, run, sports, sel4)
            sel6 = _and(sel, fams.translate(_NOT_AF_INET))
            if 1 in sel6:
                self._destinations_whole(buf, start, end, stride, fams, sel6)

    def _ephemeral_mask(self, buf: Buffer, start: int, end: int, stride: int) -> bytes:
        """1 for each record whose local port is in the ephemeral range, else 0, as bytes. By
        the port's high byte (the first in the record) through a translate table: a range
        covers whole blocks of 256 ports but at its two ends and around reserved ports; the
        records of such a block are read by their low byte through the block's own table.
        Each step is a translate or an AND or OR of masks as integers, in C."""
        hi = bytes(buf[start + REC_SPORT:end:stride])
        rng = self.ephemeral
        assert rng is not None
        kinds = hi.translate(rng.blocks)
        if _MIXED not in kinds:
            return kinds
        sel = int.from_bytes(kinds.translate(_MIXED_TO_0), "little")
        lo = bytes(buf[start + REC_SPORT + 1:end:stride])
        rows = rng.rows
        for block in rows.keys() & set(hi):
            sel |= int.from_bytes(hi.translate(_IS_FAMILY[block]), "little") & \
                int.from_bytes(lo.translate(rows[block]), "little")
        return sel.to_bytes(len(kinds), "little")

    def _destinations_whole(self, buf: Buffer, start: int, end: int, stride: int, fams: bytes,
                            sel: bytes) -> None:
        """Count the selected records of families other than IPv4 per destination, keyed by
        the record's own bytes: remote port, local and remote address as they sit in it (TCP),
        with the local port in front (UDP), one bytes object per record cut in C."""
        data = bytes(memoryview(buf)[start:end])
        first = REC_DPORT if self.tcp else REC_SPORT
        size = REC_DST + 16 - first
        for fam in set(compress(fams, sel)):
            pick = sel if fams.count(fam) == len(fams) else \
                list(map(operator.mul, sel, fams.translate(_IS_FAMILY[fam])))
            offs = list(compress(range(first, end - start, stride), pick))
            keys = map(data.__getitem__, map(slice, offs, map(operator.add, offs, repeat(size))))
            if self.tcp:
                self._dest.setdefault(fam, Counter()).update(keys)
            else:
                self._dest_pairs.setdefault(fam, set()).update(keys)

    def _destinations4(self, buf: Buffer, start: int, end: int, stride: int, run: Run,
                       sports: List[int], sel: bytes) -> None:
        """Count the selected IPv4 records per destination: the first word of each address is
        the address."""
        w, h, s4, s2 = run.words, run.halves, run.s4, run.s2
        if self.tcp and len(self._src_index) < 0xFF00:
            self._dest_packed.update(compress(self._packed(buf, start, end, stride, w, s4), sel))
            return
        picked = [compress(col, sel) for col in (h[3::s2], w[2::s4], w[6::s4])]
        if self.tcp:
            self._dest4.update(zip(*picked))
        else:
            self._pairs4.update(zip(compress(sports, sel), *picked))

    def _packed(self, buf: Buffer, start: int, end: int, stride: int, w: memoryview,
                s4: int) -> List[int]:
        """One 64-bit key per IPv4 record: destination address (4 bytes) and port (2) as they
        sit in the record, and the number of the local address (2), assembled with strided
        byte copies, so that counting destinations hashes an int instead of a tuple."""
        srcs = w[2::s4]
        index = self._src_index
        distinct = set(srcs)
        for s in distinct.difference(index):
            index[s] = len(index)
            self._src_words.append(s)
        n = len(srcs)
        keys = bytearray(8 * n)
        for j in range(4):
            keys[j::8] = buf[start + REC_DST + j:end:stride]
        keys[4::8] = buf[start + REC_DPORT:end:stride]
        keys[5::8] = buf[start + REC_DPORT + 1:end:stride]
        if len(distinct) == 1:  # one local address (the rule on a client): no lookup per socket
            numbers = struct.pack("<H", index[distinct.pop()]) * n
        else:
            numbers = array("H", map(index.__getitem__, srcs)).tobytes()
        keys[6::8] = numbers[0::2]
        keys[7::8] = numbers[1::2]
        return memoryview(keys).cast("Q").tolist()

    def _listeners(self, buf: Buffer, start: int, stride: int, states: bytes, state: int) -> None:
        i = states.find(state)
        while i >= 0:
            fam, _st, sp, src, ifindex, rq, wq, uid, inode = \
                _LISTENER.unpack_from(buf, start + i * stride)
            if sp and fam in FAMILY_NAMES:
                port = swap16(sp)
                fname = FAMILY_NAMES[fam]
                addr = _format(fam, src, ifindex)
                if state == TCP_LISTEN:
                    self.listeners.append(Listener(self.protocol, fname, addr, port, inode, uid,
                                                   rq, wq))
                    self._lports.add(sp)
                else:
                    self.listeners.append(Listener(self.protocol, fname, addr, port, inode, uid))
            i = states.find(state, i + 1)

    def used_ports(self) -> Set[int]:
        """The ephemeral ports in use seen so far (host order)."""
        return {swap16(p) for p in self._used}

    # --- the result --------------------------------------------------------------------------

    def result(self, source: str, families: Iterable[str], *, queues: bool = True,
               interrupted: bool = False) -> InetTables:
        """The tables for ``families`` (those whose socket table exists)."""
        out = InetTables(self.protocol, source, interrupted=interrupted)
        out.listeners = self.listeners
        by_name = {name: num for num, name in FAMILY_NAMES.items()}
        for fam in families:
            out.counts[fam] = Counts(Counter(), None, None)
            if queues:
                q = self.queues.get(by_name[fam], [0, 0])
                out.counts[fam].rx_queue, out.counts[fam].tx_queue = q
        for num, states in self.states.items():
            name = FAMILY_NAMES.get(num)
            if name is not None and name in out.counts:
                out.counts[name].states.update(states)
        if self.want_connections:
            for key, n in self._conn.items():
                state = key & 0xFF
                if state in LISTENER_CONNECTION_STATES:
                    out.connections[(swap16(key >> 16), state)] += n
        if self.ephemeral is not None:
            use = out.ports = PortUse(used=len(self._used))
            for fnum, dests in self._dest.items():
                for raw, n in dests.items():
                    if raw[:2] != b"\0\0":  # a peer: a destination
                        use.destinations[destination(fnum, raw)] += n
            for key, n in self._dest_packed.items():
                dport = key >> 32 & 0xFFFF
                if dport:
                    dkey = (dport, self._src_words[key >> 48], key & 0xFFFFFFFF)
                    use.destinations[_destination4(dkey)] += n
            for key4, n in self._dest4.items():
                if key4[0]:
                    use.destinations[_destination4(key4)] += n
            # UDP: distinct (port, destination) pairs per destination, each destination
            # formatted once (IPv4 pairs and the others are apart: see __call__)
            for fnum, pairs in self._dest_pairs.items():
                for raw, n in Counter(map(_PAIR_DEST, pairs)).items():
                    if raw[:2] != b"\0\0":
                        use.destinations[destination(fnum, raw)] += n
            for pkey, n in Counter(map(_PAIR_DEST4, self._pairs4)).items():
                if pkey[0]:
                    use.destinations[_destination4(pkey)] += n
        return out


def destination(fam: int, raw: bytes) -> str:
    """``local->remote:port`` of record bytes from REC_DPORT on: the remote port (network byte
    order), the local and the remote address (16 bytes each)."""
    src = address(fam, raw[REC_SRC - REC_DPORT:REC_DST - REC_DPORT])
    dst = address(fam, raw[REC_DST - REC_DPORT:REC_DST - REC_DPORT + 16])
    if ":" in dst:
        dst = f"[{dst}]"
    return f"{src}->{dst}:{int.from_bytes(raw[:2], 'big')}"


def _destination4(key: Tuple[int, ...]) -> str:
    """``local->remote:port`` of an IPv4 key (raw dport, src word, dst word)."""
    return destination(AF_INET, struct.pack("<HI12xI12x", key[0], key[1], key[2]))


def ephemeral_range(low: int, high: int, reserved: Iterable[Tuple[int, int]]) -> EphemeralRange:
    """The ports connect() and autobind may pick: [low, high] minus the reserved ranges
    (inet_get_local_port_range and inet_is_local_reserved_port in include/net/ip.h)."""
    ports = set(range(max(low, 0), min(high, 65535) + 1))
    for a, b in reserved:
        ports.difference_update(range(a, b + 1))
    blocks = bytearray(256)
    rows: Dict[int, bytearray] = {}
    for hi, n in Counter(p >> 8 for p in ports).items():
        blocks[hi] = 1 if n == 256 else _MIXED
        if n < 256:
            rows[hi] = bytearray(256)
    for p in ports:
        row = rows.get(p >> 8)
        if row is not None:
            row[p & 0xFF] = 1
    return EphemeralRange(frozenset(ports), bytes(blocks),
                          {hi: bytes(row) for hi, row in rows.items()})
