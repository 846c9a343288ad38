"""TCP sockets bound but neither listening nor connecting, found through the open files of
every process: a program run by the kernel's task-file iterator (``bpf_iter_task_file``,
Linux 5.8) for every descriptor of every task the exporter's pid namespace holds, which keeps
the TCP sockets in CLOSE state with a local port (inet_diag's bound-inactive state, Linux 6.5)
of one network namespace, each socket once however many descriptors hold it.

sock_diag finds these sockets in the bind hash, but asking it walks the established hash once
more as well (the TCP socket iterator has walked it already; :mod:`exporter.bpf.tcpiter`):
about 1.4 ms for the 262,144 buckets of a small machine's hash even when the namespace is
empty, and 11 ms at 100,000 sockets. This walk costs what the host's open descriptors cost
instead, well under a tenth of a microsecond each.

It is not the same set in three cases, and the snapshot then asks sock_diag
(:mod:`exporter.sockets.snapshot`):

* a pid namespace other than the initial one: its tasks are not all the tasks that may hold
  a socket of the network namespace;
* more open files on the host than the dump would cost (:func:`worth_it`);
* a run whose sockets did not fit the map (:class:`~exporter.bpf.tcpiter.Incomplete`).

A socket no descriptor holds (in flight in an SCM_RIGHTS message, an io_uring fixed file, a
kernel socket) is not found; the bind hash has it.

Each socket is counted once per run: its inode number is the key of a hash map whose value
carries the run's number, its family and its port; the exporter reads the entries of the run
and checks them against the number the program counted.
"""

from __future__ import annotations

import os
import socket
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import List, Optional

from exporter.bpf import btf
from exporter.bpf import syscalls as sc
from exporter.bpf.asm import FP, MAP_UPDATE_ELEM, R0, R1, R2, R3, R4, R6, R7, R8, Asm, reg
from exporter.bpf.tcpiter import MAX_READS, Incomplete
from exporter.procfs import sysctl
from exporter.procfs.errors import ParseError
from exporter.vocabulary.names import TCP_CLOSE

SOCK_FROM_FILE = 162  # enum bpf_func_id
AF_INET, AF_INET6 = int(socket.AF_INET), int(socket.AF_INET6)
IPPROTO_TCP, SOCK_STREAM = 6, int(socket.SOCK_STREAM)
PROC_PID_INIT_INO = 0xEFFFFFFC  # the initial pid namespace's inode number

BOUND_MAX = 4096  # sockets a run may find: the map holds them and as many of earlier runs

# The array map's one value, byte offsets.
OFF_GEN = 0  # u64: the run's number, written by the exporter
OFF_NETNS = 8  # u32: the network namespace's inode number, written by the exporter
OFF_FOUND = 16  # u64: sockets given this run's number
OFF_LOST = 24  # u64: sockets the map had no room for
VALUE_SIZE = 32

# An entry: key the socket's inode number; value the run, the family, the local port.
KEY = struct.Struct("=Q")
VALUE = struct.Struct("=QHH4x")
_KEY_AT, _VALUE_AT = -8, -32


@dataclass(frozen=True)
class Fields:
    """Where the program finds what it reads, from the kernel's BTF."""

    ctx_file: int  # in struct bpf_iter__task_file
    f_inode: int  # in struct file
    i_ino: int  # in struct inode
    sk: int  # in struct socket
    sk_protocol: int  # in struct sock
    sk_type: int
    family: int  # in struct sock_common
    state: int
    num: int
    net: int  # sock_common.skc_net.net
    ns_inum: int  # net.ns.inum
    attach_btf_id: int  # function bpf_iter_task_file


def fields(types: btf.Btf) -> Fields:
    def sized(struct_name: str, *path: str, size: int) -> int:
        m = types.member(struct_name, *path)
        if m.size != size:
            raise btf.BtfError(f"BTF: {struct_name}.{'.'.join(path)} has {m.size} bytes, "
                               f"not {size}")
        return m.offset

    return Fields(types.offset("bpf_iter__task_file", "file"), types.offset("file", "f_inode"),
                  sized("inode", "i_ino", size=8), types.offset("socket", "sk"),
                  sized("sock", "sk_protocol", size=2), sized("sock", "sk_type", size=2),
                  sized("sock_common", "skc_family", size=2),
                  sized("sock_common", "skc_state", size=1),
                  sized("sock_common", "skc_num", size=2),
                  types.offset("sock_common", "skc_net", "net"),
                  sized("net", "ns", "inum", size=4), types.func("bpf_iter_task_file"))


