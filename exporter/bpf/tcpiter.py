"""The TCP table counted in the kernel: a program run by the kernel's TCP socket iterator
(``bpf_iter_tcp``, Linux 5.9) for every socket of the calling thread's network namespace,
adding up what the socket snapshot needs instead of copying every socket out through
sock_diag for Python to decode:

* sockets per (family, state): a time-wait socket by its substate (TIME_WAIT or FIN_WAIT2), a
  request socket as SYN_RECV, as inet_diag reports them;
* receive and send queue bytes of full sockets other than listeners, per family
  (``rcv_nxt - copied_seq``, at least 0, and ``write_seq - snd_una``, as tcp_diag_get_info);
* connections per (listening port, state): a listener gives its port a slot when the iterator
  meets it (the kernel walks the listening hash before the established one, as the dump does);
* ephemeral ports in use (a bitmap of the ports of the range, set for every socket but a
  listener) and sockets per destination (local address, remote address, remote port) of
  those with a peer, in a hash map whose entries carry the run's number, so that a run needs
  no clearing of the map and a destination gone since the last run is left out.

Everything but the destinations lies in one array map the exporter maps into memory, reads
after a run and clears what the run wrote before the next. The reader checks the
destinations it read against the number of sockets the program counted into them, and every
slot against what it could hold; a run that did not fit (more listening ports than slots,
more destinations than the map holds) raises :class:`Incomplete`, and the snapshot dumps the
table through sock_diag instead.

Not seen by the iterator: sockets bound but neither listening nor connecting (TCP's
bound-inactive state, in the bind hash only), and the listeners' own details (address, queue,
backlog, owner); the snapshot takes the listeners from one small sock_diag dump, and the
bound sockets from :mod:`exporter.bpf.tcpbound`'s scan of the open files or, where that does
not serve, from the same dump (see :mod:`exporter.sockets.snapshot`).

Every field offset comes from the kernel's BTF (:mod:`exporter.bpf.btf`); nothing is compiled.
Loading the program needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN).
"""

from __future__ import annotations

import socket
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Optional, Tuple

from exporter.bpf import btf
from exporter.bpf import syscalls as sc
from exporter.bpf.asm import (
    FP,
    MAP_UPDATE_ELEM,
    R0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    Asm,
    reg,
)
from exporter.vocabulary.names import (
    TCP_LISTEN,
    TCP_NEW_SYN_RECV,
    TCP_SYN_RECV,
    TCP_TIME_WAIT,
)

SKC_TO_TCP_SOCK, SKC_TO_TCP_TIMEWAIT_SOCK = 137, 138  # enum bpf_func_id
AF_INET, AF_INET6 = int(socket.AF_INET), int(socket.AF_INET6)

MAX_SLOTS = 4095  # listening ports with connection counts; slot 0 means "not listening"
DEST_MAX = 16384  # destinations the hash map holds
MAX_READS = 256  # reads of one run, each of at most a million sockets

# The array map's one value, byte offsets.
OFF_GEN = 0  # the run's number, written by the exporter
OFF_COUNTS = 64  # u64 [family (IPv4, IPv6)][16 states]
OFF_QUEUES = OFF_COUNTS + 2 * 16 * 8  # u64 [family][receive, send]
OFF_NEXT_SLOT = OFF_QUEUES + 4 * 8  # u64: slots given out
OFF_SLOTS_LOST = OFF_NEXT_SLOT + 8  # u64: listening ports that found no slot
OFF_DEST_TOTAL = OFF_SLOTS_LOST + 8  # u64: sockets counted per destination
OFF_DEST_LOST = OFF_DEST_TOTAL + 8  # u64: sockets whose destination found no room
OFF_EPH = 1024  # bitmap of the ephemeral ports, written by the exporter
OFF_USED = OFF_EPH + 8192  # bitmap of the ephemeral ports in use
OFF_SLOT = OFF_USED + 8192  # u16 [port]: the port's slot
OFF_CONN = OFF_SLOT + 2 * 65536  # u64 [slot][16 states]
OFF_SLOT_PORT = OFF_CONN + (MAX_SLOTS + 1) * 16 * 8  # u16 [slot]: the slot's port
VALUE_SIZE = OFF_SLOT_PORT + 2 * (MAX_SLOTS + 1)

