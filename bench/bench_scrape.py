#!/usr/bin/env python3
"""The full default scrape against node_exporter's same-ground collectors, and the sockets
collector alone against tcpstat, alternated scrape by scrape in one network namespace.

Run as root from the repository root:

    .venv/bin/python bench/bench_scrape.py [--sizes 1000,10000,100000] [--rounds 15]

For each size it makes a fresh network namespace holding N loopback TCP sockets (half
ESTABLISHED, half TIME_WAIT; bench/make_sockets.py) and starts, inside it:

* this exporter with its default collectors ("full");
* node_exporter with --collector.disable-defaults --collector.tcpstat --collector.netstat
  --collector.sockstat --collector.netdev --collector.network_route ("same ground": the
  default scrape's ground minus listeners and ports);
* this exporter with only the sockets collector, and node_exporter with only tcpstat.

Each round scrapes all four once, in turn, over kept-alive HTTP connections (so scraping adds no
sockets). It prints, per size, the median scrape time of each, the ratios, CPU seconds per
scrape (the delta of process_cpu_seconds_total over the rounds, divided by the rounds), the peak
RSS (VmHWM) of each and the growth of ours during the timed scrapes (VmHWM after minus VmRSS
before), the median per-collector time of the full scrape, and its netlink dumps per scrape.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

from common import connect_in, make_namespace, rss_kib, scrape, timed, wait_up  # noqa: E402

NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
SAME_GROUND = ["--collector.tcpstat", "--collector.netstat", "--collector.sockstat",
               "--collector.netdev", "--collector.network_route"]


def samples(body: str, name: str) -> Dict[str, float]:
    """Samples of one metric: label text -> value."""
    out = {}
    for line in body.splitlines():
        if line.startswith(name) and line[len(name)] in "{ ":
            key, val = line.rsplit(" ", 1)
            out[key[len(name):]] = float(val)
    return out


def cpu(body: str) -> float:
    return samples(body, "process_cpu_seconds_total")[""]


def start(ns: str) -> Dict[str, Tuple[subprocess.Popen, int]]:
    env = dict(os.environ, PYTHONPATH=ROOT)
    ours = [sys.executable, "-m", "exporter"]
    cmds = {
        "full": (ours + ["--web.listen-address=127.0.0.1:19816"], 19816),
        "node": ([str(NODE_EXPORTER), "--web.listen-address=127.0.0.1:19100",
                  "--collector.disable-defaults", *SAME_GROUND], 19100),
        "sockets": (ours + ["--web.listen-address=127.0.0.1:19817",
                            "--collector.disable-defaults", "--collector.sockets"], 19817),
        "tcpstat": ([str(NODE_EXPORTER), "--web.listen-address=127.0.0.1:19101",
                     "--collector.disable-defaults", "--collector.tcpstat"], 19101),
    }
    procs = {}
    for name, (cmd, port) in cmds.items():
        procs[name] = (subprocess.Popen(["ip", "netns", "exec", ns, *cmd], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                       port)
    for _, port in procs.values():
        wait_up(ns, port)
    return procs


def run_size(n: int, rounds: int) -> Dict[str, object]:
    ns = f"nsbench-{os.getpid()}-{n}"
    procs: List[subprocess.Popen] = []
    try:
        procs += make_namespace(ns, n)
        servers = start(ns)
        procs += [p for p, _ in servers.values()]
        conns = {k: connect_in(ns, port) for k, (_, port) in servers.items()}
        for k in conns:  # warm up (imports, first allocations, caches)
            for _ in range(2):
                scrape(conns[k], "/metrics")()
        rss_before = rss_kib(servers["full"][0].pid, "VmRSS")
        first = {k: cpu(scrape(c, "/metrics")().decode()) for k, c in conns.items()}
        times: Dict[str, List[float]] = {k: [] for k in [*conns, "ss"]}
        ss_cmd = ["ip", "netns", "exec", ns, "ss", "-tan"]
        per_collector: Dict[str, List[float]] = {}
        dumps: List[float] = []
        bodies: Dict[str, str] = {}
        for _ in range(rounds):
            for k, c in conns.items():
                t0 = time.perf_counter()
                body = scrape(c, "/metrics")().decode()
                times[k].append(time.perf_counter() - t0)
                bodies[k] = body
                if k == "full":
                    for lab, v in samples(body, "netstat_exporter_collector_duration_seconds"
                                          ).items():
                        per_collector.setdefault(lab.split('"')[1], []).append(v)
                    dumps.append(samples(body, "netstat_exporter_netlink_dumps").get("", 0.0))
            times["ss"].append(timed(lambda: subprocess.run(ss_cmd, stdout=subprocess.DEVNULL,
                                                            check=True)))
        # Every round scraped each server once more after `first`: CPU per scrape.
        cpu_per = {k: (cpu(bodies[k]) - first[k]) / rounds for k in conns}
        hwm = {k: rss_kib(p.pid, "VmHWM") for k, (p, _) in servers.items()}
        seen = sum(v for lab, v in samples(bodies["sockets"], "netstat_sockets").items()
                   if 'protocol="tcp"' in lab)
        return {"n": n, "seen": seen, "median": {k: statistics.median(v) for k, v in times.items()},
                "cpu": cpu_per, "hwm": hwm, "rss_before": rss_before,
                "collectors": {k: statistics.median(v) for k, v in per_collector.items()},
                "dumps": statistics.median(dumps) if dumps else 0.0}
    finally:
        for p in procs:
            p.kill()
            p.wait()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_scrape.py: run as root (it creates a network namespace)")
    if NODE_EXPORTER is None:
        raise SystemExit("bench_scrape.py: node_exporter not found "
                         "(apt-get install prometheus-node-exporter)")
    results = [run_size(int(x), args.rounds) for x in args.sizes.split(",")]
    ms = 1000.0
    print("| TCP sockets | full default scrape | node_exporter same ground | ratio "
          "| CPU/scrape ours | CPU/scrape node | CPU ratio | peak RSS ours | peak RSS node "
          "| RSS growth ours | netlink dumps/scrape |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        m, c, h = r["median"], r["cpu"], r["hwm"]  # type: ignore[index]
        growth = max(0, h["full"] - r["rss_before"]) / 1024  # type: ignore[index,operator]
        print(f"| {int(r['seen']):,} | {m['full'] * ms:.1f} ms | {m['node'] * ms:.1f} ms "  # type: ignore[call-overload]
              f"| {m['full'] / m['node']:.2f} | {c['full'] * ms:.1f} ms | {c['node'] * ms:.1f} ms "
              f"| {c['full'] / c['node']:.2f} "
              f"| {h['full'] / 1024:.1f} MiB | {h['node'] / 1024:.1f} MiB | {growth:.2f} MiB "
              f"| {r['dumps']:.0f} |")
    print()
    print("| TCP sockets | sockets collector alone | node_exporter tcpstat | ratio | CPU/scrape "
          "ours | CPU/scrape tcpstat | CPU ratio | ss -tan | ratio to ss |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        m, c = r["median"], r["cpu"]  # type: ignore[assignment]
        print(f"| {int(r['seen']):,} | {m['sockets'] * ms:.1f} ms | {m['tcpstat'] * ms:.1f} ms "  # type: ignore[call-overload]
              f"| {m['sockets'] / m['tcpstat']:.2f} | {c['sockets'] * ms:.1f} ms "
              f"| {c['tcpstat'] * ms:.1f} ms | {c['sockets'] / c['tcpstat']:.2f} "
              f"| {m['ss'] * ms:.1f} ms | {m['sockets'] / m['ss']:.2f} |")
    print()
    names = sorted({k for r in results for k in r["collectors"]})  # type: ignore[attr-defined]
    print("| TCP sockets | " + " | ".join(names) + " |")
    print("| ---: | " + " | ".join("---:" for _ in names) + " |")
    for r in results:
        col = r["collectors"]
        print(f"| {int(r['seen']):,} | "  # type: ignore[call-overload]
              + " | ".join(f"{col.get(k, 0) * ms:.1f} ms" for k in names) + " |")  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