def program(f: Fields, blob_fd: int, seen_fd: int) -> bytes:
    """The program: r6 the file, then the socket; r7 the inode number; r8 the array map's
    value. Every pointer it follows is typed by BTF, so the kernel checks each load."""
    a = Asm()
    a.ldx(8, R6, R1, f.ctx_file)
    a.jmp("eq", R6, 0, "out")
    a.ldx(8, R7, R6, f.f_inode)
    a.jmp("eq", R7, 0, "out")
    a.ldx(8, R7, R7, f.i_ino)
    a.mov(R1, reg(R6))
    a.call(SOCK_FROM_FILE)
    a.jmp("eq", R0, 0, "out")
    a.ldx(8, R6, R0, f.sk)
    a.jmp("eq", R6, 0, "out")
    a.ldx(1, R1, R6, f.state)
    a.jmp("ne", R1, TCP_CLOSE, "out")
    a.ldx(2, R1, R6, f.num)
    a.jmp("eq", R1, 0, "out")
    # sk_protocol and sk_type: a raw socket of protocol 6 is closed with its protocol as
    # "port", an MPTCP socket's file is the MPTCP socket's
    a.ldx(2, R1, R6, f.sk_protocol)
    a.jmp("ne", R1, IPPROTO_TCP, "out")
    a.ldx(2, R1, R6, f.sk_type)
    a.jmp("ne", R1, SOCK_STREAM, "out")
    a.ldx(2, R1, R6, f.family)
    a.jmp("eq", R1, AF_INET, "family")
    a.jmp("ne", R1, AF_INET6, "out")
    a.label("family")
    a.st(4, FP, -4, 0)
    a.map_lookup(blob_fd, -4)
    a.jmp("eq", R0, 0, "out")
    a.mov(R8, reg(R0))
    a.ldx(8, R1, R6, f.net)
    a.jmp("eq", R1, 0, "out")
    a.ldx(4, R1, R1, f.ns_inum)
    a.ldx(4, R2, R8, OFF_NETNS)
    a.jmp("ne", R1, reg(R2), "out")
    # seen[inode]: this run's already, or given this run's number
    a.stx(8, FP, _KEY_AT, R7)
    a.map_lookup(seen_fd, _KEY_AT)
    a.ldx(8, R2, R8, OFF_GEN)
    a.jmp("eq", R0, 0, "insert")
    a.ldx(8, R1, R0, 0)
    a.jmp("eq", R1, reg(R2), "out")
    a.stx(8, R0, 0, R2)
    a.ldx(2, R1, R6, f.family)
    a.stx(2, R0, 8, R1)
    a.ldx(2, R1, R6, f.num)
    a.stx(2, R0, 10, R1)
    a.ja("found")
    a.label("insert")
    a.stx(8, FP, _VALUE_AT, R2)
    a.st(8, FP, _VALUE_AT + 8, 0)
    a.ldx(2, R1, R6, f.family)
    a.stx(2, FP, _VALUE_AT + 8, R1)
    a.ldx(2, R1, R6, f.num)
    a.stx(2, FP, _VALUE_AT + 10, R1)
    a.ld_map_fd(R1, seen_fd)
    a.mov(R2, reg(FP))
    a.add(R2, _KEY_AT)
    a.mov(R3, reg(FP))
    a.add(R3, _VALUE_AT)
    a.mov(R4, sc.ANY)
    a.call(MAP_UPDATE_ELEM)
    a.jmp("eq", R0, 0, "found")
    a.ldx(8, R1, R8, OFF_LOST)
    a.add(R1, 1)
    a.stx(8, R8, OFF_LOST, R1)
    a.ja("out")
    a.label("found")
    a.ldx(8, R1, R8, OFF_FOUND)
    a.add(R1, 1)
    a.stx(8, R8, OFF_FOUND, R1)
    a.label("out")
    a.mov(R0, 0)
    a.exit()
    return a.assemble()


@dataclass
class Bound:
    """One run's sockets: how many per family, and the local port of each."""

    counts: Counter[int] = field(default_factory=Counter)  # family -> sockets
    ports: List[int] = field(default_factory=list)


