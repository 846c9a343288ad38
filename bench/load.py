#!/usr/bin/env python3
"""Load: concurrent keep-alive scrapers against the exporter on a busy, churning host.

Run as root from the repository root:
    .venv/bin/python bench/load.py --scrapers 10 --duration 60 --sockets 50000

Not a test: it asserts nothing and prints what it measured. In a network namespace of its own
it holds --sockets established loopback TCP sockets (bench/make_sockets.py, several processes),
churns more (a process that opens and closes --churn connections a second, leaving TIME_WAIT
sockets, and keeps a rolling set of a thousand open ones), and spawns --spawn short-lived
processes a second that each open a listening socket and exit half a second later, so the
listeners collector keeps meeting owners it has not seen. The exporter runs there with its
default collectors; --scrapers threads, each with one kept-alive connection as Prometheus
keeps, scrape /metrics back to back (gzip, the Accept header Prometheus sends) for --duration
seconds, each with Prometheus's default 10 s scrape timeout.

It prints the scrapes and failures, latency percentiles, the per-collector durations the
exporter reported (sampled bodies), how many scrapes shared another's collection, the exporter's
CPU time per collection, and its RSS, peak RSS and open descriptors at start and end. With
--node-exporter, node_exporter runs beside it with its socket and netstat collectors, and each
scraper alternates between the two, scrape by scrape, so both meet the same host.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from common import rss_kib, setns  # noqa: E402

PORT = 19816
NODE_PORT = 19100
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
# node_exporter's counterparts of the default collectors: socket states, protocol counters,
# sockstat. It has nothing for listeners' owners or ephemeral ports.
NODE_COLLECTORS = ("--collector.tcpstat", "--collector.netstat", "--collector.sockstat")
SCRAPE_TIMEOUT = 10.0  # Prometheus's default scrape_timeout
ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
          "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")

CHURN = r"""
import collections, socket, sys, time
rate, until = float(sys.argv[1]), time.monotonic() + float(sys.argv[2])
lst = socket.socket(); lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind(("127.0.0.1", 20900)); lst.listen(4096)
held = collections.deque()
made, t0 = 0, time.monotonic()
print("ready", flush=True)
while time.monotonic() < until:
    c = socket.create_connection(("127.0.0.1", 20900)); s, _ = lst.accept()
    if made % 2:
        held.append((c, s))
        if len(held) > 1000:
            for x in held.popleft():
                x.close()
    else:
        c.close(); s.close()  # the client closes first: TIME_WAIT
    made += 1
    ahead = made / rate - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
"""

SPAWN = r"""
import subprocess, sys, time
rate, until = float(sys.argv[1]), time.monotonic() + float(sys.argv[2])
child = ("import socket, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
         "time.sleep(0.5)")
running, n, t0 = [], 0, time.monotonic()
print("ready", flush=True)
while time.monotonic() < until:
    running.append(subprocess.Popen([sys.executable, "-I", "-S", "-c", child]))
    n += 1
    running = [p for p in running if p.poll() is None]
    ahead = n / rate - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
for p in running:
    p.wait()
print(n, flush=True)
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def samples(body: bytes, name: str) -> Dict[str, float]:
    """{label set text: value} of one metric in an exposition body."""
    out = {}
    for line in body.decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, val = line.rpartition(" ")
            out[key[len(name):]] = float(val)
    return out