# A destination's key: family index (u32), remote port (network order, u16), 2 bytes of
# padding, local address (16 bytes), remote address (16 bytes); its value: run, sockets.
DEST_KEY = struct.Struct("=IH2x16s16s")
DEST_VALUE = struct.Struct("=QQ")
_KEY_AT = -64  # the key's place on the program's stack
_PORT_AT, _STATE_AT, _VALUE_AT = -8, -16, -80


class Incomplete(RuntimeError):
    """A run whose results did not fit the maps: the table is to be read another way."""


@dataclass(frozen=True)
class Fields:
    """Where the program finds what it reads, from the kernel's BTF."""

    family: int
    state: int
    num: int  # the local port, host order
    dport: int  # the remote port, network order
    rcv_saddr: int
    daddr: int
    v6_rcv_saddr: int
    v6_daddr: int
    tw_substate: int  # in struct tcp_timewait_sock
    rcv_nxt: int  # in struct tcp_sock
    copied_seq: int
    write_seq: int
    snd_una: int
    attach_btf_id: int  # function bpf_iter_tcp


def fields(types: btf.Btf) -> Fields:
    sizes = {"skc_family": 2, "skc_state": 1, "skc_num": 2, "skc_dport": 2,
             "skc_rcv_saddr": 4, "skc_daddr": 4}
    got = {}
    for name, size in sizes.items():
        m = types.member("sock_common", name)
        if m.size != size:
            raise btf.BtfError(f"BTF: sock_common.{name} has {m.size} bytes, not {size}")
        got[name] = m.offset
    tcp = {}
    for name in ("rcv_nxt", "copied_seq", "write_seq", "snd_una"):
        m = types.member("tcp_sock", name)
        if m.size != 4:
            raise btf.BtfError(f"BTF: tcp_sock.{name} has {m.size} bytes, not 4")
        tcp[name] = m.offset
    sub = types.member("tcp_timewait_sock", "tw_sk", "tw_substate")
    if sub.size != 1:
        raise btf.BtfError(f"BTF: tw_substate has {sub.size} bytes, not 1")
    return Fields(got["skc_family"], got["skc_state"], got["skc_num"], got["skc_dport"],
                  got["skc_rcv_saddr"], got["skc_daddr"],
                  types.offset("sock_common", "skc_v6_rcv_saddr"),
                  types.offset("sock_common", "skc_v6_daddr"), sub.offset,
                  tcp["rcv_nxt"], tcp["copied_seq"], tcp["write_seq"], tcp["snd_una"],
                  types.func("bpf_iter_tcp"))


def _inc(a: Asm, ptr: int, off: int, by: int = R5) -> None:
    """``*(u64 *)(ptr + off) += by``, through r0 (r1 when ``ptr`` is r0). The iterator runs
    the program for one socket at a time and the exporter one iteration at a time: no atomic
    add is needed."""
    tmp = R1 if ptr == R0 else R0
    a.ldx(8, tmp, ptr, off)
    a.add(tmp, reg(by))
    a.stx(8, ptr, off, tmp)


def _port_slot(a: Asm) -> None:
    """r2 = the socket's local port (from the stack), r1 = where its slot lies in the array
    map's value (r7), r4 = the slot (0: none)."""
    a.ldx(8, R2, FP, _PORT_AT)
    a.mov(R1, reg(R7))
    a.mov(R3, reg(R2))
    a.lsh(R3, 1)
    a.add(R1, reg(R3))
    a.add(R1, OFF_SLOT)
    a.ldx(2, R4, R1, 0)


