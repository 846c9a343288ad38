"""What the tcpevents collector costs: loopback connection churn with its programs attached and
not, alternating, and the cost of reading its maps per scrape with 1,000 ports in them.

    .venv/bin/python bench/bench_tcpevents.py --duration 30 --rounds 3 --workers 2 --ports 1000

As root. Everything happens in a network namespace of its own (``ip netns add``), deleted at
the end; the churn is bounded in time. Churn: ``--workers`` processes, each connecting to its
own loopback listener, accepting and closing both ends (the client first) as fast as it can;
each connection makes ten state transitions and three port events. A phase is ``--duration``
seconds with the programs attached ("on") or not ("off"); each round runs one of each, in the
order off-on, then on-off, and so on (so a drift in the machine's load falls on both alike).
Each phase reports its throughput (connections per second over all workers) and the CPU time
its workers used per connection (user and system, the softirq work of loopback included):
on a machine shared with other work the throughput follows the share of CPU the workers get,
the CPU time per connection much less. The summary gives the medians of both and the median
of the rounds' on/off ratios. ``--programs empty`` attaches programs that return at once to
the same (classic) tracepoints: the cost of the tracepoints themselves (``empty-btf``: the one
for ``inet_sock_set_state`` on its BTF raw tracepoint, as the collector's); ``--programs classic``
loads the collector's programs with the classic tracepoint for ``inet_sock_set_state`` (as on
a kernel without BTF); ``--off classic`` attaches those in the "off" phases instead of nothing,
to compare two ways directly. ``--bpf-stats`` turns on ``kernel.bpf_stats_enabled`` for the run
(restored after) and reports the programs' own run time per event from their fdinfo
(``run_time_ns``/``run_cnt``; the statistics add two clock reads to every run, so run the A/B
without them). Read cost: ``--ports`` distinct ports get one refused connect each (a key for
the local port, one for the remote: twice as many keys), then the collector's read (one batch
lookup each of the per-CPU transitions and per-port maps, summed over the CPUs, and the
programs' fdinfo) and the building of its metric families are timed, median of ``--reads``.
Not a test: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from typing import Dict, Iterator, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import setns  # noqa: E402
from exporter.bpf import btf, tracefs  # noqa: E402
from exporter.bpf import syscalls as sc  # noqa: E402
from exporter.bpf.asm import R0, Asm  # noqa: E402
from exporter.bpf.tcpevents import (  # noqa: E402
    OPTIONAL_TRACEPOINTS,
    SET_STATE,
    TRACEPOINTS,
    TcpEvents,
    sock_fields,
)
from exporter.collectors.tcpevents import TcpEventsCollector, TcpEventsOptions  # noqa: E402

STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"


def churn(ns: str, port: int, duration: float, out: mp.Queue[Tuple[int, float]]) -> None:
    setns(ns)
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", port))
    lst.listen(1024)
    n = 0
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    end = time.monotonic() + duration
    while time.monotonic() < end:
        for _ in range(100):
            c = socket.socket()
            c.connect(("127.0.0.1", port))
            s, _ = lst.accept()
            c.close()
            s.close()
        n += 100
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    lst.close()
    out.put((n, r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime))


def phase(ns: str, workers: int, duration: float, base_port: int) -> Tuple[float, float]:
    """Connections per second over all workers, and CPU seconds per connection."""
    q: mp.Queue[Tuple[int, float]] = mp.Queue()
    procs = [mp.Process(target=churn, args=(ns, base_port + i, duration, q))
             for i in range(workers)]
    for p in procs:
        p.start()
    got = [q.get(timeout=duration + 60) for _ in procs]
    for p in procs:
        p.join()
    n = sum(x[0] for x in got)
    return n / duration, sum(x[1] for x in got) / max(n, 1)


class EmptyPrograms:
    """Programs that return at once, on the collector's tracepoints: what the tracepoints cost
    (the kernel fills each record before it runs the program) with no work in the program.
    ``typed``: inet_sock_set_state's on its BTF raw tracepoint, as the collector attaches it."""

    def __init__(self, typed: bool = False) -> None:
        self._fds: List[int] = []
        self._prog_fds: List[int] = []
        root = tracefs.find(mount_if_missing=True)
        formats = tracefs.read_formats(root, TRACEPOINTS, OPTIONAL_TRACEPOINTS)
        a = Asm()
        a.mov(R0, 0)
        a.exit()
        code = a.assemble()
        self.tracepoints = tuple(formats)
        for tp, fmt in formats.items():
            if typed and tp == SET_STATE:
                fields = sock_fields(btf.load())
                prog = sc.prog_load(sc.PROG_TYPE_TRACING, code, "GPL", "nse_empty",
                                    sc.TRACE_RAW_TP, fields.attach_btf_id)
                self._fds.append(prog)
                self._prog_fds.append(prog)
                self._fds.append(sc.raw_tracepoint_open(prog))
                continue
            prog = sc.prog_load(sc.PROG_TYPE_TRACEPOINT, code, "GPL", "nse_empty")
            self._fds.append(prog)
            self._prog_fds.append(prog)
            ev = sc.perf_event_open_tracepoint(fmt.id, 0)
            self._fds.append(ev)
            sc.attach(ev, prog)

    def set_ports(self, listening: object, ephemeral: object) -> None:
        pass

    def close(self) -> None:
        for fd in reversed(self._fds):
            sc.close(fd)
        self._fds = []