class Scraper(threading.Thread):
    """Scrapes back to back; with several ports, one kept-alive connection to each, taking them
    in turn scrape by scrape."""

    def __init__(self, ns: str, until: float, keep_every: int, ports: Tuple[int, ...]) -> None:
        super().__init__(daemon=True)
        self.ns, self.until, self.keep_every, self.ports = ns, until, keep_every, ports
        self.stats = {p: Stats() for p in ports}

    def run(self) -> None:
        setns(self.ns)  # this thread only
        conns: Dict[int, Optional[http.client.HTTPConnection]] = {p: None for p in self.ports}
        turn = 0
        while time.monotonic() < self.until:
            port = self.ports[turn % len(self.ports)]
            turn += 1
            self._one(port, conns)

    def _one(self, port: int, conns: Dict[int, Optional[http.client.HTTPConnection]]) -> None:
        st = self.stats[port]
        conn = conns[port]
        if conn is None:
            conn = conns[port] = http.client.HTTPConnection("127.0.0.1", port,
                                                            timeout=SCRAPE_TIMEOUT)
        t0 = time.perf_counter()
        try:
            conn.request("GET", "/metrics", headers={"Accept": ACCEPT,
                                                     "Accept-Encoding": "gzip"})
            r = conn.getresponse()
            body = r.read()
            took = time.perf_counter() - t0
            if r.status != 200:
                st.failures[f"HTTP {r.status}"] = st.failures.get(f"HTTP {r.status}", 0) + 1
                return
            st.latencies.append(took)
            if len(st.latencies) % self.keep_every == 0:
                st.bodies.append(gzip.decompress(body)
                                 if r.getheader("Content-Encoding") == "gzip" else body)
        except (OSError, http.client.HTTPException) as e:
            kind = type(e).__name__
            st.failures[kind] = st.failures.get(kind, 0) + 1
            conn.close()
            conns[port] = None


class Stats:
    def __init__(self) -> None:
        self.latencies: List[float] = []
        self.failures: Dict[str, int] = {}
        self.bodies: List[bytes] = []


