#!/usr/bin/env python3
"""Cost of the netns collector per tier and per namespace, against reading /proc/<pid>/net/tcp
and tcp6 for every namespace the way cAdvisor does.

Run as root from the repository root:

    python3 bench/bench_netns.py [--namespaces 50] [--sockets 20000] [--rounds 15]

The benchmark re-executes itself in a new PID and mount namespace (``unshare --pid --fork
--mount-proc``), so /proc shows only its own processes: the collector finds exactly the
namespaces made here, whatever else runs on the machine. It makes --namespaces network
namespaces, each with a process holding its share of --sockets loopback TCP sockets (established
pairs, bench/make_sockets.py), then alternates, round by round, one scrape of each:

* tier 1: the collector with its default flags (/proc/<pid>/net counters, no privilege);
* tier 2: the collector with --collector.netns.sockets (sock_diag inside every namespace, the
  sockets kept open across scrapes; the first scrape, which opens them, is reported apart);
* "cAdvisor way": read /proc/<pid>/net/tcp and tcp6 of one process per namespace, once only
  reading the text (the kernel's cost), once also parsing it with this project's reader.

Times are wall-clock medians of the collector's collect() in this process (no HTTP), per scrape
and per namespace read, with the CPU time (user + system, getrusage) per scrape and the process's
peak RSS. Then it adds namespaces with no sockets (a ``sleep`` each) to time tier 1 for 100
namespaces, and more to show the time budget holding a tier 2 scrape under 1 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from exporter.collectors import netns as collector  # noqa: E402
from exporter.config import Config  # noqa: E402
from exporter.procfs import net_sockets  # noqa: E402

TAG = f"bnn{os.getpid()}"


class Namespaces:
    def __init__(self) -> None:
        self.names: List[str] = []
        self.holders: List[subprocess.Popen] = []

    def add(self, sockets: int) -> int:
        name = f"{TAG}-{len(self.names)}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
                       check=True)
        self.names.append(name)
        if sockets:
            p = subprocess.Popen(["ip", "netns", "exec", name, sys.executable,
                                  os.path.join(ROOT, "bench", "make_sockets.py"),
                                  str(sockets // 2), "0", "20000"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert p.stdout is not None
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise SystemExit(f"socket holder in {name} failed")
        else:
            p = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "3600"],
                                 stdin=subprocess.PIPE)
            # Until `ip` has entered the namespace and become `sleep`, the process is still in
            # this one: the collector would count it here.
            want = os.stat(f"/run/netns/{name}").st_ino
            deadline = time.monotonic() + 10
            while os.stat(f"/proc/{p.pid}/ns/net").st_ino != want:
                if time.monotonic() > deadline:
                    raise SystemExit(f"sleep in {name} did not enter its namespace")
                time.sleep(0.005)
        self.holders.append(p)
        return p.pid

    def close(self) -> None:
        for p in self.holders:
            if p.stdin:
                p.stdin.close()
            p.kill()
            p.wait()
        for name in self.names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def make(tier2: bool, budget: float = 60.0) -> collector.NetnsCollector:
    opts = collector.NetnsOptions(sockets=tier2, time_budget=budget, max_namespaces=100000)
    return collector.NetnsCollector(Config(collectors=frozenset({"netns"}),
                                           options={"netns": opts}))


def once(c: collector.NetnsCollector) -> Callable[[], list]:
    return lambda: list(c.collect())


def read_count(metrics: list) -> Tuple[int, int]:
    """(namespaces read by tier 1, namespaces with tier 2 states) in one scrape's output."""
    t1 = sum(len(m.samples) for m in metrics if m.name == "netstat_netns_info")
    t2 = sum(1 for m in metrics if m.name == "netstat_netns_tcp_listeners" for _ in m.samples)
    return t1, t2


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(fn: Callable[[], object]) -> Tuple[float, float, object]:
    c0, t0 = cpu(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, cpu() - c0, out


def cadvisor_way(pids: List[int], parse: bool) -> Callable[[], int]:
    def go() -> int:
        n = 0
        for pid in pids:
            for name in ("tcp", "tcp6"):
                root = f"/proc/{pid}"
                if parse:
                    rows = net_sockets.read_socket_rows(root, name)
                    n += len(rows) if rows is not None else 0
                else:
                    with open(f"{root}/net/{name}", "rb") as f:
                        n += f.read().count(b"\n") - 1
        return n
    return go


def row(name: str, times: List[float], cpus: List[float], per: int) -> str:
    med = statistics.median(times)
    return (f"| {name} | {med * 1000:.1f} ms | {med * 1000 / per:.2f} ms | "
            f"{statistics.median(cpus) * 1000:.1f} ms |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--namespaces", type=int, default=50)
    p.add_argument("--sockets", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--budget-namespaces", type=int, default=300,
                   help="namespaces for the time-budget run")
    a = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_netns.py: run as root (creates network namespaces)")
    if os.getpid() != 1:
        unshare = shutil.which("unshare")
        if unshare is None:
            raise SystemExit("bench_netns.py: needs unshare (util-linux)")
        os.execv(unshare, [unshare, "--pid", "--fork", "--mount-proc", sys.executable,
                           os.path.abspath(__file__), *sys.argv[1:]])
    # The copies of other namespaces' nsfs mounts (/run/netns/* made by others) that unshare
    # gave this private mount namespace: dropping them here leaves the host's untouched and the
    # collector with only the namespaces made below.
    with open("/proc/self/mountinfo") as f:
        for mount in {line.split()[4] for line in f if " - nsfs " in line}:
            subprocess.run(["umount", "-l", mount], capture_output=True)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nss = Namespaces()
    try:
        per_ns = a.sockets // a.namespaces
        pids = [1] + [nss.add(per_ns) for _ in range(a.namespaces)]
        total = len(pids)
        print(f"{a.namespaces} namespaces + this one, {per_ns} sockets each "
              f"({per_ns * a.namespaces} in all); kernel {os.uname().release}, "
              f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")

        t1, t2 = make(False), make(True)
        first_t, first_c, out = measure(once(t2))
        assert read_count(out) == (total, total), read_count(out)  # type: ignore[arg-type]
        runs: Dict[str, Tuple[List[float], List[float]]] = {
            k: ([], []) for k in ("tier 1", "tier 2", "read tcp+tcp6", "read+parse tcp+tcp6")}
        fns: Dict[str, Callable[[], object]] = {
            "tier 1": once(t1), "tier 2": once(t2),
            "read tcp+tcp6": cadvisor_way(pids, False),
            "read+parse tcp+tcp6": cadvisor_way(pids, True)}
        for _ in range(a.rounds):
            for k, fn in fns.items():
                wall, c, out = measure(fn)
                runs[k][0].append(wall)
                runs[k][1].append(c)
                if k.startswith("tier"):
                    got = read_count(out)  # type: ignore[arg-type]
                    assert got[0] == total and got[1] == (total if k == "tier 2" else 0), got
        print()
        print("| | per scrape | per namespace | CPU per scrape |")
        print("| --- | --- | --- | --- |")
        for k, (times, cpus) in runs.items():
            print(row(k, times, cpus, total))
        print(f"| tier 2, first scrape (opens {total} sockets) | {first_t * 1000:.1f} ms | "
              f"{first_t * 1000 / total:.2f} ms | {first_c * 1000:.1f} ms |")
        t2_med = statistics.median(runs["tier 2"][0])
        for k in ("read tcp+tcp6", "read+parse tcp+tcp6"):
            print(f"tier 2 / {k}: {t2_med / statistics.median(runs[k][0]):.2f}x")

        # Tier 1 for 100 namespaces: add socket-less ones.
        while len(pids) < 100:
            pids.append(nss.add(0))
        times = []
        for _ in range(a.rounds):
            wall, _c, out = measure(once(t1))
            assert read_count(out)[0] == len(pids)  # type: ignore[arg-type]
            times.append(wall)
        print(f"\ntier 1, {len(pids)} namespaces: {statistics.median(times) * 1000:.1f} ms "
              f"per scrape (median; min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f})")

        # The budget: many namespaces, tier 2, default budget against none.
        while len(pids) < a.budget_namespaces:
            pids.append(nss.add(0))
        bounded, unbounded = make(True, 0.5), make(True, 60.0)
        once(bounded)()
        once(unbounded)()  # open the sockets first
        res: Dict[str, List[Tuple[float, int]]] = {"budget 0.5 s": [], "no budget": []}
        for _ in range(max(3, a.rounds // 3)):
            for k, c in (("budget 0.5 s", bounded), ("no budget", unbounded)):
                wall, _c, out = measure(once(c))
                res[k].append((wall, read_count(out)[1]))  # type: ignore[arg-type]
        print(f"\ntier 2, {len(pids)} namespaces:")
        for k, v in res.items():
            print(f"  {k}: {statistics.median(w for w, _ in v) * 1000:.0f} ms per scrape, "
                  f"max {max(w for w, _ in v) * 1000:.0f} ms, "
                  f"{min(n for _, n in v)}-{max(n for _, n in v)} namespaces with states")
        for c in (t2, bounded, unbounded):
            c.close()
        with open("/proc/self/status") as f:
            hwm = next(line.split()[1] for line in f if line.startswith("VmHWM"))
        print(f"\npeak RSS of the benchmark process: {int(hwm) // 1024} MiB")
    finally:
        nss.close()


if __name__ == "__main__":
    main()