def prog_stats(ev: object) -> Dict[str, Tuple[int, int]]:
    """run_cnt and run_time_ns of each program, by tracepoint."""
    out = {}
    for tp, fd in zip(ev.tracepoints, ev._prog_fds):  # type: ignore[attr-defined]
        info = sc.fdinfo(fd)
        out[tp] = (int(info.get("run_cnt", "0")), int(info.get("run_time_ns", "0")))
    return out


@contextlib.contextmanager
def bpf_stats(on: bool) -> Iterator[None]:
    if not on:
        yield
        return
    with open(STATS_SYSCTL) as f:
        before = f.read().strip()
    with open(STATS_SYSCTL, "w") as f:
        f.write("1")
    try:
        yield
    finally:
        with open(STATS_SYSCTL, "w") as f:
            f.write(before)


def read_cost(ns: str, ports: int, reads: int) -> None:
    ev = TcpEvents(max_ports=max(4096, 4 * ports))
    try:
        def knock() -> None:
            setns(ns)
            for p in range(3000, 3000 + ports):
                c = socket.socket()
                c.connect_ex(("127.0.0.1", p))
                c.close()

        p = mp.Process(target=knock)
        p.start()
        p.join()
        # only the metric families are timed: a collector with its options, nothing loaded
        coll = TcpEventsCollector.__new__(TcpEventsCollector)
        coll.opts = TcpEventsOptions(max_ports=ev.max_ports)
        r = ev.read()
        times_read, times_all = [], []
        for _ in range(reads):
            t0 = time.perf_counter()
            r = ev.read()
            t1 = time.perf_counter()
            coll._families(r)
            t2 = time.perf_counter()
            times_read.append(t1 - t0)
            times_all.append(t2 - t0)
        print(f"read cost: {r.map_entries} keys in the per-port map; read median "
              f"{statistics.median(times_read) * 1e3:.2f} ms, read and metric families "
              f"{statistics.median(times_all) * 1e3:.2f} ms (max {max(times_all) * 1e3:.2f} ms)"
              f" over {reads} reads")
    finally:
        ev.close()


