"""TCP events counted in the kernel: every TCP state transition host-wide, and per service port
the retransmits, resets, failed connects, peers closing first and connections established.

Five classic tracepoints, each with a small program assembled here from the offsets its
``format`` file gives (:mod:`exporter.bpf.tracefs`):

* ``sock:inet_sock_set_state`` (TCP only): ``transitions[old*16+new] += 1``; a socket entering
  or leaving LISTEN adjusts ``seen_listen[port]``; SYN_SENT->CLOSE is a failed connect,
  ESTABLISHED->CLOSE_WAIT a peer closing first, anything->ESTABLISHED a connection.
* ``tcp:tcp_retransmit_skb`` (only successful retransmissions where the record has ``err``) and
  ``tcp:tcp_retransmit_synack`` (where the kernel has it): a retransmit.
* ``tcp:tcp_send_reset``: a reset sent. A reset sent for no socket (a segment to a port nobody
  listens on) is counted on the local port, the one that was asked for.
* ``tcp:tcp_receive_reset``: a reset received.

**Which port an event is counted under** (decided in the program, so the map stays bounded):
the local port when it is a listening port (from the scrape's socket snapshot, written by the
exporter into ``port_class``, or seen entering LISTEN since the program was loaded), side
``local``; otherwise the remote port, side ``remote``, unless the remote port is in the
ephemeral range and the local one is not (an inbound connection to a port not known to listen,
such as a pod's), then the local port; when both ends are ephemeral ports, no port at all
(side ``unknown``). So ephemeral ports never become keys.

The per-port map is a hash map of at most ``max_ports`` keys; an event whose key does not fit
is counted in ``overflow[kind]``. The kernel skips a program on a classic tracepoint when any
tracing program already runs on that CPU, and the BTF program when it already runs there
itself (a tracepoint hit from an interrupt while one runs): it counts those in the program's
``recursion_misses``, which the reader reports, so nothing is dropped silently.

**Per-CPU counters.** The transitions, the overflow and the per-port counts are per-CPU maps:
each CPU adds to its own copy with a plain add, and the reader sums the copies. Shared
counters need an atomic add, and with every CPU adding into the same few entries (the
transitions of a busy host) the cache line moves from CPU to CPU on every event. A plain add is
safe on a CPU's own copy because no program runs nested in itself on a CPU (the kernel skips
it and counts the miss, as above), and the one nesting the kernel allows, the BTF program
interrupting a classic one or the reverse, writes other counters: the BTF program only the
transitions and the established, failed-connect and peer-close slots, the classic programs
only the retransmit and reset slots. ``seen_listen`` stays shared and atomic: sockets enter
and leave LISTEN rarely. ``port_class`` is only read by the programs.

Tracepoints fire for every network namespace on the host: the counts are the host's, pods
included, and one port's series sums that port over every namespace.
"""

from __future__ import annotations

import array
import contextlib
import logging
import mmap
import operator
import os
import struct
import sys
import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional, Tuple

from exporter.bpf import btf, tracefs
from exporter.bpf import syscalls as sc
from exporter.bpf.asm import (
    FP,
    MAP_UPDATE_ELEM,
    PROBE_READ_KERNEL,
    R0,
    R1,
    R2,
    R3,
    R4,
    R6,
    R7,
    R8,
    R9,
    Asm,
    reg,
)

log = logging.getLogger(__name__)

SET_STATE = "sock:inet_sock_set_state"
RETRANSMIT = "tcp:tcp_retransmit_skb"
RETRANSMIT_SYNACK = "tcp:tcp_retransmit_synack"
SEND_RESET = "tcp:tcp_send_reset"
RECEIVE_RESET = "tcp:tcp_receive_reset"
TRACEPOINTS = (SET_STATE, RETRANSMIT, SEND_RESET, RECEIVE_RESET)
OPTIONAL_TRACEPOINTS = (RETRANSMIT_SYNACK,)

# Per-port event kinds: the index of each counter in a port's value.
RETRANSMITS, RESETS_SENT, RESETS_RECEIVED, CONNECT_FAILED, PEER_CLOSED, ESTABLISHED = range(6)
KINDS = ("retransmit", "reset_sent", "reset_received", "connect_failed", "peer_close",
         "established")
