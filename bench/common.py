"""What the benchmarks share: a network namespace of N loopback sockets (the half-established,
half-TIME_WAIT pairs of the first benchmark, or one of the mixes of bench/make_mix.py), entering
it, and scraping an exporter that runs inside it over a kept-alive HTTP connection."""

from __future__ import annotations

import ctypes
import http.client
import os
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, FrozenSet, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def setns(name: str) -> None:
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    os.close(fd)


def connect_in(ns: str, port: int) -> http.client.HTTPConnection:
    """A connection made from inside ``ns`` (the socket stays in that namespace). Raises the
    connect error here: left unconnected, http.client would connect again from the host's
    namespace on the first request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    failed: List[OSError] = []

    def connect() -> None:
        try:
            setns(ns)
            conn.connect()
        except OSError as e:
            failed.append(e)

    t = threading.Thread(target=connect)
    t.start()
    t.join()
    if failed:
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


def cpu_ns(pid: int) -> Tuple[int, FrozenSet[int]]:
    """CPU time of a process's threads now, in nanoseconds (the first field of each thread's
    /proc/<pid>/task/<tid>/schedstat: sum_exec_runtime, user and system), and the threads it
    sums. Exact, where /proc/<pid>/stat counts 10 ms ticks; but a thread that exits takes its
    time with it, so two readings compare only over the same threads."""
    total, tids = 0, []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            continue  # exited while listed
        tids.append(int(tid))
    return total, frozenset(tids)


def new_namespace(ns: str) -> None:
    """Create network namespace ``ns`` with loopback up, the benchmarks' ports reserved and
    room for TIME_WAIT."""
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                    "net.ipv4.ip_local_port_range=1024 65000",
                    # keep the exporters' ports and the makers' listeners out of the range
                    "net.ipv4.ip_local_reserved_ports=19100-19101,19816-19817,20000-21000",
                    "net.ipv4.tcp_max_tw_buckets=2000000"], check=True)


def make_namespace(ns: str, n: int) -> List[subprocess.Popen]:
    """Create network namespace ``ns`` holding about ``n`` loopback TCP sockets, half of them
    ESTABLISHED (pairs held open, spread over processes so that none needs more descriptors
    than the limit allows), half TIME_WAIT. Returns the processes holding them."""
    new_namespace(ns)
    pairs, tw = n // 4, n - 2 * (n // 4)
    per = 8000
    shares = [(min(per, pairs - i), 0) for i in range(0, pairs, per)] or [(0, 0)]
    shares[-1] = (shares[-1][0], tw)
    makers = []
    for k, (p, t) in enumerate(shares):
        makers.append(subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable,
             os.path.join(ROOT, "bench", "make_sockets.py"), str(p), str(t), str(20000 + 100 * k)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    for mk in makers:
        assert mk.stdout is not None and mk.stdout.readline().strip() == "ready"
    return makers


# Descriptors one make_mix.py process holds at most (the hard limit here is 20,000).
SHARE_FDS = 15000


def _split(total: int, k: int) -> List[int]:
    q, r = divmod(total, k)
    return [q + (1 if i < r else 0) for i in range(k)]


def web_mix(n: int) -> Dict[str, int]:
    """The ``web`` mix of ``n`` TCP sockets: 1% listeners, 30% established, 5% CLOSE_WAIT (3%
    with the client in FIN_WAIT2, 2% whose client has gone), 3% FIN_WAIT2, the rest (61%)
    TIME_WAIT, half on the listening ports (the server closed first), half on ephemeral ports."""
    listeners, est, shut, cw = max(1, n // 100), round(0.15 * n), round(0.03 * n), round(0.02 * n)
    tw = max(0, n - listeners - 2 * est - 2 * shut - cw)
    return {"listeners": listeners, "established": est, "shut": shut, "close_wait": cw,
            "tw_server": tw // 2, "tw_client": tw - tw // 2}


def make_mix_namespace(ns: str, mix: str, n: int) -> List[subprocess.Popen]:
    """Create network namespace ``ns`` holding the ``n`` sockets of ``mix`` (web, udp or unix;
    see bench/make_mix.py), spread over processes of at most SHARE_FDS descriptors. Returns the
    processes holding them, once every one is ready and (web) the clients that closed with a
    one-second FIN_WAIT2 are gone."""
    new_namespace(ns)
    first = 20000
    shares: List[List[str]] = []
    if mix == "web":
        w = web_mix(n)
        fds = w["listeners"] + 2 * w["established"] + 2 * w["shut"] + w["close_wait"]
        k = -(-fds // SHARE_FDS)
        cols = {key: _split(v, k) for key, v in w.items()}
        for i in range(k):
            shares.append(["web", str(cols["listeners"][i]), str(first),
                           *(str(cols[key][i]) for key in ("established", "shut", "close_wait",
                                                          "tw_server", "tw_client"))])
            first += cols["listeners"][i]
    elif mix == "udp":
        listeners = max(1, n // 100)
        k = -(-n // SHARE_FDS)
        for ln, conn in zip(_split(listeners, k), _split(n - listeners, k)):
            shares.append(["udp", str(ln), str(first), str(conn)])
            first += ln
    elif mix == "unix":
        listeners = max(1, n // 1000)
        pairs = (n - listeners) // 2
        dgram = pairs // 10
        k = -(-n // SHARE_FDS)
        for st, dg, ln in zip(_split(pairs - dgram, k), _split(dgram, k), _split(listeners, k)):
            shares.append(["unix", str(st), str(dg), str(ln)])
    else:
        raise ValueError(f"unknown mix {mix!r}")
    makers = []
    for args in shares:
        makers.append(subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable,
             os.path.join(ROOT, "bench", "make_mix.py"), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    for mk in makers:
        assert mk.stdout is not None and mk.stdout.readline().strip() == "ready"
    if mix == "web":
        want = web_mix(n)["shut"]
        deadline = time.monotonic() + 30
        while _count_state(ns, "fin-wait-2") != want:
            if time.monotonic() > deadline:
                raise SystemExit(f"{ns}: FIN_WAIT2 sockets did not settle to {want}")
            time.sleep(0.2)
    return makers


def _count_state(ns: str, state: str) -> int:
    out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-Htan", "state", state],
                         capture_output=True, text=True, check=True).stdout
    return len(out.splitlines())


def measure(one: Callable[[], object], rounds: int) -> Tuple[List[float], List[float]]:
    """Run ``one`` twice to warm up, then ``rounds`` times: the wall-clock and the CPU (user +
    system) seconds of each timed run."""
    one()
    one()
    wall: List[float] = []
    cpu: List[float] = []
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        one()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def profile_top(one: Callable[[], object], passes: int = 3, rows: int = 20) -> None:
    """Run ``one`` ``passes`` times under cProfile and print the ``rows`` costliest functions by
    their own time (what the A/B benchmarks' --profile prints)."""
    import cProfile
    import pstats

    p = cProfile.Profile()
    p.enable()
    for _ in range(passes):
        one()
    p.disable()
    pstats.Stats(p).sort_stats("tottime").print_stats(rows)