def initial_pid_namespace(path: str = "/proc/self/ns/pid") -> bool:
    """Whether the exporter sees every task of the host (and so every descriptor)."""
    try:
        return os.stat(path).st_ino == PROC_PID_INIT_INO
    except OSError:
        return False


def worth_it(procfs: str, tcp_sockets: int) -> bool:
    """Whether walking the host's open descriptors costs less than the sock_diag dump that
    finds the same sockets: that dump walks the established hash (every bucket, about 5 ns
    each, and every socket, about 100 ns at 100,000), the descriptors cost about 70 ns each.
    Both from ``procfs``'s sysctls: fs.file-nr (open files, host-wide) and
    net.ipv4.tcp_ehash_entries (Linux 6.1; negative where the namespace shares the host's)."""
    try:
        files = sysctl.read_ints(procfs, "fs/file-nr")
        buckets = sysctl.read_ints(procfs, "net/ipv4/tcp_ehash_entries")
    except (ParseError, OSError):
        return False
    if not files or not buckets:
        return False  # absent: the dump, which always works
    return files[0] * 70 < abs(buckets[0]) * 5 + tcp_sockets * 100


class BoundScan(sc.Owned):
    """The program loaded and linked once, with offsets from ``types`` (default: the kernel's
    BTF, read here); :meth:`read` runs it. Raises sc.BpfError or btf.BtfError when it cannot
    be loaded."""

    def __init__(self, types: Optional[btf.Btf] = None) -> None:
        super().__init__()
        self._gen = 0
        try:
            f = fields(types or btf.load())
            self._blob = self._own(sc.map_create(sc.MAP_TYPE_ARRAY, 4, VALUE_SIZE, 1,
                                                 sc.F_MMAPABLE, "nx_tcpbound"))
            self._seen = self._own(sc.map_create(sc.MAP_TYPE_LRU_HASH, KEY.size, VALUE.size,
                                                 2 * BOUND_MAX, 0, "nx_tcpseen"))
            self._view = self._map(self._blob, VALUE_SIZE)
            prog = self._own(sc.prog_load(sc.PROG_TYPE_TRACING, program(f, self._blob, self._seen),
                                          name="nx_tcpbound", attach_type=sc.TRACE_ITER,
                                          attach_btf_id=f.attach_btf_id))
            self._link = self._own(sc.iter_link(prog))
            self._reader = sc.BatchReader(self._seen, KEY.size, VALUE.size, 2 * BOUND_MAX)
        except BaseException:
            self.close()
            raise

    def read(self, netns: Optional[int] = None) -> Bound:
        """The bound-but-idle TCP sockets of the network namespace whose inode number is
        ``netns`` (default: the calling thread's)."""
        if netns is None:
            netns = os.stat("/proc/thread-self/ns/net").st_ino
        with self._lock:
            if self._closed:
                raise Incomplete("the bound-socket scan is closed")
            self._gen += 1
            v = self._view
            v[OFF_GEN:OFF_GEN + 8] = self._gen.to_bytes(8, "little")
            v[OFF_NETNS:OFF_NETNS + 8] = netns.to_bytes(8, "little")
            v[OFF_FOUND:VALUE_SIZE] = bytes(VALUE_SIZE - OFF_FOUND)
            if not sc.run_iterator(self._link, MAX_READS):
                raise Incomplete(f"the task-file iterator did not end in {MAX_READS} reads")
            found = int.from_bytes(v[OFF_FOUND:OFF_FOUND + 8], "little")
            lost = int.from_bytes(v[OFF_LOST:OFF_LOST + 8], "little")
            return self._results(found, lost)

    def _results(self, found: int, lost: int) -> Bound:
        out = Bound()
        if lost:
            raise Incomplete(f"{lost} bound sockets found no room in the map")
        if not found:
            return out
        if found > BOUND_MAX:
            raise Incomplete(f"more than {BOUND_MAX} bound sockets")
        _n, _keys, values = self._reader.read_raw()
        for run, family, port in VALUE.iter_unpack(values):
            if run == self._gen:
                out.counts[family] += 1
                out.ports.append(port)
        if len(out.ports) != found:
            raise Incomplete(f"{len(out.ports)} of {found} bound sockets left in the map")
        return out