VALUE_SLOTS = 8  # u64 counters per port (6 used)
VALUE_SIZE = 8 * VALUE_SLOTS

# Key: side << 16 | port.
SIDE_LOCAL, SIDE_REMOTE, SIDE_UNKNOWN = 1, 2, 3
SIDES = {SIDE_LOCAL: "local", SIDE_REMOTE: "remote", SIDE_UNKNOWN: "unknown"}

# port_class flags, written by the exporter.
CLASS_LISTENING, CLASS_EPHEMERAL = 1, 2

# counts array: transitions at old*16+new, then one overflow counter per kind.
N_STATES = 16
OVERFLOW_BASE = N_STATES * N_STATES
COUNTS_ENTRIES = OVERFLOW_BASE + VALUE_SLOTS

TCP_ESTABLISHED, TCP_SYN_SENT, TCP_CLOSE, TCP_CLOSE_WAIT, TCP_LISTEN = 1, 2, 7, 8, 10
IPPROTO_TCP = 6

DEFAULT_MAX_PORTS = 2048


class LoadError(RuntimeError):
    """The programs cannot be loaded or attached; the message is one line naming what is
    missing (a capability, tracefs, a tracepoint, a kernel feature)."""


@dataclass(frozen=True)
class Maps:
    counts: int
    port_class: int
    seen_listen: int
    ports: int
    max_ports: int


@dataclass(frozen=True)
class PortSource:
    """Where a record holds a port: ``offset`` of a 16-bit field, in host order (``sport``)
    or network order (a sockaddr's ``sin_port``)."""

    offset: int
    network_order: bool


def _port(fmt: tracefs.Format, which: str) -> PortSource:
    """The local (``s``) or remote (``d``) port of a record: ``sport``/``dport`` in host order
    where the record has them, else the port of the ``saddr``/``daddr`` sockaddr (struct
    sockaddr_in and sockaddr_in6 both keep the port, in network order, at byte 2), as
    tcp_send_reset has them since Linux 6.10."""
    name = f"{which}port"
    if fmt.has(name):
        f = fmt.field(name)
        if f.size != 2:
            raise tracefs.TracefsError(f"{fmt.system}:{fmt.name}: field {name} has {f.size} "
                                       "bytes, not 2")
        return PortSource(f.offset, False)
    addr = fmt.field(f"{which}addr")
    if addr.size < 16:
        raise tracefs.TracefsError(f"{fmt.system}:{fmt.name}: no {name} and {which}addr is "
                                   f"{addr.size} bytes, not a sockaddr")
    return PortSource(addr.offset + 2, True)


def _aligned(fmt: tracefs.Format, off: int, size: int) -> int:
    if off % size:
        raise tracefs.TracefsError(f"{fmt.system}:{fmt.name}: field at offset {off} is not "
                                   f"aligned to its {size} bytes")
    return off


def _load_port(a: Asm, dst: int, ctx: int, fmt: tracefs.Format, src: PortSource) -> None:
    a.ldx(2, dst, ctx, _aligned(fmt, src.offset, 2))
    if src.network_order:
        a.to_be(dst, 16)


def _load_int(a: Asm, dst: int, ctx: int, fmt: tracefs.Format, name: str) -> None:
    f = fmt.field(name)
    if f.size not in (1, 2, 4, 8):
        raise tracefs.TracefsError(f"{fmt.system}:{fmt.name}: field {name} has {f.size} bytes")
    a.ldx(f.size, dst, ctx, _aligned(fmt, f.offset, f.size))


def _inc(a: Asm, ptr: int, off: int) -> None:
    """``*(u64 *)(ptr + off) += 1`` in this CPU's copy of a per-CPU map (not atomic: no other
    program runs on this CPU meanwhile, and no other CPU writes this copy)."""
    a.ldx(8, R1, ptr, off)
    a.add(R1, 1)
    a.stx(8, ptr, off, R1)


