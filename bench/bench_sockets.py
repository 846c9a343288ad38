#!/usr/bin/env python3
"""Scrape time of the sockets collector against node_exporter's tcpstat and `ss -tan`.

Run as root from the repository root:  python3 bench/bench_sockets.py [--sizes 1000,10000,100000]

For each size it makes a fresh network namespace holding N loopback sockets (half ESTABLISHED,
half TIME_WAIT; bench/make_sockets.py), starts this exporter with only the sockets collector and
node_exporter with only tcpstat in it, and then alternates: one HTTP scrape of each (over a
keep-alive connection, so scraping adds no sockets) and one `ss -tan` run, --rounds times. It
prints medians, the ratios, and the exporter's resident memory before the scrapes and its peak
(VmHWM) after them.
"""

from __future__ import annotations

import argparse
import ctypes
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")


def setns(name: str) -> None:
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    os.close(fd)


def connect_in(ns: str, port: int) -> http.client.HTTPConnection:
    """A connection made from inside ``ns``. A failure (the server not up yet) is raised here,
    in the caller, rather than printed by the thread as a traceback, and no connection is then
    left for http.client to open again from outside the namespace."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    failed: List[OSError] = []

    def go() -> None:
        try:
            setns(ns)
            conn.connect()
        except OSError as e:
            failed.append(e)

    t = threading.Thread(target=go)
    t.start()
    t.join()
    if failed:
        conn.close()
        raise failed[0]
    return conn


def wait_up(ns: str, port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = connect_in(ns, port)
            c.request("GET", "/")
            c.getresponse().read()
            c.close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing answered on port {port} in {ns}")


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def scrape(conn: http.client.HTTPConnection, path: str) -> Callable[[], bytes]:
    def go() -> bytes:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200, body[:200]
        return body
    return go


def rss_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def run_size(n: int, rounds: int) -> Dict[str, float]:
    ns = f"nsbench-{os.getpid()}-{n}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    procs: List[subprocess.Popen] = []
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                        "net.ipv4.ip_local_port_range=1024 65000",
                        # keep the exporters' ports and the makers' listeners out of the range
                        "net.ipv4.ip_local_reserved_ports=19100,19816,20000-21000",
                        "net.ipv4.tcp_max_tw_buckets=2000000"], check=True)
        # Half the sockets ESTABLISHED (pairs held open, spread over processes so that none
        # needs more descriptors than the limit allows), half TIME_WAIT.
        pairs, tw = n // 4, n - 2 * (n // 4)
        per = 8000
        shares = [(min(per, pairs - i), 0) for i in range(0, pairs, per)] or [(0, 0)]
        shares[-1] = (shares[-1][0], tw)
        for k, (p, t) in enumerate(shares):
            mk = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable,
                                   os.path.join(ROOT, "bench", "make_sockets.py"), str(p), str(t),
                                   str(20000 + 100 * k)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            procs.append(mk)
        for mk in procs:
            assert mk.stdout is not None and mk.stdout.readline().strip() == "ready"
        makers = list(procs)
        env = dict(os.environ, PYTHONPATH=ROOT)
        ours = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "exporter",
                                 "--web.listen-address=127.0.0.1:19816",
                                 "--collector.disable-defaults", "--collector.sockets",
                                 "--web.disable-exporter-metrics"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        node = subprocess.Popen(["ip", "netns", "exec", ns, str(NODE_EXPORTER),
                                 "--web.listen-address=127.0.0.1:19100",
                                 "--collector.disable-defaults", "--collector.tcpstat",
                                 "--web.disable-exporter-metrics"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs += [ours, node]
        del makers
        wait_up(ns, 19816)
        wait_up(ns, 19100)
        # `ip netns exec` execs the program: the pid is the exporter's own.
        a, b = connect_in(ns, 19816), connect_in(ns, 19100)
        scrape(a, "/metrics")()  # warm up both (imports, first allocation)
        scrape(b, "/metrics")()
        rss_before = rss_kib(ours.pid, "VmRSS")
        hwm_before = rss_kib(ours.pid, "VmHWM")
        times: Dict[str, List[float]] = {"ours": [], "node": [], "ss": []}
        ss_cmd = ["ip", "netns", "exec", ns, "ss", "-tan"]
        for _ in range(rounds):
            times["ours"].append(timed(scrape(a, "/metrics")))
            times["node"].append(timed(scrape(b, "/metrics")))
            times["ss"].append(timed(lambda: subprocess.run(ss_cmd, stdout=subprocess.DEVNULL,
                                                            check=True)))
        hwm_after = rss_kib(ours.pid, "VmHWM")
        med = {k: statistics.median(v) for k, v in times.items()}
        body = scrape(a, "/metrics")().decode()
        counted = sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                      if line.startswith('netstat_sockets{') and 'protocol="tcp"' in line)
        return {"n": n, "sockets_seen": counted, **med, "rss_before_kib": rss_before,
                "hwm_before_kib": hwm_before, "hwm_after_kib": hwm_after}
    finally:
        for p in procs:
            p.kill()
            p.wait()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_sockets.py: run as root (it creates a network namespace)")
    if NODE_EXPORTER is None:
        raise SystemExit("bench_sockets.py: node_exporter not found "
                         "(apt-get install prometheus-node-exporter)")
    print("| sockets | this exporter | node_exporter tcpstat | ss -tan | ratio to node_exporter "
          "| ratio to ss | exporter RSS before | peak RSS during | growth |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in (int(x) for x in args.sizes.split(",")):
        r = run_size(n, args.rounds)
        growth = max(0, r["hwm_after_kib"] - max(r["rss_before_kib"], 0))
        print(f"| {int(r['sockets_seen']):,} | {r['ours'] * 1000:.1f} ms | {r['node'] * 1000:.1f} ms "
              f"| {r['ss'] * 1000:.1f} ms | {r['ours'] / r['node']:.2f} | {r['ours'] / r['ss']:.2f} "
              f"| {r['rss_before_kib'] / 1024:.1f} MiB | {r['hwm_after_kib'] / 1024:.1f} MiB "
              f"| {growth / 1024:.2f} MiB |", flush=True)


if __name__ == "__main__":
    main()