def program(f: Fields, blob_fd: int, dest_fd: int) -> bytes:
    """The program: r6 the socket, r7 the array map's value, r8 the family's offset into the
    counts (0 or 128 bytes), r9 the state; the local port and the raw state on the stack."""
    a = Asm()
    a.ldx(8, R6, R1, 8)  # struct bpf_iter__tcp: meta, sk_common, uid
    a.jmp("eq", R6, 0, "out")
    a.st(4, FP, -4, 0)
    a.map_lookup(blob_fd, -4)
    a.jmp("eq", R0, 0, "out")
    a.mov(R7, reg(R0))
    a.ldx(2, R1, R6, f.family)
    a.mov(R8, 0)
    a.jmp("eq", R1, AF_INET, "family")
    a.mov(R8, 16 * 8)
    a.jmp("ne", R1, AF_INET6, "out")
    a.label("family")
    a.ldx(1, R9, R6, f.state)
    a.stx(8, FP, _STATE_AT, R9)
    a.ldx(2, R1, R6, f.num)
    a.stx(8, FP, _PORT_AT, R1)
    a.jmp("ne", R9, TCP_TIME_WAIT, "not_tw")
    a.mov(R1, reg(R6))
    a.call(SKC_TO_TCP_TIMEWAIT_SOCK)
    a.jmp("eq", R0, 0, "out")
    a.ldx(1, R9, R0, f.tw_substate)
    a.label("not_tw")
    a.jmp("ne", R9, TCP_NEW_SYN_RECV, "state")
    a.mov(R9, TCP_SYN_RECV)
    a.label("state")
    a.and_(R9, 15)
    # counts[family][state] += 1
    a.mov(R1, reg(R7))
    a.add(R1, reg(R8))
    a.mov(R2, reg(R9))
    a.lsh(R2, 3)
    a.add(R1, reg(R2))
    a.mov(R5, 1)
    _inc(a, R1, OFF_COUNTS)
    a.jmp("eq", R9, TCP_LISTEN, "listen")

    # queue bytes of a full socket
    a.ldx(8, R1, FP, _STATE_AT)
    a.jmp("eq", R1, TCP_TIME_WAIT, "connections")
    a.jmp("eq", R1, TCP_NEW_SYN_RECV, "connections")
    a.mov(R1, reg(R6))
    a.call(SKC_TO_TCP_SOCK)
    a.jmp("eq", R0, 0, "connections")
    a.mov(R3, reg(R8))
    a.alu("rsh", R3, 3)  # 0 or 16 bytes: the family's two queue counters
    a.add(R3, reg(R7))
    a.ldx(4, R5, R0, f.rcv_nxt)
    a.ldx(4, R1, R0, f.copied_seq)
    a.alu("sub", R5, reg(R1), bits=32)
    a.jmp("sge", R5, 0, "rq", bits=32)
    a.mov(R5, 0)
    a.label("rq")
    a.ldx(4, R4, R0, f.write_seq)
    a.ldx(4, R1, R0, f.snd_una)
    a.alu("sub", R4, reg(R1), bits=32)
    a.mov(R2, reg(R4))
    _inc(a, R3, OFF_QUEUES)  # += r5
    a.mov(R5, reg(R2))
    _inc(a, R3, OFF_QUEUES + 8)

    # connections per listening port: conn[slot][state] += 1
    a.label("connections")
    _port_slot(a)
    a.jmp("eq", R4, 0, "ephemeral")
    a.and_(R4, MAX_SLOTS)
    a.lsh(R4, 7)
    a.mov(R1, reg(R7))
    a.add(R1, reg(R4))
    a.mov(R3, reg(R9))
    a.lsh(R3, 3)
    a.add(R1, reg(R3))
    a.add(R1, OFF_CONN)
    a.mov(R5, 1)
    _inc(a, R1, 0)

    # ephemeral ports: used[port] = 1, then the destination
    a.label("ephemeral")
    a.ldx(8, R2, FP, _PORT_AT)
    a.mov(R3, reg(R2))
    a.alu("rsh", R3, 6)
    a.lsh(R3, 3)
    a.mov(R1, reg(R7))
    a.add(R1, reg(R3))
    a.mov(R5, reg(R2))
    a.and_(R5, 63)
    a.mov(R0, 1)
    a.alu("lsh", R0, reg(R5))
    a.ldx(8, R4, R1, OFF_EPH)
    a.alu("and", R4, reg(R0))
    a.jmp("eq", R4, 0, "out")
    a.mov(R3, reg(R1))
    a.add(R3, OFF_USED)
    a.ldx(8, R4, R3, 0)
    a.or_(R4, reg(R0))
    a.stx(8, R3, 0, R4)
    a.ldx(2, R2, R6, f.dport)
    a.jmp("eq", R2, 0, "out")
    for i in range(0, 40, 8):
        a.st(8, FP, _KEY_AT + i, 0)
    a.mov(R1, reg(R8))
    a.alu("rsh", R1, 7)  # 0 or 1
    a.stx(4, FP, _KEY_AT, R1)
    a.stx(2, FP, _KEY_AT + 4, R2)
    a.jmp("ne", R8, 0, "v6")
    a.ldx(4, R1, R6, f.rcv_saddr)
    a.stx(4, FP, _KEY_AT + 8, R1)
    a.ldx(4, R1, R6, f.daddr)
    a.stx(4, FP, _KEY_AT + 24, R1)
    a.ja("key")
    a.label("v6")
    for i in range(0, 16, 4):
        a.ldx(4, R1, R6, f.v6_rcv_saddr + i)
        a.stx(4, FP, _KEY_AT + 8 + i, R1)
        a.ldx(4, R1, R6, f.v6_daddr + i)
        a.stx(4, FP, _KEY_AT + 24 + i, R1)
    a.label("key")
    a.mov(R5, 1)
    _inc(a, R7, OFF_DEST_TOTAL)
    a.map_lookup(dest_fd, _KEY_AT)
    a.ldx(8, R2, R7, OFF_GEN)
    a.jmp("eq", R0, 0, "insert")
    a.ldx(8, R1, R0, 0)
    a.jmp("eq", R1, reg(R2), "same")
    a.stx(8, R0, 0, R2)  # an entry of an earlier run: this run's first socket
    a.st(8, R0, 8, 1)
    a.ja("out")
    a.label("same")
    a.mov(R5, 1)
    _inc(a, R0, 8)
    a.ja("out")
    a.label("insert")
    a.stx(8, FP, _VALUE_AT, R2)
    a.st(8, FP, _VALUE_AT + 8, 1)
    a.ld_map_fd(R1, dest_fd)
    a.mov(R2, reg(FP))
    a.add(R2, _KEY_AT)
    a.mov(R3, reg(FP))
    a.add(R3, _VALUE_AT)
    a.mov(R4, sc.ANY)
    a.call(MAP_UPDATE_ELEM)
    a.jmp("eq", R0, 0, "out")
    a.mov(R5, 1)
    _inc(a, R7, OFF_DEST_LOST)
    a.ja("out")

    # a listener: give its port a slot
    a.label("listen")
    _port_slot(a)
    a.jmp("ne", R4, 0, "out")
    a.ldx(8, R5, R7, OFF_NEXT_SLOT)
    a.jmp("ge", R5, MAX_SLOTS, "no_slot")
    a.add(R5, 1)
    a.stx(8, R7, OFF_NEXT_SLOT, R5)
    a.stx(2, R1, 0, R5)
    a.and_(R5, MAX_SLOTS)
    a.lsh(R5, 1)
    a.mov(R1, reg(R7))
    a.add(R1, reg(R5))
    a.add(R1, OFF_SLOT_PORT)
    a.stx(2, R1, 0, R2)
    a.ja("out")
    a.label("no_slot")
    a.mov(R5, 1)
    _inc(a, R7, OFF_SLOTS_LOST)

    a.label("out")
    a.mov(R0, 0)
    a.exit()
    return a.assemble()