def _count_port_event(a: Asm, m: Maps, kind: int, local_first: str = "") -> None:
    """Count one event of ``kind`` for the connection whose local port is in r6 and remote
    port in r7. ``local_first``: a label the caller jumps to to force the local port."""
    k = f"k{kind}_{len(a)}"
    # r9 = port_class[local]
    a.stx(4, FP, -4, R6)
    a.map_lookup(m.port_class, -4)
    a.mov(R9, 0)
    a.jmp("eq", R0, 0, f"{k}_seen")
    a.ldx(8, R9, R0, 0)
    a.jmp("set", R9, CLASS_LISTENING, f"{k}_local")
    a.label(f"{k}_seen")
    # seen_listen[local] > 0: a listener that appeared since the last scrape
    a.map_lookup(m.seen_listen, -4)
    a.jmp("eq", R0, 0, f"{k}_remoteclass")
    a.ldx(8, R1, R0, 0)
    a.jmp("sgt", R1, 0, f"{k}_local")
    a.label(f"{k}_remoteclass")
    a.stx(4, FP, -4, R7)
    a.map_lookup(m.port_class, -4)
    a.jmp("eq", R0, 0, f"{k}_remote")
    a.ldx(8, R1, R0, 0)
    a.jmp("set", R1, CLASS_EPHEMERAL, f"{k}_remote_eph")
    a.label(f"{k}_remote")
    a.mov(R1, reg(R7))
    a.or_(R1, SIDE_REMOTE << 16)
    a.ja(f"{k}_key")
    a.label(f"{k}_remote_eph")
    a.jmp("set", R9, CLASS_EPHEMERAL, f"{k}_unknown")
    if local_first:
        a.label(local_first)
    a.label(f"{k}_local")
    a.mov(R1, reg(R6))
    a.or_(R1, SIDE_LOCAL << 16)
    a.ja(f"{k}_key")
    a.label(f"{k}_unknown")
    a.mov(R1, SIDE_UNKNOWN << 16)
    a.label(f"{k}_key")
    a.stx(4, FP, -4, R1)
    # r0 = ports[key], inserted as zeros if absent
    a.map_lookup(m.ports, -4)
    a.jmp("ne", R0, 0, f"{k}_add")
    a.mov(R1, 0)
    for i in range(VALUE_SLOTS):
        a.stx(8, FP, -8 - VALUE_SIZE + 8 * i, R1)
    a.ld_map_fd(R1, m.ports)
    a.mov(R2, reg(FP))
    a.add(R2, -4)
    a.mov(R3, reg(FP))
    a.add(R3, -8 - VALUE_SIZE)
    a.mov(R4, sc.NOEXIST)
    a.call(MAP_UPDATE_ELEM)
    a.map_lookup(m.ports, -4)
    a.jmp("ne", R0, 0, f"{k}_add")
    # the map is full: count the overflow
    a.st(4, FP, -4, OVERFLOW_BASE + kind)
    a.map_lookup(m.counts, -4)
    a.jmp("eq", R0, 0, "out")
    _inc(a, R0, 0)
    a.ja("out")
    a.label(f"{k}_add")
    _inc(a, R0, 8 * kind)
    a.ja("out")


def _only_ports(a: Asm, only: Optional[Tuple[int, int]]) -> None:
    """Skip events neither of whose ports (r6 local, r7 remote) is in ``only`` (lo, hi): for
    tests that must not see the rest of the host's traffic."""
    if only is None:
        return
    lo, hi = only
    a.jmp("lt", R6, lo, "try_remote")
    a.jmp("le", R6, hi, "wanted")
    a.label("try_remote")
    a.jmp("lt", R7, lo, "out")
    a.jmp("gt", R7, hi, "out")
    a.label("wanted")


def _record_ports(a: Asm, record: int, fmt: tracefs.Format,
                  only: Optional[Tuple[int, int]]) -> None:
    """Load the local port into r6 and the remote one into r7 from the classic tracepoint's
    record in ``record`` (which may be r6: the record is not needed after this), then skip
    the events :func:`_only_ports` leaves out."""
    _load_port(a, R7, record, fmt, _port(fmt, "d"))
    _load_port(a, R6, record, fmt, _port(fmt, "s"))
    _only_ports(a, only)


def _epilogue(a: Asm) -> None:
    a.label("out")
    a.mov(R0, 0)
    a.exit()


