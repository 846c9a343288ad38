"""What the benchmarks share: a network namespace of N loopback TCP sockets, entering it, and
scraping an exporter that runs inside it over a kept-alive HTTP connection."""

from __future__ import annotations

import ctypes
import http.client
import os
import subprocess
import sys
import threading
import time
from typing import Callable, List

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


def make_namespace(ns: str, n: int) -> List[subprocess.Popen]:
    """Create network namespace ``ns`` holding about ``n`` loopback TCP sockets, half of them
    ESTABLISHED (pairs held open, spread over processes so that none needs more descriptors
    than the limit allows), half TIME_WAIT. Returns the processes holding them."""
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                    "net.ipv4.ip_local_port_range=1024 65000",
                    # keep the exporters' ports and the makers' listeners out of the range
                    "net.ipv4.ip_local_reserved_ports=19100-19101,19816-19817,20000-21000",
                    "net.ipv4.tcp_max_tw_buckets=2000000"], check=True)
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
