#!/usr/bin/env python3
"""The full default scrape against node_exporter's same-ground collectors, and the sockets
collector alone against node_exporter's matching collectors, alternated scrape by scrape in one
network namespace per mix and size.

Run as root from the repository root:

    .venv/bin/python bench/bench_scrape.py [--mixes web,udp,unix,pairs] [--sizes 1000,10000,100000]
        [--udp-sockets 50000] [--unix-sockets 100000] [--rounds 20]

The mixes (bench/make_mix.py, bench/make_sockets.py):

* ``web``: N TCP sockets as on a busy web or proxy host: 61% TIME_WAIT (half on the listening
  ports, half on ephemeral ports), 30% established, 5% CLOSE_WAIT, 3% FIN_WAIT2, 1% listeners,
  each with connections, a quarter of them (and their connections) IPv6; one size per --sizes;
* ``udp``: --udp-sockets UDP sockets, 1% bound and unconnected (listeners), the rest connected
  to them, as on a DNS or QUIC host;
* ``unix``: --unix-sockets unix sockets (socketpairs, a tenth of them datagram, and 0.1%
  listeners), as on a host full of local IPC;
* ``pairs``: N TCP sockets, half ESTABLISHED, half TIME_WAIT, a listener per 20,000 (the first
  mix this benchmark had, kept for comparison); one size per --sizes.

For each mix and size it makes a fresh network namespace holding the sockets and starts, inside
it:

* this exporter with its default collectors ("full");
* node_exporter with --collector.disable-defaults --collector.tcpstat --collector.netstat
  --collector.sockstat --collector.netdev --collector.network_route ("same ground": the
  default scrape's ground minus listeners and ports), plus --collector.udp_queues for ``udp``;
* this exporter with only the sockets collector ("alone"), and node_exporter with only the
  collectors that cover the mix's sockets: tcpstat (web, pairs), udp_queues and sockstat (udp),
  sockstat (unix; node_exporter counts no unix socket states).

Each round scrapes all four once, in turn (each round starting with the next), over kept-alive
HTTP connections (so scraping adds no sockets), times the kernel's own dumps of the tables a
scrape reads (TCP of both families and unix, plus UDP of both families for ``udp``; sendto and
recv only, nothing decoded) and runs ``ss`` on the mix's table. It prints, per mix and size,
the median scrape time of each, the ratios, CPU seconds per scrape (the growth over the rounds
of the servers' threads' run time in /proc/<pid>/task/<tid>/schedstat, exact to the nanosecond,
divided by the rounds, of which there are --rounds or more, up to ten times as many, until our
full exporter has spent a CPU second; from process_cpu_seconds_total, in 10 ms ticks, where a
thread came or went), series and bytes per scrape, the peak RSS (VmHWM) of each and the growth
of ours during the timed scrapes (VmHWM after minus VmRSS before: one scrape's transient peak
shows there), with --rss-scrapes N the growth of our VmRSS and VmHWM over N more scrapes of the
full exporter (in namespaces of at most --rss-max-sockets), the netlink dumps per scrape, the
kernel's dump time and its share of our scrapes, the median per-collector time of the full
scrape, the TCP sockets of the whole host (sockstat "alloc": the kernel walks every namespace's
sockets on a dump) and the 1-minute load average at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, ROOT)

from common import (  # noqa: E402
    connect_in,
    cpu_ns,
    make_mix_namespace,
    make_namespace,
    rss_kib,
    scrape,
    setns,
    timed,
    wait_up,
)

from exporter.netlink import requests as req  # noqa: E402
from exporter.netlink.transport import NLMSG_DONE, NLMSG_ERROR, NLMSG_HDR, dump  # noqa: E402

NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
SAME_GROUND = ["--collector.tcpstat", "--collector.netstat", "--collector.sockstat",
               "--collector.netdev", "--collector.network_route"]


@dataclass(frozen=True)
class Mix:
    unit: str  # what N counts, for the tables
    make: Callable[[str, int], List[subprocess.Popen]]
    node_extra: Tuple[str, ...]  # added to node_exporter's same ground
    node_alone: Tuple[str, ...]  # node_exporter's collectors matching our sockets collector
    ss: Tuple[str, ...]
    counted: Callable[[str], float]  # sockets of the mix seen by our sockets collector


def _tcp_seen(body: str) -> float:
    return sum(v for lab, v in samples(body, "netstat_sockets").items()
               if 'protocol="tcp"' in lab)


def _udp_seen(body: str) -> float:
    return sum(v for lab, v in samples(body, "netstat_sockets").items()
               if 'protocol="udp"' in lab)


def _unix_seen(body: str) -> float:
    # by type and state up to --collector.sockets.unix-states-max, else the kernel's count
    return (sum(samples(body, "netstat_sockets_unix").values())
            or sum(samples(body, "netstat_sockstat_unix_inuse_sockets").values()))


MIXES: Dict[str, Mix] = {
    "web": Mix("TCP sockets", lambda ns, n: make_mix_namespace(ns, "web", n), (),
               ("--collector.tcpstat",), ("-tan",), _tcp_seen),
    "udp": Mix("UDP sockets", lambda ns, n: make_mix_namespace(ns, "udp", n),
               ("--collector.udp_queues",), ("--collector.udp_queues", "--collector.sockstat"),
               ("-uan",), _udp_seen),
    "unix": Mix("unix sockets", lambda ns, n: make_mix_namespace(ns, "unix", n), (),
                ("--collector.sockstat",), ("-xan",), _unix_seen),
    "pairs": Mix("TCP sockets", make_namespace, (), ("--collector.tcpstat",), ("-tan",),
                 _tcp_seen),
}


def samples(body: str, name: str) -> Dict[str, float]:
    """Samples of one metric: label text -> value."""
    out = {}
    for line in body.splitlines():
        if line.startswith(name) and line[len(name)] in "{ ":
            key, val = line.rsplit(" ", 1)
            out[key[len(name):]] = float(val)
    return out


def series(body: str) -> int:
    return sum(1 for line in body.splitlines() if line and not line.startswith("#"))


def cpu(body: str) -> float:
    return samples(body, "process_cpu_seconds_total")[""]


def host_tcp_sockets() -> int:
    """TCP sockets allocated on the whole host (/proc/net/sockstat 'alloc' is host-wide)."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("alloc") + 1])
    return 0