def set_state_program(fmt: tracefs.Format, m: Maps,
                      only: Optional[Tuple[int, int]] = None) -> bytes:
    """The program for the classic tracepoint, whose record holds the ports (used where the
    kernel has no BTF or refuses the program of :func:`set_state_btf_program`)."""
    a = Asm()
    a.mov(R6, reg(R1))  # the record
    _load_int(a, R2, R6, fmt, "protocol")
    a.jmp("ne", R2, IPPROTO_TCP, "out")
    _load_int(a, R8, R6, fmt, "oldstate")
    _load_int(a, R9, R6, fmt, "newstate")
    a.jmp("gt", R8, N_STATES - 1, "out")
    a.jmp("gt", R9, N_STATES - 1, "out")
    _record_ports(a, R6, fmt, only)
    _set_state_counts(a, m, None)
    return a.assemble()


@dataclass(frozen=True)
class SockFields:
    """Where the BTF program finds what the classic record holds: the socket's protocol, and
    its local and remote ports (both in network order, where the record's ``sport`` and
    ``dport`` come from), and the tracepoint it attaches to, from the kernel's BTF."""

    protocol: btf.Member  # struct sock, sk_protocol
    sport: btf.Member  # struct inet_sock, inet_sport
    dport: btf.Member  # struct sock, __sk_common.skc_dport (inet_dport)
    attach_btf_id: int  # typedef btf_trace_inet_sock_set_state


def sock_fields(types: btf.Btf) -> SockFields:
    f = SockFields(types.member("sock", "sk_protocol"), types.member("inet_sock", "inet_sport"),
                   types.member("sock", "__sk_common", "skc_dport"),
                   types.typedef("btf_trace_" + SET_STATE.split(":")[1]))
    for name, m in (("sk_protocol", f.protocol), ("inet_sport", f.sport),
                    ("skc_dport", f.dport)):
        if m.size not in (1, 2) or (name != "sk_protocol" and m.size != 2):
            raise btf.BtfError(f"BTF: {name} has {m.size} bytes")
    return f


def sock_ports(a: Asm, fields: SockFields) -> None:
    """r6 = the local port and r7 = the remote port, in host order, of the socket in r7, where
    the classic record's ``sport`` and ``dport`` come from. The local port lies in struct
    inet_sock, past the struct sock the argument is typed as: it is read with
    bpf_probe_read_kernel (through fp-8; to ``out`` if that fails)."""
    a.mov(R1, reg(FP))
    a.add(R1, -8)
    a.mov(R2, fields.sport.size)
    a.mov(R3, reg(R7))
    a.add(R3, fields.sport.offset)
    a.call(PROBE_READ_KERNEL)
    a.jmp("ne", R0, 0, "out")
    a.ldx(2, R6, FP, -8)
    a.to_be(R6, 16)
    a.ldx(2, R7, R7, fields.dport.offset)
    a.to_be(R7, 16)


def set_state_btf_program(fields: SockFields, m: Maps,
                          only: Optional[Tuple[int, int]] = None) -> bytes:
    """The program for ``inet_sock_set_state(sk, oldstate, newstate)`` as a raw tracepoint
    whose arguments the kernel's BTF types (``tp_btf``).

    The classic tracepoint fills its record (addresses, ports, family, protocol) for every
    transition before any program runs, and that was most of what the collector cost: a
    loopback connection makes ten transitions. Here the arguments come as they are and the
    program loads the socket's protocol, and its remote port where it needs it, straight from
    the socket (the verifier checks each load against the BTF type). The local port lies in
    struct inet_sock, past the struct sock the argument is typed as, so it is read with
    bpf_probe_read_kernel, and only for the transitions that need it (entering or leaving
    LISTEN, and the per-port events). Same counts as the classic program."""
    a = Asm()
    a.mov(R6, reg(R1))  # u64 args[]: sk, oldstate, newstate
    a.ldx(8, R8, R6, 8)
    a.ldx(8, R9, R6, 16)
    a.jmp("gt", R8, N_STATES - 1, "out")
    a.jmp("gt", R9, N_STATES - 1, "out")
    a.ldx(8, R7, R6, 0)  # the socket, kept in r7 until the ports are read
    a.ldx(fields.protocol.size, R2, R7, fields.protocol.offset)
    a.jmp("ne", R2, IPPROTO_TCP, "out")

    def load_ports(a: Asm) -> None:
        sock_ports(a, fields)

    if only is not None:
        load_ports(a)
        _only_ports(a, only)
        _set_state_counts(a, m, None)
    else:
        _set_state_counts(a, m, load_ports)
    return a.assemble()