def main(argv: List[str]) -> int:
    a = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    a.add_argument("--duration", type=float, default=30)
    a.add_argument("--rounds", type=int, default=3)
    a.add_argument("--workers", type=int, default=2)
    a.add_argument("--ports", type=int, default=1000)
    a.add_argument("--reads", type=int, default=200)
    a.add_argument("--programs", choices=PROGRAMS, default="collector")
    a.add_argument("--off", choices=("none",) + PROGRAMS, default="none",
                   help="what the 'off' phases attach (default nothing): compares two ways")
    a.add_argument("--bpf-stats", action="store_true")
    args = a.parse_args(argv)
    ns = f"bench-tcpevents-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        # Ten seconds of TIME_WAIT at 20,000 connections a second: more than the default
        # bucket limit; let the namespace reuse them.
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                        "net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=10000 65000"],
                       check=True)
        if args.rounds:  # --rounds 0: the read cost alone
            with bpf_stats(args.bpf_stats):
                churn_phases(ns, args)
        read_cost(ns, args.ports, args.reads)
    finally:
        subprocess.run(["ip", "netns", "del", ns])
    return 0


PROGRAMS = ("collector", "classic", "empty", "empty-btf")


def attach(what: str) -> Optional[object]:
    return (TcpEvents() if what == "collector" else TcpEvents(btf_path=None)
            if what == "classic" else EmptyPrograms() if what == "empty"
            else EmptyPrograms(typed=True) if what == "empty-btf" else None)


def churn_phases(ns: str, args: argparse.Namespace) -> None:
    res: Dict[str, List[Tuple[float, float]]] = {"on": [], "off": []}
    runs: Dict[str, Tuple[int, int]] = {}
    for r in range(args.rounds):
        for state in (("off", "on") if r % 2 == 0 else ("on", "off")):
            ev = attach(args.programs if state == "on" else args.off)
            if ev is not None:  # as the collector does from its socket snapshot
                ev.set_ports([], range(10000, 65001))  # type: ignore[attr-defined]
            try:
                s0 = prog_stats(ev) if ev is not None else {}
                base = 2000 + 10 * (2 * r + (state == "on"))  # below the ephemeral range
                cps, cpu = phase(ns, args.workers, args.duration, base)
                note = ""
                if isinstance(ev, TcpEvents):
                    got = ev.read()
                    est = sum(v[5] for (side, port), v in got.ports.items()
                              if 2000 <= port < 3000)
                    note = (f" (counted {est:.0f} established, missed {got.missed}, "
                            f"overflow {sum(got.overflow)})")
                if ev is not None and state == "on":
                    s1 = prog_stats(ev)
                    for tp, (n1, t1) in s1.items():
                        n0, t0 = s0[tp]
                        c, t = runs.get(tp, (0, 0))
                        runs[tp] = (c + n1 - n0, t + t1 - t0)
            finally:
                if ev is not None:
                    ev.close()  # type: ignore[attr-defined]
            res[state].append((cps, cpu))
            print(f"round {r + 1} {state}: {cps:,.0f} connections/s, "
                  f"{cpu * 1e6:.2f} us CPU per connection{note}", flush=True)
            time.sleep(1)
    on, off = res["on"], res["off"]
    m_on, m_off = statistics.median(x[0] for x in on), statistics.median(x[0] for x in off)
    c_on, c_off = statistics.median(x[1] for x in on), statistics.median(x[1] for x in off)
    ratio = statistics.median(a[0] / b[0] for a, b in zip(on, off))
    cratio = statistics.median(a[1] / b[1] for a, b in zip(on, off))
    print(f"median on {m_on:,.0f}/s, off {m_off:,.0f}/s: throughput lost "
          f"{(1 - m_on / m_off) * 100:.1f}% (median of the rounds' ratios: "
          f"{(1 - ratio) * 100:.1f}%)")
    print(f"median CPU per connection on {c_on * 1e6:.2f} us, off {c_off * 1e6:.2f} us: "
          f"{(c_on / c_off - 1) * 100:+.1f}% (median of the rounds' ratios: "
          f"{(cratio - 1) * 100:+.1f}%)")
    if args.bpf_stats:
        for tp, (n, t) in runs.items():
            conns = sum(x[0] for x in on) * args.duration
            print(f"{tp}: {n / max(conns, 1):.2f} runs per connection, "
                  f"{t / max(n, 1):.0f} ns per run")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