class KernelDumps:
    """The sock_diag dumps a scrape of the mix makes, timed with nothing decoded: one netlink
    socket opened inside the namespace, each dump read until NLMSG_DONE."""

    def __init__(self, ns: str, udp: bool) -> None:
        box: Dict[str, socket.socket] = {}

        def open_in() -> None:
            setns(ns)
            box["s"] = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4)

        t = threading.Thread(target=open_in)
        t.start()
        t.join()
        self.sock = box["s"]
        self.requests: List[Tuple[bytes, int]] = [
            (req.tcp_request_both_families(), req.TCPDIAG_GETSOCK),
            (req.unix_request(), 20)]
        if udp:
            self.requests += [(req.inet_request(f, req.IPPROTO_UDP), 20)
                              for f in (socket.AF_INET, socket.AF_INET6)]

    @staticmethod
    def _handler(buf: bytearray, n: int) -> Tuple[bool, bool]:
        if NLMSG_HDR.unpack_from(buf, 0)[1] == NLMSG_ERROR:
            raise OSError("sock_diag refused a dump")
        return NLMSG_HDR.unpack_from(buf, n - 20)[:2] == (20, NLMSG_DONE), False

    def time(self) -> float:
        t0 = time.perf_counter()
        for payload, msg_type in self.requests:
            dump(payload, self._handler, sock=self.sock, msg_type=msg_type)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.sock.close()