def _transition_paths(a: Asm, p: str, listen: str, established: str, failed: str,
                      peer_closed: str) -> None:
    """Jump, by the old (r8) and new (r9) state, to what the transition counts besides itself:
    LISTEN entered or left by the local port (a connection's child socket is cloned from its
    listener: LISTEN->SYN_RECV is not a listener closing, only LISTEN->CLOSE is), a
    connection established, a failed connect, a peer closing first; or to ``out``."""
    a.jmp("eq", R9, TCP_LISTEN, listen)
    a.jmp("ne", R8, TCP_LISTEN, f"{p}_events")
    a.jmp("eq", R9, TCP_CLOSE, listen)
    a.label(f"{p}_events")
    a.jmp("eq", R9, TCP_ESTABLISHED, established)
    a.jmp("ne", R8, TCP_SYN_SENT, f"{p}_not_failed")
    a.jmp("eq", R9, TCP_CLOSE, failed)
    a.label(f"{p}_not_failed")
    a.jmp("ne", R8, TCP_ESTABLISHED, "out")
    a.jmp("eq", R9, TCP_CLOSE_WAIT, peer_closed)
    a.ja("out")


def _set_state_counts(a: Asm, m: Maps, load_ports: Optional[Callable[[Asm], None]]) -> None:
    """What a transition counts, old state in r8, new in r9; local port in r6 and remote in r7,
    or, given ``load_ports``, loaded by it only for the transitions that need them."""
    # transitions[old*16+new] += 1
    a.mov(R1, reg(R8))
    a.lsh(R1, 4)
    a.or_(R1, reg(R9))
    a.stx(4, FP, -4, R1)
    a.map_lookup(m.counts, -4)
    a.jmp("eq", R0, 0, "more")
    _inc(a, R0, 0)
    a.label("more")
    if load_ports is not None:
        _transition_paths(a, "need", *["ports"] * 4)
        a.label("ports")
        load_ports(a)
    _transition_paths(a, "go", "listen_delta", "established", "failed", "peer_closed")
    a.label("listen_delta")
    a.stx(4, FP, -4, R6)
    a.map_lookup(m.seen_listen, -4)
    a.jmp("eq", R0, 0, "out")
    a.mov(R1, 1)
    a.jmp("eq", R9, TCP_LISTEN, "listen_add")
    a.mov(R1, -1)
    a.label("listen_add")
    a.atomic_add(8, R0, 0, R1)  # shared by the CPUs: sockets enter and leave LISTEN rarely
    a.ja("out")
    a.label("established")
    _count_port_event(a, m, ESTABLISHED)
    a.label("failed")
    _count_port_event(a, m, CONNECT_FAILED)
    a.label("peer_closed")
    _count_port_event(a, m, PEER_CLOSED)
    _epilogue(a)


def retransmit_program(fmt: tracefs.Format, m: Maps,
                       only: Optional[Tuple[int, int]] = None) -> bytes:
    a = Asm()
    if fmt.has("err"):  # since Linux 6.13 the event fires for failed retransmissions too
        _load_int(a, R2, R1, fmt, "err")
        a.jmp("ne", R2, 0, "out")
    _record_ports(a, R1, fmt, only)
    _count_port_event(a, m, RETRANSMITS)
    _epilogue(a)
    return a.assemble()


def send_reset_program(fmt: tracefs.Format, m: Maps,
                       only: Optional[Tuple[int, int]] = None) -> bytes:
    a = Asm()
    _load_int(a, R8, R1, fmt, "skaddr")
    _record_ports(a, R1, fmt, only)
    # No socket: a segment to a port nobody listens on (or a connection long gone); the local
    # port is the one asked for.
    a.jmp("eq", R8, 0, "no_socket")
    _count_port_event(a, m, RESETS_SENT, local_first="no_socket")
    _epilogue(a)
    return a.assemble()


