"""The kernel's own record of ``sock:inet_sock_set_state`` for a block of ports: an oracle for
the tcpevents tests that does not go through BPF.

A tracefs instance of the test's own (``instances/<name>``, so the host's trace is untouched)
records every hit of the tracepoint with one of the ports, with the task it ran on and whether
it ran in an interrupt. Next to it, a probe program on the same tracepoint counts, per thread
id, the hits BPF programs were run for. Together they tell a transition the collector's programs
missed from one the kernel never ran any BPF program for: the kernel skips BPF programs in some
contexts without counting a miss (seen on a VM: hits in softirq on top of one thread of its
management agent ran no BPF program, while ftrace recorded them), and those are not the
collector's to count.
"""

from __future__ import annotations

import os
import re
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Collection, Dict, List, Tuple

from exporter.bpf import btf, tracefs
from exporter.bpf import syscalls as sc
from exporter.bpf.asm import FP, MAP_UPDATE_ELEM, R0, R1, R2, R3, R4, R7, Asm, reg
from exporter.bpf.tcpevents import SockFields, _only_ports, sock_fields, sock_ports
from exporter.vocabulary.names import TCP_STATES

GET_CURRENT_PID_TGID = 14  # enum bpf_func_id
PF_KTHREAD = 0x00200000
_LINE = re.compile(r"^\s*(?P<comm>.+)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
                   r"(?P<flags>\S+)\s+[\d.]+:\s+inet_sock_set_state:.*"
                   r"oldstate=TCP_(?P<old>\w+) newstate=TCP_(?P<new>\w+)")
_BY_NAME = {v.upper(): v for v in TCP_STATES.values()}


@dataclass(frozen=True)
class Hit:
    comm: str
    pid: int  # the task the hit ran on (in an interrupt: the task it interrupted)
    interrupt: bool
    transition: Tuple[str, str]


def _probe(fields: SockFields, counts: int, lo: int, hi: int) -> bytes:
    """counts[tid] += 1 for each TCP hit with a port in [lo, hi]: which threads' contexts ran
    BPF programs for the test's transitions. A raw tracepoint typed by BTF, as the collector's
    program, so that the kernel skips it only when it already runs on that CPU."""
    a = Asm()
    a.ldx(8, R7, R1, 0)  # the socket
    a.ldx(fields.protocol.size, R2, R7, fields.protocol.offset)
    a.jmp("ne", R2, 6, "out")
    sock_ports(a, fields)
    _only_ports(a, (lo, hi))
    a.call(GET_CURRENT_PID_TGID)
    a.stx(4, FP, -4, R0)  # the thread id, the low half
    a.map_lookup(counts, -4)
    a.jmp("eq", R0, 0, "first")
    a.mov(R1, 1)
    a.atomic_add(8, R0, 0, R1)
    a.ja("out")
    a.label("first")
    a.st(4, FP, -16, 1)
    a.st(4, FP, -12, 0)
    a.ld_map_fd(R1, counts)
    a.mov(R2, reg(FP))
    a.add(R2, -4)
    a.mov(R3, reg(FP))
    a.add(R3, -16)
    a.mov(R4, sc.NOEXIST)
    a.call(MAP_UPDATE_ELEM)
    a.label("out")
    a.mov(R0, 0)
    a.exit()
    return a.assemble()


def _kernel_thread(pid: int) -> bool:
    if pid == 0:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            flags = int(f.read().rsplit(")", 1)[1].split()[6])
    except (OSError, IndexError, ValueError):
        return False
    return bool(flags & PF_KTHREAD)


def _tgid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


class KernelTrace:
    """:meth:`start` before the traffic, :meth:`stop` after it; :meth:`hits` and :meth:`unseen`
    read what was recorded until :meth:`close` (or the end of a ``with`` block)."""

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi
        root = tracefs.find(mount_if_missing=True)
        self.dir = os.path.join(root, "instances", f"nse-oracle-{os.getpid()}")
        self._fds: List[int] = []
        self.counts = -1

    def _write(self, rel: str, text: str) -> None:
        with open(os.path.join(self.dir, rel), "w") as f:
            f.write(text + "\n")

    def start(self) -> KernelTrace:
        os.mkdir(self.dir)
        try:
            self._write("buffer_size_kb", "2048")
            ev = "events/sock/inet_sock_set_state/"
            lo, hi = self.lo, self.hi
            self._write(ev + "filter", f"protocol == 6 && ((sport >= {lo} && sport <= {hi}) || "
                                       f"(dport >= {lo} && dport <= {hi}))")
            self._write(ev + "enable", "1")
            self.counts = sc.map_create(sc.MAP_TYPE_HASH, 4, 8, 4096, 0, "nse_oracle")
            self._fds.append(self.counts)
            fields = sock_fields(btf.load(btf.VMLINUX))
            self.prog = sc.prog_load(sc.PROG_TYPE_TRACING, _probe(fields, self.counts, lo, hi),
                                     "GPL", "nse_oracle", sc.TRACE_RAW_TP, fields.attach_btf_id)
            self._fds.append(self.prog)
            self._fds.append(sc.raw_tracepoint_open(self.prog))
            self._write("tracing_on", "1")
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> KernelTrace:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stop(self) -> None:
        """Stop recording (the records and counts stay readable until :meth:`close`)."""
        if os.path.isdir(self.dir):
            self._write("tracing_on", "0")

    def close(self) -> None:
        for fd in reversed(self._fds):
            sc.close(fd)
        self._fds = []
        if os.path.isdir(self.dir):
            self._write("tracing_on", "0")
            self._write("events/sock/inet_sock_set_state/enable", "0")
            os.rmdir(self.dir)  # an instance's files go with it

    def lost(self) -> int:
        """Records the instance's buffer dropped (must be 0 for the record to be whole)."""
        n = 0
        for cpu in os.listdir(os.path.join(self.dir, "per_cpu")):
            with open(os.path.join(self.dir, "per_cpu", cpu, "stats")) as f:
                for line in f:
                    key, _, v = line.partition(":")
                    if key.strip() in ("overrun", "dropped events"):
                        n += int(v.split()[0])
        return n

    def hits(self) -> List[Hit]:
        out = []
        with open(os.path.join(self.dir, "trace")) as f:
            for line in f:
                m = _LINE.match(line)
                if m:
                    out.append(Hit(m["comm"].strip(), int(m["pid"]), m["flags"][2] in "sShHzZ",
                                   (_BY_NAME[m["old"]], _BY_NAME[m["new"]])))
        return out

    def matrix(self) -> Counter[Tuple[str, str]]:
        return Counter(h.transition for h in self.hits())

    def probe_misses(self) -> int:
        return int(sc.fdinfo(self.prog).get("recursion_misses", "0") or 0)

    def unseen(self, ours: Collection[int]) -> Tuple[int, Dict[str, int]]:
        """Hits in an interrupt on top of another process's user thread that ran no BPF program
        (ftrace recorded them, the probe did not count them): (how many, by task)."""
        by_pid: Counter[int] = Counter()
        names: Dict[int, str] = {}
        for h in self.hits():
            if h.interrupt and not _kernel_thread(h.pid) and _tgid(h.pid) not in ours:
                by_pid[h.pid] += 1
                names[h.pid] = h.comm
        detail: Dict[str, int] = {}
        for pid, n in by_pid.items():
            raw = sc.map_lookup(self.counts, struct.pack("=I", pid), 8)
            ran = struct.unpack("=Q", raw)[0] if raw else 0
            if n > ran:
                detail[f"{names[pid]}-{pid}"] = n - ran
        total = max(0, sum(detail.values()) - self.probe_misses())
        return total, detail