def start(ns: str, mix: Mix) -> Dict[str, Tuple[subprocess.Popen, int]]:
    env = dict(os.environ, PYTHONPATH=ROOT)
    ours = [sys.executable, "-m", "exporter"]
    cmds = {
        "full": (ours + ["--web.listen-address=127.0.0.1:19816"], 19816),
        "node": ([str(NODE_EXPORTER), "--web.listen-address=127.0.0.1:19100",
                  "--collector.disable-defaults", *SAME_GROUND, *mix.node_extra], 19100),
        "alone": (ours + ["--web.listen-address=127.0.0.1:19817",
                          "--collector.disable-defaults", "--collector.sockets"], 19817),
        "node_alone": ([str(NODE_EXPORTER), "--web.listen-address=127.0.0.1:19101",
                        "--collector.disable-defaults", *mix.node_alone], 19101),
    }
    procs = {}
    for name, (cmd, port) in cmds.items():
        procs[name] = (subprocess.Popen(["ip", "netns", "exec", ns, *cmd], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                       port)
    for _, port in procs.values():
        wait_up(ns, port)
    return procs


# CPU seconds of the full exporter that the rounds of one size add up to at least.
MIN_CPU = 1.0


def run_size(name: str, n: int, rounds: int, rss_scrapes: int = 0) -> Dict[str, Any]:
    mix = MIXES[name]
    ns = f"nsbench-{os.getpid()}-{name}-{n}"
    procs: List[subprocess.Popen] = []
    kernel = None
    try:
        procs += mix.make(ns, n)
        servers = start(ns, mix)
        procs += [p for p, _ in servers.values()]
        conns = {k: connect_in(ns, port) for k, (_, port) in servers.items()}
        kernel = KernelDumps(ns, udp=name == "udp")
        for k in conns:  # warm up (imports, first allocations, caches)
            for _ in range(2):
                scrape(conns[k], "/metrics")()
        kernel.time()
        rss_before = rss_kib(servers["full"][0].pid, "VmRSS")
        # The kernel walks host-wide hash tables (every namespace's sockets) on each TCP dump,
        # so what else runs on the machine moves both exporters' times: report it.
        host_tcp = host_tcp_sockets()
        first = {k: cpu(scrape(c, "/metrics")().decode()) for k, c in conns.items()}
        pids = {k: p.pid for k, (p, _) in servers.items()}
        first_ns = {k: cpu_ns(pid) for k, pid in pids.items()}
        times: Dict[str, List[float]] = {k: [] for k in [*conns, "ss", "kernel"]}
        ss_cmd = ["ip", "netns", "exec", ns, "ss", *mix.ss]
        per_collector: Dict[str, List[float]] = {}
        dumps: List[float] = []
        bodies: Dict[str, str] = {}
        order = list(conns)
        # At least `rounds` rounds, and more (up to ten times as many) until the full exporter
        # has spent MIN_CPU seconds: a 5 ms scrape over 20 rounds is 0.1 s of CPU, over which
        # this machine's speed alone moves a ratio by a tenth.
        i = 0
        while i < rounds or (i < 10 * rounds
                             and cpu_ns(pids["full"])[0] - first_ns["full"][0] < MIN_CPU * 1e9):
            # Each round starts with the next server: the hash tables a dump walks are the
            # kernel's, shared, and whoever walks them first after `ss` has swept the caches
            # pays for bringing them back.
            for k in order[i % len(order):] + order[:i % len(order)]:
                c = conns[k]
                t0 = time.perf_counter()
                body = scrape(c, "/metrics")().decode()
                times[k].append(time.perf_counter() - t0)
                bodies[k] = body
                if k == "full":
                    for lab, v in samples(body, "netstat_exporter_collector_duration_seconds"
                                          ).items():
                        per_collector.setdefault(lab.split('"')[1], []).append(v)
                    dumps.append(samples(body, "netstat_exporter_netlink_dumps").get("", 0.0))
            times["kernel"].append(kernel.time())
            times["ss"].append(timed(lambda: subprocess.run(ss_cmd, stdout=subprocess.DEVNULL,
                                                            check=True)))
            i += 1
        rounds = i
        # Every round scraped each server once more after `first`: CPU per scrape, to the
        # nanosecond from the threads' schedstat where the same threads ran throughout (kept-
        # alive connections keep their serving threads), else from the exporters' own
        # process_cpu_seconds_total (10 ms ticks).
        cpu_per, exact = {}, {}
        for k in conns:
            t1, tids1 = cpu_ns(pids[k])
            t0, tids0 = first_ns[k]
            exact[k] = tids0 == tids1
            cpu_per[k] = ((t1 - t0) / 1e9 if exact[k] else cpu(bodies[k]) - first[k]) / rounds
        hwm = {k: rss_kib(p.pid, "VmHWM") for k, (p, _) in servers.items()}
        # Many more scrapes of the full exporter alone: what stays (VmRSS) and what the peak
        # does (VmHWM) over them, a leak's signature rather than one scrape's transient peak.
        long_run = None
        if rss_scrapes:
            pid = servers["full"][0].pid
            rss0, hwm0 = rss_kib(pid, "VmRSS"), rss_kib(pid, "VmHWM")
            for _ in range(rss_scrapes):
                scrape(conns["full"], "/metrics")()
            long_run = (rss_scrapes, (rss_kib(pid, "VmRSS") - rss0) / 1024,
                        (rss_kib(pid, "VmHWM") - hwm0) / 1024)
        return {"mix": name, "n": n, "seen": mix.counted(bodies["alone"]),
                "median": {k: statistics.median(v) for k, v in times.items()},
                "cpu": cpu_per, "cpu_exact": all(exact.values()), "rounds": rounds, "hwm": hwm,
                "rss_before": rss_before,
                "series": {k: series(b) for k, b in bodies.items()},
                "bytes": {k: len(b.encode()) for k, b in bodies.items()},
                "collectors": {k: statistics.median(v) for k, v in per_collector.items()},
                "dumps": statistics.median(dumps) if dumps else 0.0, "host_tcp": host_tcp,
                "long_run": long_run,
                "load": os.getloadavg()[0]}
    finally:
        if kernel is not None:
            kernel.close()
        for p in procs:
            p.kill()
            p.wait()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def report(name: str, results: List[Dict[str, Any]]) -> None:
    mix = MIXES[name]
    ms = 1000.0
    print(f"### {name}: full default scrape against node_exporter's same ground "
          f"({' '.join(SAME_GROUND + list(mix.node_extra))})")
    print()
    print(f"| {mix.unit} | full default scrape | node_exporter same ground | ratio "
          "| CPU/scrape ours | CPU/scrape node | CPU ratio | series ours | series node "
          "| bytes ours | bytes node | peak RSS ours | peak RSS node | RSS growth ours "
          "| netlink dumps/scrape | host TCP sockets | load | rounds |")
    print("| ---: " * 18 + "|")
    for r in results:
        m, c, h, s, b = r["median"], r["cpu"], r["hwm"], r["series"], r["bytes"]
        growth = max(0, h["full"] - r["rss_before"]) / 1024
        print(f"| {int(r['seen']):,} | {m['full'] * ms:.1f} ms | {m['node'] * ms:.1f} ms "
              f"| {m['full'] / m['node']:.2f} | {c['full'] * ms:.2f} ms | {c['node'] * ms:.2f} ms "
              f"| {c['full'] / c['node']:.2f} | {s['full']:,} | {s['node']:,} "
              f"| {b['full'] / 1024:.0f} kB | {b['node'] / 1024:.0f} kB "
              f"| {h['full'] / 1024:.1f} MiB | {h['node'] / 1024:.1f} MiB | {growth:.2f} MiB "
              f"| {r['dumps']:.0f} | {int(r['host_tcp']):,} | {r['load']:.1f} | {r['rounds']} |")
    print()
    ticks = [f"{int(r['seen']):,}" for r in results if not r["cpu_exact"]]
    if ticks:
        print(f"(CPU from process_cpu_seconds_total, 10 ms ticks, at {', '.join(ticks)}: a "
              "server's threads changed during the rounds.)")
        print()
    print(f"### {name}: sockets collector alone against node_exporter "
          f"{' '.join(mix.node_alone)}")
    print()
    print(f"| {mix.unit} | sockets alone | node_exporter | ratio | CPU/scrape ours "
          "| CPU/scrape node | CPU ratio | kernel's dumps | share of alone | share of full "
          f"| ss {' '.join(mix.ss)} | ratio to ss |")
    print("| ---: " * 12 + "|")
    for r in results:
        m, c = r["median"], r["cpu"]
        print(f"| {int(r['seen']):,} | {m['alone'] * ms:.1f} ms | {m['node_alone'] * ms:.1f} ms "
              f"| {m['alone'] / m['node_alone']:.2f} | {c['alone'] * ms:.2f} ms "
              f"| {c['node_alone'] * ms:.2f} ms "
              f"| {c['alone'] / max(c['node_alone'], 1e-9):.2f} | {m['kernel'] * ms:.1f} ms "
              f"| {m['kernel'] / m['alone']:.0%} | {m['kernel'] / m['full']:.0%} "
              f"| {m['ss'] * ms:.1f} ms | {m['alone'] / m['ss']:.2f} |")
    print()
    long_runs = [r for r in results if r["long_run"]]
    if long_runs:
        print(f"### {name}: the full exporter over many more scrapes")
        print()
        print(f"| {mix.unit} | scrapes | VmRSS growth | VmHWM growth |")
        print("| ---: | ---: | ---: | ---: |")
        for r in long_runs:
            k, rss, peak = r["long_run"]
            print(f"| {int(r['seen']):,} | {k:,} | {rss:.2f} MiB | {peak:.2f} MiB |")
        print()
    names = sorted({k for r in results for k in r["collectors"]})
    print(f"### {name}: per collector, medians of the full scrape")
    print()
    print(f"| {mix.unit} | " + " | ".join(names) + " |")
    print("| ---: | " + " | ".join("---:" for _ in names) + " |")
    for r in results:
        col = r["collectors"]
        print(f"| {int(r['seen']):,} | "
              + " | ".join(f"{col.get(k, 0) * ms:.1f} ms" for k in names) + " |")
    print(flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--mixes", default="web,udp,unix,pairs")
    ap.add_argument("--sizes", default="1000,10000,100000", help="sizes of web and pairs")
    ap.add_argument("--udp-sockets", type=int, default=50000)
    ap.add_argument("--unix-sockets", type=int, default=100000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--rss-scrapes", type=int, default=0,
                    help="after the rounds, scrape the full exporter this many more times and "
                         "report its VmRSS and VmHWM growth over them")
    ap.add_argument("--rss-max-sockets", type=int, default=10000,
                    help="only in namespaces of at most this many sockets")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_scrape.py: run as root (it creates a network namespace)")
    if NODE_EXPORTER is None:
        raise SystemExit("bench_scrape.py: node_exporter not found "
                         "(apt-get install prometheus-node-exporter)")
    sizes = {"udp": [args.udp_sockets], "unix": [args.unix_sockets]}
    print(f"load at start: {os.getloadavg()[0]:.1f}")
    print()
    for name in args.mixes.split(","):
        if name not in MIXES:
            raise SystemExit(f"bench_scrape.py: unknown mix {name!r} (one of {', '.join(MIXES)})")
        ns_sizes = sizes.get(name) or [int(x) for x in args.sizes.split(",")]
        report(name, [run_size(name, n, args.rounds,
                               args.rss_scrapes if n <= args.rss_max_sockets else 0)
                      for n in ns_sizes])


if __name__ == "__main__":
    main()