def receive_reset_program(fmt: tracefs.Format, m: Maps,
                          only: Optional[Tuple[int, int]] = None) -> bytes:
    a = Asm()
    _record_ports(a, R1, fmt, only)
    _count_port_event(a, m, RESETS_RECEIVED)
    _epilogue(a)
    return a.assemble()


PROGRAMS = {
    SET_STATE: set_state_program,
    RETRANSMIT: retransmit_program,
    RETRANSMIT_SYNACK: retransmit_program,
    SEND_RESET: send_reset_program,
    RECEIVE_RESET: receive_reset_program,
}


@dataclass
class Reading:
    """One read of the maps: cumulative since the programs were loaded."""

    transitions: Dict[Tuple[int, int], int]
    # (side, port) -> counts by kind; read() gives them in key order
    ports: Dict[Tuple[int, int], Tuple[int, ...]]
    overflow: Tuple[int, ...]  # by kind
    missed: int  # events skipped by the kernel (recursion_misses of the programs)
    map_entries: int = 0
    tracepoints: Tuple[str, ...] = field(default_factory=tuple)


def _sum_cpus(values: bytes, n: int, slots: int, used: int, cpus: int) -> List[Tuple[int, ...]]:
    """Sum a per-CPU map's values over the CPUs: ``values`` holds ``n`` records of ``cpus``
    copies of ``slots`` u64 counters; the result, one tuple of the first ``used`` sums per
    record. Column by column, so the loops run in C: a thousand ports on many CPUs stay within
    the scrape's budget."""
    if n == 0:
        return []
    flat = memoryview(values).cast("B").cast("Q")
    step = slots * cpus
    columns: List[Iterable[int]] = []
    for slot in range(used):
        col: Iterable[int] = flat[slot::step]
        for cpu in range(1, cpus):
            col = list(map(operator.add, col, flat[cpu * slots + slot::step]))
        columns.append(col)
    return list(zip(*columns))


def _in_key_order(keys: bytes, values: List[Tuple[int, ...]]
                  ) -> Dict[Tuple[int, int], Tuple[int, ...]]:
    """``(side, port) -> values`` for the per-port map's packed keys (``side << 16 | port``,
    u32 in host order) and their values, in key order (by side, then port), the order of the
    exposition. Sorted as the packed integers (a sort of pairs costs twice as much) and split
    into side and port as 16-bit halves, with no Python loop: a thousand ports make two
    thousand keys at every scrape."""
    packed = memoryview(keys).cast("I").tolist()
    by_key = dict(zip(packed, values))
    packed.sort()
    halves = memoryview(array.array("I", packed)).cast("B").cast("H")
    low, high = halves[0::2].tolist(), halves[1::2].tolist()
    side, port = (high, low) if sys.byteorder == "little" else (low, high)
    return dict(zip(zip(side, port), map(by_key.__getitem__, packed)))


def _explain(e: sc.BpfError, what: str) -> LoadError:
    if e.errno in (1, 13):  # EPERM, EACCES
        if e.log:
            first = next((ln for ln in reversed(e.log.splitlines()) if ln.strip()), "")
            return LoadError(f"the kernel refused the BPF program for {what}: {first}")
        return LoadError(f"{what}: {e.strerror} (the exporter needs CAP_BPF and CAP_PERFMON, "
                         "or CAP_SYS_ADMIN; a lockdown or kernel.unprivileged_bpf_disabled "
                         "refuses it too)")
    if e.errno == 7:  # E2BIG from PERF_EVENT_IOC_SET_BPF
        return LoadError(f"{what}: the tracepoint has 64 BPF programs attached already, the "
                         "kernel's limit (other exporters or tracers on this host)")
    if e.log:
        first = next((ln for ln in reversed(e.log.splitlines()) if ln.strip()), "")
        return LoadError(f"the kernel refused the BPF program for {what}: {e.strerror}: {first}")
    return LoadError(f"{what}: {e.strerror}")


# (listening ports, ephemeral ports): what :meth:`TcpEvents.set_ports` is told
Ports = Tuple[Iterable[int], Iterable[int]]


