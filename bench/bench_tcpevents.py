"""What the tcpevents collector costs: loopback connection churn with its programs attached and
not, alternating, and the cost of reading its maps per scrape with 1,000 ports in them.

    .venv/bin/python bench/bench_tcpevents.py --duration 30 --rounds 3 --workers 2 --ports 1000

As root. Everything happens in a network namespace of its own (``ip netns add``), deleted at
the end; the churn is bounded in time. Churn: ``--workers`` processes, each connecting to its
own loopback listener, accepting and closing both ends (the client first) as fast as it can;
each connection makes ten state transitions and six port events. A phase is ``--duration``
seconds with the programs attached ("on") or not ("off"); phases alternate, ``--rounds`` of
each, and the throughput of each is connections per second over all workers. Read cost:
``--ports`` distinct ports get one refused connect each (a key for the local port, one for the
remote: twice as many keys), then the collector's read (one batch lookup of the per-port map,
the transitions array through its memory mapping, the programs' fdinfo) and the building of its
metric families are timed, median of ``--reads``. Not a test: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import setns  # noqa: E402
from exporter.bpf.tcpevents import TcpEvents  # noqa: E402
from exporter.collectors.tcpevents import TcpEventsCollector  # noqa: E402


def churn(ns: str, port: int, duration: float, out: mp.Queue[int]) -> None:
    setns(ns)
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", port))
    lst.listen(1024)
    n = 0
    end = time.monotonic() + duration
    while time.monotonic() < end:
        for _ in range(100):
            c = socket.socket()
            c.connect(("127.0.0.1", port))
            s, _ = lst.accept()
            c.close()
            s.close()
        n += 100
    lst.close()
    out.put(n)


def phase(ns: str, workers: int, duration: float, base_port: int) -> float:
    q: mp.Queue[int] = mp.Queue()
    procs = [mp.Process(target=churn, args=(ns, base_port + i, duration, q))
             for i in range(workers)]
    for p in procs:
        p.start()
    total = sum(q.get(timeout=duration + 60) for _ in procs)
    for p in procs:
        p.join()
    return total / duration


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
        coll = TcpEventsCollector.__new__(TcpEventsCollector)
        coll.max_ports = ev.max_ports
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
        on: List[float] = []
        off: List[float] = []
        for r in range(args.rounds):
            for state in ("off", "on"):
                ev = TcpEvents() if state == "on" else None
                if ev is not None:  # as the collector does from its socket snapshot
                    ev.set_ports([], range(10000, 65001))
                try:
                    base = 2000 + 10 * (2 * r + (state == "on"))  # below the ephemeral range
                    cps = phase(ns, args.workers, args.duration, base)
                    if ev is not None:
                        got = ev.read()
                        est = sum(v[5] for (side, port), v in got.ports.items()
                                  if 2000 <= port < 3000)
                        note = (f" (counted {est:.0f} established, missed {got.missed}, "
                                f"overflow {sum(got.overflow)})")
                    else:
                        note = ""
                finally:
                    if ev is not None:
                        ev.close()
                (on if state == "on" else off).append(cps)
                print(f"round {r + 1} {state}: {cps:,.0f} connections/s{note}", flush=True)
                time.sleep(2)
        m_on, m_off = statistics.median(on), statistics.median(off)
        print(f"median on {m_on:,.0f}/s, off {m_off:,.0f}/s: throughput lost "
              f"{(1 - m_on / m_off) * 100:.1f}%")
        read_cost(ns, args.ports, args.reads)
    finally:
        subprocess.run(["ip", "netns", "del", ns])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