def pct(values: List[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] if s else float("nan")


def one_scrape(ns: str, port: int) -> bytes:
    box: List[bytes] = []

    def go() -> None:
        setns(ns)
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            c.request("GET", "/metrics")
            box.append(c.getresponse().read())
            c.close()
        except OSError:
            pass  # not up yet: the caller tries again

    t = threading.Thread(target=go)
    t.start()
    t.join(90)
    return box[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scrapers", type=int, default=10)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--sockets", type=int, default=50000, help="established sockets held")
    ap.add_argument("--churn", type=float, default=300.0, help="connections opened a second")
    ap.add_argument("--spawn", type=float, default=5.0, help="listening processes a second")
    ap.add_argument("--exporter-arg", action="append", default=[],
                    help="extra flag for the exporter (repeatable)")
    ap.add_argument("--node-exporter", action="store_true",
                    help="also run node_exporter (its socket and netstat collectors) in the "
                         "namespace; every scraper alternates between the two, scrape by scrape")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("load.py: run as root (it creates a network namespace)")
    ns = f"nsload-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    procs: List[subprocess.Popen] = []
    try:
        run = ["ip", "netns", "exec", ns]
        subprocess.run(run + ["ip", "link", "set", "lo", "up"], check=True)
        # The kernel's default ephemeral range (32768-60999) holds every client socket made
        # here; the ports the script listens on (19816, 20000-21000) are below it.
        subprocess.run(run + ["sysctl", "-qw", "net.ipv4.tcp_max_tw_buckets=2000000"],
                       check=True)
        pairs, per = args.sockets // 2, 5000
        t_setup = time.monotonic()
        for k, i in enumerate(range(0, pairs, per)):
            procs.append(subprocess.Popen(
                run + [sys.executable, os.path.join(ROOT, "bench", "make_sockets.py"),
                       str(min(per, pairs - i)), "0", str(20000 + 100 * k)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        env = dict(os.environ, PYTHONPATH=ROOT)
        exporter = subprocess.Popen(run + [sys.executable, "-m", "exporter",
                                           f"--web.listen-address=127.0.0.1:{PORT}",
                                           *args.exporter_arg],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True)
        procs.append(exporter)
        pids = {PORT: exporter.pid}  # `ip netns exec` execs the program: the pid is its own
        if args.node_exporter:
            if NODE_EXPORTER is None:
                raise SystemExit("load.py: node_exporter not found "
                                 "(apt-get install prometheus-node-exporter)")
            node = subprocess.Popen(run + [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:"
                                           f"{NODE_PORT}", "--collector.disable-defaults",
                                           *NODE_COLLECTORS],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(node)
            pids[NODE_PORT] = node.pid
        deadline = time.monotonic() + 30
        first: Dict[int, bytes] = {}
        while len(first) < len(pids):
            for port in pids:
                if port not in first:
                    with contextlib.suppress(IndexError):  # not up yet
                        first[port] = one_scrape(ns, port)
            if len(first) < len(pids):
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise SystemExit("load.py: an exporter did not answer")
                time.sleep(0.2)
        span = args.duration + 5
        churn = subprocess.Popen(run + [sys.executable, "-c", CHURN, str(args.churn), str(span)],
                                 stdout=subprocess.PIPE, text=True)
        spawn = subprocess.Popen(run + [sys.executable, "-c", SPAWN, str(args.spawn), str(span)],
                                 stdout=subprocess.PIPE, text=True)
        procs += [churn, spawn]
        for p in (churn, spawn):
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        setup = time.monotonic() - t_setup
        start = {port: {"rss": rss_kib(pid, "VmRSS"), "fds": fds(pid),
                        "cpu": cpu_seconds(pid)} for port, pid in pids.items()}
        until = time.monotonic() + args.duration
        scrapers = [Scraper(ns, until, 2, tuple(pids)) for _ in range(args.scrapers)]
        for s in scrapers:
            s.start()
        for s in scrapers:
            s.join(args.duration + 2 * SCRAPE_TIMEOUT + 30)
        end = {port: {"rss": rss_kib(pid, "VmRSS"), "fds": fds(pid), "cpu": cpu_seconds(pid),
                      "hwm": rss_kib(pid, "VmHWM")} for port, pid in pids.items()}
        last = one_scrape(ns, PORT)
        spawn.wait(span + 30)
        assert spawn.stdout is not None
        spawned = spawn.stdout.read().strip()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    ms = 1000.0
    print(f"host load average (1 min) at the end: {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs")
    print(f"setup {setup:.0f} s; {args.scrapers} scrapers for {args.duration:.0f} s"
          + (", alternating between the exporters" if len(pids) > 1 else "")
          + f"; sockets counted at start {sum(samples(first[PORT], 'netstat_sockets').values()):,.0f}"
          f", at end {sum(samples(last, 'netstat_sockets').values()):,.0f}; "
          f"churn {args.churn:.0f} connections/s; {spawned} listening processes spawned")
    for port in pids:
        name = "netstat-exporter" if port == PORT else "node_exporter " + " ".join(
            c[len("--collector."):] for c in NODE_COLLECTORS)
        stats = [s.stats[port] for s in scrapers]
        lat = [x for st in stats for x in st.latencies]
        failures: Dict[str, int] = {}
        for st in stats:
            for k, v in st.failures.items():
                failures[k] = failures.get(k, 0) + v
        print(f"== {name}")
        print(f"scrapes: {len(lat)}  failed: {sum(failures.values())} {failures or ''}")
        print(f"latency: p50 {pct(lat, 50) * ms:.0f} ms  p90 {pct(lat, 90) * ms:.0f} ms  "
              f"p99 {pct(lat, 99) * ms:.0f} ms  max {max(lat, default=float('nan')) * ms:.0f} ms")
        shared = samples(last, "netstat_exporter_http_scrapes_shared_total").get("", 0.0) \
            if port == PORT else 0.0
        collections = len(lat) - shared
        print(f"shared another scrape's collection: {shared:.0f}; collections: "
              f"{collections:.0f}; CPU per collection: "
              f"{(end[port]['cpu'] - start[port]['cpu']) / max(collections, 1) * ms:.0f} ms")
        if port == PORT:
            durations: Dict[str, List[float]] = {}
            for body in (b for st in stats for b in st.bodies):
                for key, v in samples(body, "netstat_exporter_collector_duration_seconds").items():
                    durations.setdefault(key.split('"')[1], []).append(v)
            print("collector duration (as reported): " + ", ".join(
                f"{k} p50 {statistics.median(v) * ms:.1f} ms / p99 {pct(v, 99) * ms:.1f} ms"
                for k, v in sorted(durations.items())))
        print(f"RSS: start {start[port]['rss'] / 1024:.1f} MiB, end "
              f"{end[port]['rss'] / 1024:.1f} MiB, peak {end[port]['hwm'] / 1024:.1f} MiB; "
              f"open fds: start {start[port]['fds']}, end {end[port]['fds']}")


if __name__ == "__main__":
    main()