@dataclass
class Reading:
    """One run's results, as the socket snapshot wants them."""

    states: Dict[int, Counter[int]] = field(default_factory=dict)  # family -> state -> n
    queues: Dict[int, Tuple[int, int]] = field(default_factory=dict)  # family -> (rx, tx)
    connections: Counter[Tuple[int, int]] = field(default_factory=Counter)  # (port, state)
    used_bits: int = 0  # the ephemeral ports in use: bit p for port p
    destinations: List[Tuple[int, bytes, int]] = field(default_factory=list)
    # (family number, remote port (network order) + local + remote address, sockets)

    @property
    def used(self) -> int:
        """How many ephemeral ports are in use."""
        return self.used_bits.bit_count()


class TcpIterator(sc.Owned):
    """The program loaded and linked once; :meth:`read` runs it over the calling thread's
    network namespace, with offsets from ``types`` (default: the kernel's BTF, read here).
    Raises sc.BpfError or btf.BtfError when it cannot be loaded."""

    def __init__(self, types: Optional[btf.Btf] = None) -> None:
        super().__init__()
        self._gen = 0
        self._eph: Optional[FrozenSet[int]] = None
        try:
            f = fields(types or btf.load())
            self._blob = self._own(sc.map_create(sc.MAP_TYPE_ARRAY, 4, VALUE_SIZE, 1,
                                                 sc.F_MMAPABLE, "nx_tcpiter"))
            self._dest = self._own(sc.map_create(sc.MAP_TYPE_LRU_HASH, DEST_KEY.size,
                                                 DEST_VALUE.size, DEST_MAX, 0, "nx_tcpdest"))
            self._view = self._map(self._blob, VALUE_SIZE)
            prog = self._own(sc.prog_load(sc.PROG_TYPE_TRACING, program(f, self._blob, self._dest),
                                          name="nx_tcpiter", attach_type=sc.TRACE_ITER,
                                          attach_btf_id=f.attach_btf_id))
            self._link = self._own(sc.iter_link(prog))
            self._reader = sc.BatchReader(self._dest, DEST_KEY.size, DEST_VALUE.size, DEST_MAX)
        except BaseException:
            self.close()
            raise

    def _set_ephemeral(self, ports: FrozenSet[int]) -> None:
        bits = 0
        for p in ports:
            bits |= 1 << p
        self._view[OFF_EPH:OFF_EPH + 8192] = bits.to_bytes(8192, "little")
        self._eph = ports

    def _clear(self) -> None:
        """Zero what the last run wrote: counts, queues, tallies, the used ports, and the
        slots it gave out with their connection counts."""
        v = self._view
        n = int.from_bytes(v[OFF_NEXT_SLOT:OFF_NEXT_SLOT + 8], "little")
        if n:
            n = min(n, MAX_SLOTS)
            ports = v[OFF_SLOT_PORT + 2:OFF_SLOT_PORT + 2 + 2 * n].cast("H")
            for p in ports.tolist():
                v[OFF_SLOT + 2 * p:OFF_SLOT + 2 * p + 2] = b"\0\0"
            ports.release()
            v[OFF_CONN + 128:OFF_CONN + 128 * (n + 1)] = bytes(128 * n)
            v[OFF_SLOT_PORT + 2:OFF_SLOT_PORT + 2 * (n + 1)] = bytes(2 * n)
        v[OFF_COUNTS:OFF_EPH] = bytes(OFF_EPH - OFF_COUNTS)
        v[OFF_USED:OFF_USED + 8192] = bytes(8192)

    def read(self, ephemeral: Optional[FrozenSet[int]]) -> Reading:
        """Run the program over the calling thread's namespace; ``ephemeral`` the ports of the
        range (None: no port use wanted)."""
        with self._lock:
            if self._closed:
                raise Incomplete("the TCP iterator is closed")
            eph = ephemeral or frozenset()
            if eph != self._eph:
                self._set_ephemeral(eph)
            self._clear()
            self._gen += 1
            self._view[OFF_GEN:OFF_GEN + 8] = self._gen.to_bytes(8, "little")
            if not sc.run_iterator(self._link, MAX_READS):
                raise Incomplete(f"the TCP iterator did not end in {MAX_READS} reads")
            return self._results()

    def _results(self) -> Reading:
        v = self._view
        words = v[:OFF_EPH].cast("Q")
        out = Reading()
        for fi, fam in enumerate((AF_INET, AF_INET6)):
            base = OFF_COUNTS // 8 + 16 * fi
            out.states[fam] = Counter({st: n for st, n in enumerate(words[base:base + 16])
                                       if n})
            q = OFF_QUEUES // 8 + 2 * fi
            out.queues[fam] = (words[q], words[q + 1])
        next_slot, slots_lost, dest_total, dest_lost = (
            words[OFF_NEXT_SLOT // 8], words[OFF_SLOTS_LOST // 8],
            words[OFF_DEST_TOTAL // 8], words[OFF_DEST_LOST // 8])
        words.release()
        if slots_lost:
            raise Incomplete(f"more than {MAX_SLOTS} listening ports")
        if dest_lost:
            raise Incomplete(f"more than {DEST_MAX} destinations")
        n = min(next_slot, MAX_SLOTS)
        if n:
            ports = v[OFF_SLOT_PORT + 2:OFF_SLOT_PORT + 2 * (n + 1)].cast("H").tolist()
            conn = v[OFF_CONN + 128:OFF_CONN + 128 * (n + 1)].cast("Q").tolist()
            for i, port in enumerate(ports):
                row = conn[16 * i:16 * i + 16]
                for st, c in enumerate(row):
                    if c:
                        out.connections[(port, st)] += c
        used = v[OFF_USED:OFF_USED + 8192]
        out.used_bits = int.from_bytes(used, "little")
        used.release()
        if dest_total:
            count, keys, values = self._reader.read_raw()
            total = 0
            gen = self._gen
            for i, (run, sockets) in enumerate(DEST_VALUE.iter_unpack(values)):
                if run == gen:
                    fi, dport, src, dst = DEST_KEY.unpack_from(keys, i * DEST_KEY.size)
                    out.destinations.append((AF_INET6 if fi else AF_INET,
                                             struct.pack("=H", dport) + src + dst, sockets))
                    total += sockets
            if total != dest_total:
                raise Incomplete(f"{total} of {dest_total} sockets found per destination")
        return out
