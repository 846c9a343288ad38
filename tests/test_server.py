"""The HTTP server in-process: routes, collect[] filtering, the concurrent-scrape cap, a failing
collector, compression, keep-alive."""

from __future__ import annotations

import gzip
import http.client
import os
import threading
from typing import Iterator, List, Tuple

import pytest
from helpers import FIXTURES, http_get, parse, poll, select, value
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.collectors.listeners import ListenersOptions
from exporter.collectors.sockets import SocketsOptions
from exporter.config import Config, ListenAddress
from exporter.scrape import Exporter
from exporter.web.server import make_servers


class Broken:
    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("netstat_half_written", "emitted before the failure")
        g.add_metric([], 1)
        yield g
        raise OSError(13, "Permission denied: /proc/net/whatever")


class Slow:
    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def collect(self) -> Iterator[Metric]:
        self.entered.set()
        assert self.release.wait(30)
        yield GaugeMetricFamily("netstat_slow", "slow collector", value=1)


@pytest.fixture
def server(request):
    extra = getattr(request, "param", None) or {}
    cfg = Config(listen_addresses=(ListenAddress("127.0.0.1", 0),), max_requests=1,
                 collectors=frozenset({"sockets"}),
                 options={"sockets": SocketsOptions(source="procfs")},
                 procfs=f"{FIXTURES}/proc/live")
    (srv,) = make_servers(cfg, Exporter(cfg, extra=extra))
    # shutdown() waits for serve_forever to look, every poll_interval (0.5 s unless given).
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True)
    t.start()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def test_landing_health_404_405(server) -> None:
    status, headers, body = http_get(server.base + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'href="/metrics"' in body and b"<li>sockets</li>" in body
    assert http_get(server.base + "/-/healthy")[0] == 200
    assert http_get(server.base + "/metricsx")[0] == 404
    assert http_get(server.base + "/favicon.ico")[0] == 404
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    try:
        conn.request("POST", "/metrics", body=b"x")
        r = conn.getresponse()
        assert r.status == 405 and r.getheader("Allow") == "GET, HEAD"
    finally:
        conn.close()


@pytest.mark.parametrize("server", [{"broken": Broken()}], indirect=True)
def test_failing_collector_drops_only_its_own_metrics(server) -> None:
    s = parse(http_get(server.base + "/metrics")[2].decode())
    assert value(s, "netstat_exporter_collector_success", collector="broken") == 0
    assert value(s, "netstat_exporter_collector_success", collector="sockets") == 1
    assert not select(s, "netstat_half_written")  # nothing of the failed collector leaks out
    assert value(s, "netstat_sockets", protocol="tcp", family="ipv4", state="listen") == 2


@pytest.mark.parametrize("server", [{"broken": Broken()}], indirect=True)
def test_collect_and_exclude_filters(server) -> None:
    s = parse(http_get(server.base + "/metrics?collect[]=sockets")[2].decode())
    assert {lbl["collector"] for _, lbl, _ in select(s, "netstat_exporter_collector_success")} \
        == {"sockets"}
    s = parse(http_get(server.base + "/metrics?exclude[]=sockets")[2].decode())
    assert not select(s, "netstat_sockets")
    assert value(s, "netstat_exporter_collector_success", collector="broken") == 0
    status, _, body = http_get(server.base + "/metrics?collect[]=nosuch")
    assert status == 400 and b"nosuch" in body
    assert http_get(server.base + "/metrics?exclude[]=nosuch")[0] == 400


slow = Slow()


@pytest.mark.parametrize("server", [{"slow": slow}], indirect=True)
def test_concurrent_scrape_cap_and_threading(server) -> None:
    results: List[int] = []
    first = threading.Thread(target=lambda: results.append(http_get(server.base + "/metrics")[0]))
    first.start()
    try:
        assert slow.entered.wait(10)
        # The one scrape slot is taken: another scrape is refused at once...
        status, _, body = http_get(server.base + "/metrics", timeout=10)
        assert status == 503, body
        # ...while the landing page and health check still answer.
        assert http_get(server.base + "/", timeout=10)[0] == 200
        assert http_get(server.base + "/-/healthy", timeout=10)[0] == 200
    finally:
        slow.release.set()
        first.join(30)
    assert results == [200]
    assert http_get(server.base + "/metrics")[0] == 200  # the slot was given back


def test_gzip_openmetrics_and_keepalive(server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    try:
        conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        r = conn.getresponse()
        assert r.getheader("Content-Encoding") == "gzip"
        text = gzip.decompress(r.read()).decode()
        assert "netstat_sockets{" in text
        # Same connection again (HTTP/1.1 keep-alive), asking for OpenMetrics.
        conn.request("GET", "/metrics",
                     headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        r = conn.getresponse()
        assert r.status == 200
        assert r.getheader("Content-Type").startswith("application/openmetrics-text")
        assert r.read().rstrip().endswith(b"# EOF")
    finally:
        conn.close()


def test_head_request(server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    try:
        conn.request("HEAD", "/")
        r = conn.getresponse()
        assert r.status == 200 and r.read() == b""
    finally:
        conn.close()


# --- identical concurrent scrapes share one collection; durations are work, not waits ---

class Counting:
    """Counts collections and holds each until released."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()
        self.entered = threading.Event()
        self.release = threading.Event()

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            self.calls += 1
        self.entered.set()
        assert self.release.wait(30)
        yield GaugeMetricFamily("netstat_counting", "collections so far", value=self.calls)


@pytest.fixture
def counting_server() -> Iterator[Tuple[object, Counting]]:
    counting = Counting()
    cfg = Config(listen_addresses=(ListenAddress("127.0.0.1", 0),), max_requests=20,
                 collectors=frozenset({"sockets"}),
                 options={"sockets": SocketsOptions(source="procfs")},
                 procfs=f"{FIXTURES}/proc/live")
    (srv,) = make_servers(cfg, Exporter(cfg, extra={"counting": counting}))
    # shutdown() waits for serve_forever to look, every poll_interval (0.5 s unless given).
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True)
    t.start()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"  # type: ignore[attr-defined]
    yield srv, counting
    counting.release.set()
    srv.shutdown()
    srv.server_close()


def test_identical_concurrent_scrapes_share_one_collection(counting_server) -> None:
    srv, counting = counting_server
    n = 6
    results: List[Tuple[int, bytes]] = []
    lock = threading.Lock()

    def scrape() -> None:
        status, _, body = http_get(srv.base + "/metrics", timeout=30)
        with lock:
            results.append((status, body))

    threads = [threading.Thread(target=scrape) for _ in range(n)]
    for t in threads:
        t.start()
    try:
        assert counting.entered.wait(10)
        # Every scrape is in: one collecting, the others waiting for its result.
        poll(lambda: srv.scrapes.callers() == n, timeout=10, what="all scrapes in flight")
    finally:
        counting.release.set()
        for t in threads:
            t.join(30)
    assert counting.calls == 1
    assert [s for s, _ in results] == [200] * n
    assert len({b for _, b in results}) == 1  # the same body for all
    # A different request (other collectors) is not shared; a later one collects again.
    s = parse(http_get(srv.base + "/metrics?collect[]=counting")[2].decode())
    assert value(s, "netstat_counting") == 2
    assert value(s, "netstat_exporter_http_scrapes_shared_total") == n - 1


def test_collector_duration_leaves_out_waiting_for_the_owner_cache(tmp_path) -> None:
    """Two scrapes running the listeners collector at once serialise on its owner cache; the
    one that waits reports its own work, not the other's."""
    import shutil
    import time

    from exporter.listeners import owners

    proc = str(tmp_path / "proc")
    shutil.copytree(f"{FIXTURES}/listeners/proc", proc, symlinks=True)
    os.makedirs(os.path.join(proc, "2", "fd"), exist_ok=True)  # git holds no empty directory
    ex = Exporter(Config(collectors=frozenset({"listeners"}), procfs=proc,
                         options={"listeners": ListenersOptions(source="procfs")}))
    cache = ex.collectors["listeners"].owners  # type: ignore[attr-defined]
    assert isinstance(cache, owners.OwnerCache)
    real = cache._lock
    contended = threading.Event()

    class Watched:
        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            contended.set()
            return real.acquire(blocking, timeout)

        def release(self) -> None:
            real.release()

        def __enter__(self) -> bool:
            return self.acquire()

        def __exit__(self, *exc: object) -> None:
            self.release()

    cache._lock = Watched()
    held_for = 0.5
    out: List[bytes] = []
    real.acquire()  # another scrape's lookup in progress
    try:
        t = threading.Thread(target=lambda: out.append(generate_latest(ex.target())))
        t0 = time.perf_counter()
        t.start()
        assert contended.wait(10)
        time.sleep(held_for)  # the other lookup's work, which this scrape waits out
    finally:
        real.release()
    t.join(30)
    elapsed = time.perf_counter() - t0
    s = parse(out[0].decode())
    duration = value(s, "netstat_exporter_collector_duration_seconds", collector="listeners")
    assert value(s, "netstat_exporter_collector_success", collector="listeners") == 1
    assert elapsed >= held_for
    assert duration is not None and duration < elapsed - held_for + 0.05, (duration, elapsed)


@pytest.mark.parametrize("server", [{"slow": Slow()}], indirect=True)
def test_503_says_when_to_retry_and_is_counted(server) -> None:
    slow_now = server.exporter.collectors["slow"]
    first = threading.Thread(target=lambda: http_get(server.base + "/metrics?collect[]=slow"))
    first.start()
    try:
        assert slow_now.entered.wait(10)
        status, headers, _ = http_get(server.base + "/metrics", timeout=10)
        assert status == 503 and headers["Retry-After"] == "1"
    finally:
        slow_now.release.set()
        first.join(30)
    s = parse(http_get(server.base + "/metrics")[2].decode())
    assert value(s, "netstat_exporter_http_scrapes_refused_total") == 1