class TcpEvents:
    """The loaded maps and programs, attached; :meth:`read` gives the counts, :meth:`close`
    (or the process's exit) unloads everything. ``ports`` are written before the programs
    attach: until the programs know the ephemeral range, an event's ephemeral port could become
    its key."""

    def __init__(self, max_ports: int = DEFAULT_MAX_PORTS, tracefs_root: Optional[str] = None,
                 mount_tracefs: bool = True, cpu: Optional[int] = None,
                 only_ports: Optional[Tuple[int, int]] = None,
                 btf_path: Optional[str] = btf.VMLINUX, ports: Optional[Ports] = None) -> None:
        self.max_ports = max_ports
        # The kernel's BTF, for the program on inet_sock_set_state; None: the classic one.
        self.btf_path = btf_path
        # How inet_sock_set_state is attached: "btf" (a raw tracepoint typed by BTF) or
        # "classic" (no BTF, or a kernel that refuses that program; the reason is logged).
        self.set_state_mode = ""
        # Count only events with a port in this range (tests on a busy host); None: all.
        self.only_ports = only_ports
        self._fds: List[int] = []
        self._prog_fds: List[int] = []
        self._lock = threading.Lock()
        self._class_mm: Optional[mmap.mmap] = None
        self.cpus = sc.possible_cpus()
        self._listening: FrozenSet[int] = frozenset()
        self._ephemeral: FrozenSet[int] = frozenset()
        try:
            self._load(tracefs_root, mount_tracefs, cpu, initial=ports)
        except BaseException:
            self.close()
            raise

    def _load(self, root: Optional[str], mount: bool, cpu: Optional[int],
              initial: Optional[Ports]) -> None:
        # Everything that is missing, in one line: capabilities first, then tracefs.
        problems = []
        lacking = sc.missing_caps(sc.effective_caps())
        if lacking:
            problems.append(f"needs {lacking} (or CAP_SYS_ADMIN) to load BPF programs")
        formats: Dict[str, tracefs.Format] = {}
        try:
            root = root or tracefs.find(mount_if_missing=mount and not lacking)
            formats = tracefs.read_formats(root, TRACEPOINTS, OPTIONAL_TRACEPOINTS)
        except tracefs.TracefsError as e:
            problems.append(str(e))
        if problems:
            raise LoadError("; ".join(problems))
        try:
            counts = self._own(sc.map_create(sc.MAP_TYPE_PERCPU_ARRAY, 4, 8, COUNTS_ENTRIES,
                                             0, "nse_counts"))
            port_class = self._own(sc.map_create(sc.MAP_TYPE_ARRAY, 4, 8, 65536,
                                                 sc.F_MMAPABLE, "nse_port_class"))
            seen = self._own(sc.map_create(sc.MAP_TYPE_ARRAY, 4, 8, 65536, 0, "nse_listen"))
            ports = self._own(sc.map_create(sc.MAP_TYPE_PERCPU_HASH, 4, VALUE_SIZE,
                                            self.max_ports, 0, "nse_ports"))
        except sc.BpfError as e:
            raise _explain(e, "creating BPF maps") from None
        self.maps = Maps(counts, port_class, seen, ports, self.max_ports)
        self._class_mm = sc.mmap_array(port_class, 8, 65536, writable=True)
        if initial is not None:
            self.set_ports(*initial)
        self._counts_reader = sc.BatchReader(counts, 4, 8, COUNTS_ENTRIES, self.cpus)
        self._reader = sc.BatchReader(ports, 4, VALUE_SIZE, self.max_ports, self.cpus)
        progs = []
        typed = self._load_btf_set_state() if SET_STATE in formats else None
        for tp, fmt in formats.items():
            if tp == SET_STATE and typed is not None:
                continue
            try:
                insns = PROGRAMS[tp](fmt, self.maps, self.only_ports)
            except tracefs.TracefsError as e:
                raise LoadError(str(e)) from None
            try:
                progs.append((tp, fmt, self._own(sc.prog_load(
                    sc.PROG_TYPE_TRACEPOINT, insns, "GPL", "nse_" + fmt.name[:11]))))
            except sc.BpfError as e:
                raise _explain(e, f"loading the program for {tp}") from None
        if cpu is None:
            cpu = min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
        for tp, fmt, prog in progs:
            try:
                ev = self._own(sc.perf_event_open_tracepoint(fmt.id, cpu))
                sc.attach(ev, prog)
            except sc.BpfError as e:
                raise _explain(e, f"attaching to tracepoint {tp}") from None
            self._prog_fds.append(prog)
        if typed is not None:
            try:
                self._own(sc.raw_tracepoint_open(typed))
            except sc.BpfError as e:
                raise _explain(e, f"attaching to raw tracepoint {SET_STATE}") from None
            self._prog_fds.insert(0, typed)
        self.set_state_mode = "" if SET_STATE not in formats else \
            "btf" if typed is not None else "classic"
        self.tracepoints = ((SET_STATE,) if typed is not None else ()) + \
            tuple(tp for tp, _, _ in progs)

    def _load_btf_set_state(self) -> Optional[int]:
        """The BTF program for inet_sock_set_state, loaded, or None where the kernel has no BTF
        or refuses the program (the classic tracepoint is used then)."""
        if self.btf_path is None:
            return None
        try:
            fields = sock_fields(btf.load(self.btf_path))
        except btf.BtfError as e:
            log.info("tcpevents: %s; sock:inet_sock_set_state through its classic tracepoint "
                     "(costs more per transition)", e)
            return None
        try:
            return self._own(sc.prog_load(
                sc.PROG_TYPE_TRACING, set_state_btf_program(fields, self.maps, self.only_ports),
                "GPL", "nse_set_state", sc.TRACE_RAW_TP, fields.attach_btf_id))
        except sc.BpfError as e:
            log.info("tcpevents: the BTF program was refused (%s); sock:inet_sock_set_state "
                     "through its classic tracepoint (costs more per transition)", e)
            return None

    def _own(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    @property
    def prog_ids(self) -> List[int]:
        return [int(sc.fdinfo(fd).get("prog_id", "0")) for fd in self._prog_fds]

    def set_ports(self, listening: Iterable[int], ephemeral: Iterable[int]) -> None:
        """Tell the programs which local ports listen and which form the ephemeral range (only
        the ports that changed are written)."""
        listening, ephemeral = frozenset(listening), frozenset(ephemeral)
        with self._lock:
            mm = self._class_mm
            if mm is None:
                return
            changed = (listening ^ self._listening) | (ephemeral ^ self._ephemeral)
            for p in changed:
                if 0 <= p < 65536:
                    v = (CLASS_LISTENING if p in listening else 0) | \
                        (CLASS_EPHEMERAL if p in ephemeral else 0)
                    struct.pack_into("=Q", mm, p * 8, v)
            self._listening, self._ephemeral = listening, ephemeral

    def read(self) -> Reading:
        with self._lock:
            if self._class_mm is None:
                raise RuntimeError("TCP event maps are closed")
            n_counts, _, counts_raw = self._counts_reader.read_raw()
            n_ports, keys, values = self._reader.read_raw()
            missed = 0
            for fd in self._prog_fds:
                missed += int(sc.fdinfo(fd).get("recursion_misses", "0") or 0)
        # An array's batch read gives every index, in order.
        counts = [c[0] for c in _sum_cpus(counts_raw, n_counts, 1, 1, self.cpus)]
        transitions = {(i >> 4, i & 15): v for i, v in enumerate(counts[:OVERFLOW_BASE]) if v}
        sums = _sum_cpus(values, n_ports, VALUE_SLOTS, len(KINDS), self.cpus)
        ports = _in_key_order(keys, sums)
        return Reading(transitions, ports, tuple(counts[OVERFLOW_BASE:OVERFLOW_BASE + len(KINDS)]),
                       missed, n_ports, self.tracepoints)

    def __del__(self) -> None:
        # A collector dropped without close() (a test's Exporter) must not keep its programs
        # attached: a tracepoint takes 64 programs at most, host-wide.
        with contextlib.suppress(Exception):  # nothing to report to at interpreter exit
            self.close()

    def close(self) -> None:
        with self._lock:
            if self._class_mm is not None:
                self._class_mm.close()
            self._class_mm = None
            for fd in reversed(self._fds):
                sc.close(fd)
            self._fds, self._prog_fds = [], []
