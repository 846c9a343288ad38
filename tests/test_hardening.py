"""Misbehaving clients: half requests, drip-fed headers, stalled TLS handshakes, oversized
request lines and headers, request bodies, connection floods. None of them may block a
concurrent scrape, and each is dropped within --web.read-header-timeout."""

from __future__ import annotations

import re
import socket
import ssl
import struct
import subprocess
import time
from typing import Callable, Iterator, List, Tuple, TypeVar

import pytest
from helpers import http_get, parse, poll
from tlshelpers import PKI, bcrypt_hash, client_context, exporter_with, https_get, tls_web_config

from exporter.web.handler import MAX_HEADER_BYTES, MAX_REQUEST_LINE
from exporter.web.limits import MAX_CONNECTIONS

TIMEOUT = 2.0  # --web.read-header-timeout for these tests
T = TypeVar("T")


@pytest.fixture(scope="module")
def plain() -> Iterator[int]:
    with exporter_with(f"--web.read-header-timeout={TIMEOUT}") as ex:
        yield ex.port


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _accept_queue(port: int) -> int:
    """What waits in the accept queue of the loopback listener on ``port`` (`ss`'s Recv-Q)."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                         check=True, timeout=10).stdout.split()
    assert out, f"nothing listens on port {port}"
    return int(out[1])


def _flood(port: int, n: int, into: List[socket.socket]) -> None:
    """``n`` connections to ``port``, appended to ``into``, made no faster than the server
    accepts them: past its accept backlog (64) the kernel drops the SYN and the client sends
    it again a second later, which took the floods 3 to 4 s of retransmission timeouts."""
    for i in range(n):
        into.append(_connect(port))
        if i % 32 == 31:
            poll(lambda: _accept_queue(port) == 0, timeout=10, interval=0.002,
                 what="the server to accept the connections so far")


def _closed_by_server(s: socket.socket, within: float = 15.0) -> bool:
    """Poll until the server closes ``s`` (recv returns b"" or the connection resets)."""
    def closed() -> bool:
        s.settimeout(0.2)
        try:
            return s.recv(65536) == b""
        except socket.timeout:
            return False
        except OSError:
            return True
    return poll(closed, timeout=within, interval=0.0, what="server to close the connection")


def _healthy(s: socket.socket) -> bytes:
    """Ask /-/healthy over ``s`` with HTTP/1.1 (the connection may be kept alive); the whole
    response."""
    s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while not got.endswith(b"OK\n"):
        chunk = s.recv(4096)
        assert chunk, got
        got += chunk
    return got


def _scrape_ok(port: int) -> bool:
    status, _, body = http_get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    return status == 200 and bool(parse(body.decode()))


def _raw(port: int, data: bytes) -> bytes:
    with _connect(port) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
    return out


def test_half_request_does_not_block_scrape_and_is_dropped(plain: int) -> None:
    stalled = [_connect(plain) for _ in range(20)]
    try:
        for s in stalled:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # no blank line: half a request
        silent = _connect(plain)  # and one that sends nothing at all
        stalled.append(silent)
        assert _scrape_ok(plain)
        for s in stalled:
            assert _closed_by_server(s)
    finally:
        for s in stalled:
            s.close()
    assert _scrape_ok(plain)


def test_drip_fed_headers_are_cut_off_at_the_deadline(plain: int) -> None:
    """A client sending a header byte every 50 ms never times out a per-recv timeout; the
    deadline for the whole head ends it anyway."""
    s = _connect(plain)
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\n")
        t0 = time.monotonic()
        closed = False
        for _ in range(int(6 * TIMEOUT / 0.05)):  # bounded: at most 3x the deadline
            try:
                s.sendall(b"X")
            except OSError:
                closed = True
                break
            s.settimeout(0.05)
            try:
                if s.recv(1024) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
            except OSError:
                closed = True
                break
        assert closed, f"still open after {time.monotonic() - t0:.1f}s of drip-feeding"
        assert _scrape_ok(plain)
    finally:
        s.close()


def test_kept_alive_connection_stalling_in_its_second_request_is_dropped(plain: int) -> None:
    s = _connect(plain)
    try:
        first = _healthy(s)
        assert first.startswith(b"HTTP/1.1 200 ") and b"Connection: close" not in first
        s.sendall(b"GET /metrics HTTP/1.1\r\n")  # second request, never finished
        assert _scrape_ok(plain)
        assert _closed_by_server(s)
    finally:
        s.close()


def test_pipelined_requests_are_answered_in_turn(plain: int) -> None:
    out = _raw(plain, b"GET /-/healthy HTTP/1.1\r\n\r\n"
                      b"GET /nosuch HTTP/1.1\r\n\r\n"
                      b"GET /-/ready HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", out) == [b"200", b"404", b"200"], out


def test_request_line_too_long_is_414(plain: int) -> None:
    out = _raw(plain, b"GET /" + b"a" * (MAX_REQUEST_LINE + 10) + b" HTTP/1.1\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 414 "), out[:100]


def test_request_line_without_newline_too_long_is_414(plain: int) -> None:
    with _connect(plain) as s:
        s.sendall(b"GET /" + b"a" * (MAX_REQUEST_LINE + 10))
        assert s.recv(100).startswith(b"HTTP/1.1 414 ")


def test_headers_too_large_is_431(plain: int) -> None:
    headers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 200) for i in range(100))
    assert len(headers) > MAX_HEADER_BYTES
    out = _raw(plain, b"GET /metrics HTTP/1.1\r\n" + headers + b"\r\n")
    assert out.startswith(b"HTTP/1.1 431 "), out[:100]


@pytest.mark.parametrize("head,status", [
    (b"GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", b"413"),
    (b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     b"413"),
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 100000000\r\n\r\n", b"405"),
])
def test_request_bodies_are_refused_unread(plain: int, head: bytes, status: bytes) -> None:
    # Answered and closed (_raw reads to the end) without waiting for the body.
    out = _raw(plain, head)
    assert out.startswith(b"HTTP/1.1 " + status + b" "), out[:100]
    assert b"Connection: close" in out


def test_empty_body_is_fine(plain: int) -> None:
    out = _raw(plain, b"GET /-/healthy HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 "), out[:100]


def test_garbage_gets_400_and_server_keeps_serving(plain: int) -> None:
    out = _raw(plain, b"\x16\x03\x01 not http at all\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 "), out[:100]
    assert _scrape_ok(plain)


def test_connection_flood_is_capped() -> None:
    # A long deadline so that the held connections stay open (and counted) meanwhile.
    with exporter_with("--web.read-header-timeout=60") as ex:
        held: List[socket.socket] = []
        try:
            _flood(ex.port, MAX_CONNECTIONS, held)
            # Beyond the cap one connection is closed straight away, not after the deadline:
            # the longest-waiting silent one, to make room for the new one.
            extra = _connect(ex.port)
            held.append(extra)
            assert _closed_by_server(held[0], within=10)
            assert not _closed_by_server_now(extra)
            assert not _closed_by_server_now(held[1])
        finally:
            for s in held:
                s.close()
        poll(lambda: _scrape_ok(ex.port), timeout=15, what="scrapes after the flood")
        err = ex.stop()
    assert "too many open connections" in err


def _closed_by_server_now(s: socket.socket) -> bool:
    s.settimeout(0.01)
    try:
        return s.recv(1) == b""
    except socket.timeout:
        return False


# --- TLS: a stalled handshake happens in its own thread ---


def test_stalled_tls_handshake_does_not_block_scrape(pki: PKI) -> None:
    cfg = tls_web_config(pki, "tls.yml")
    with exporter_with(f"--web.config.file={cfg}",
                       f"--web.read-header-timeout={TIMEOUT}") as ex:
        silent = _connect(ex.port)  # TCP connected, never says hello
        partial = _connect(ex.port)
        partial.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # start of a hello
        # A client that completes the handshake and then stalls mid-request.
        ctx = client_context(pki)
        half = ctx.wrap_socket(_connect(ex.port), server_hostname="localhost")
        half.sendall(b"GET /metrics HTTP/1.1\r\n")
        try:
            status, _, body = https_get(ex.port, ctx=client_context(pki))
            assert status == 200 and parse(body.decode())
            assert _closed_by_server(silent)
            assert _closed_by_server(partial)
            assert _closed_by_server(half)  # the stalled TLS request dropped
        finally:
            for s in (silent, partial, half):
                s.close()


# --- clients without credentials cannot lock scrapes out ---

def _metric(text: str, name: str, **labels: str) -> float:
    from helpers import value
    v = value(parse(text), name, **labels)
    assert v is not None, name
    return v


# A scrape that costs little, so that what is timed is the server's handling of the flood.
CHEAP = ("--collector.disable-defaults", "--collector.sockets")


def _timed(fn: Callable[[], T]) -> Tuple[T, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


@pytest.mark.serial  # a scrape's latency held to a bound
def test_idle_keepalive_flood_without_credentials_does_not_lock_out_scrapes(pki: PKI) -> None:
    """MAX_CONNECTIONS kept-alive connections from a client without credentials (TLS, and
    /-/healthy, which needs none): an authenticated scrape is served at once all the same."""
    import base64
    cfg = tls_web_config(pki, "tls-auth-flood.yml", [
        "basic_auth_users:", f"  prometheus: '{bcrypt_hash('scrape-me', 4)}'"])
    auth = {"Authorization": "Basic " + base64.b64encode(b"prometheus:scrape-me").decode()}
    with exporter_with(f"--web.config.file={cfg}", "--web.read-header-timeout=60",
                       *CHEAP) as ex:
        ctx = client_context(pki)
        base = 0.0
        for _ in range(3):  # the slowest of three: the first check pays bcrypt
            (status, _, _), took = _timed(lambda: https_get(ex.port, ctx=ctx, headers=auth))
            assert status == 200
            base = max(base, took)
        idle: List[socket.socket] = []
        try:
            for _ in range(MAX_CONNECTIONS):
                s = ctx.wrap_socket(_connect(ex.port), server_hostname="localhost")
                assert b"Connection: close" not in _healthy(s)  # kept alive
                idle.append(s)
            for _ in range(3):
                (status, _, body), took = _timed(
                    lambda: https_get(ex.port, ctx=ctx, headers=auth))
                assert status == 200, status
                assert took < base + 1.0, (took, base)
            text = body.decode()
            assert _metric(text, "netstat_exporter_http_connections_reclaimed_total",
                           state="idle") >= 1
            assert _metric(text, "netstat_exporter_http_connections") <= MAX_CONNECTIONS
        finally:
            for s in idle:
                s.close()


@pytest.mark.serial  # a scrape's latency held to a bound
def test_silent_connection_flood_does_not_delay_scrapes() -> None:
    """More silent connections than the limit, each within the head deadline: scrapes are
    served at once, not after the deadline."""
    with exporter_with("--web.read-header-timeout=60", *CHEAP) as ex:
        base = max(_timed(lambda: _scrape_ok(ex.port))[1] for _ in range(3))
        silent: List[socket.socket] = []
        try:
            _flood(ex.port, MAX_CONNECTIONS + 44, silent)
            for _ in range(3):
                ok, took = _timed(lambda: _scrape_ok(ex.port))
                assert ok and took < base + 1.0, (took, base)
            status, _, body = http_get(f"http://127.0.0.1:{ex.port}/metrics", timeout=10)
            assert _metric(body.decode(), "netstat_exporter_http_connections_reclaimed_total",
                           state="waiting") >= 44
        finally:
            for s in silent:
                s.close()


def test_connections_refused_only_when_all_are_busy_and_counted() -> None:
    from exporter.web.limits import BUSY, IDLE, ConnectionTable
    from exporter.web.telemetry import HTTPStats

    stats = HTTPStats()
    table = ConnectionTable(stats, limit=3)
    pairs = [socket.socketpair() for _ in range(6)]
    try:
        slots = []
        for a, _ in pairs[:3]:
            admitted = table.admit(a, "127.0.0.1")
            assert admitted is not None and admitted[1] is None
            slots.append(admitted[0])
        for s in slots:
            table.set(s, BUSY)
        assert table.admit(pairs[3][0], "127.0.0.1") is None  # all busy: refused
        assert stats.refused == 1
        table.set(slots[1], IDLE)
        admitted = table.admit(pairs[4][0], "127.0.0.1")
        assert admitted is not None and admitted[1] is slots[1]  # the idle one gave way
        assert stats.reclaimed["idle"] == 1 and len(table) == 3
        assert pairs[1][1].recv(1) == b""  # its peer sees the close at once
        assert not table.set(slots[1], BUSY)  # its thread learns it was reclaimed
    finally:
        for a, b in pairs:
            a.close()
            b.close()


# --- one line, never a traceback ---

def test_client_resets_leave_no_traceback() -> None:
    with exporter_with() as ex:
        for _ in range(20):
            s = _connect(ex.port)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            # RST instead of FIN: close with a zero linger time.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        assert _scrape_ok(ex.port)
        err = ex.stop()
    assert "Traceback" not in err, err[:3000]
    for line in err.splitlines():
        assert line.startswith("ts="), line


# --- strict request parsing, clear answers to the wrong protocol ---

@pytest.mark.parametrize("head", [
    b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    b"GET /-/healthy HTTP/1.1\r\nHost : x\r\n\r\n",
    b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
    b"GET /-/healthy HTTP/01.1\r\nHost: x\r\n\r\n",
    b"GET /-/healthy HTTP/1.10\r\nHost: x\r\n\r\n",
    b"GET /-/healthy HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello",
    b"GET /-/healthy HTTP/1.1\r\nContent-Length: +0\r\n\r\n",
])
def test_malformed_heads_get_400(plain: int, head: bytes) -> None:
    out = _raw(plain, head)
    assert out.startswith(b"HTTP/1.1 400 ") or out.startswith(b"HTTP/1.0 400 "), out[:200]
    assert _scrape_ok(plain)


def test_tls_hello_to_plain_port_answered_at_once() -> None:
    with exporter_with("--web.read-header-timeout=30") as ex:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with _connect(ex.port) as raw:
            raw.settimeout(10)  # far below the 30 s head deadline
            with pytest.raises(ssl.SSLError):
                ctx.wrap_socket(raw, server_hostname="localhost")
        with _connect(ex.port) as s:
            s.settimeout(10)
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a hello's start
            out = s.recv(4096)
        assert out.startswith(b"HTTP/1.1 400 ") and b"plain HTTP" in out, out


def test_plain_http_to_tls_port_gets_a_clear_400(pki: PKI) -> None:
    cfg = tls_web_config(pki, "tls-plain.yml")
    with exporter_with(f"--web.config.file={cfg}") as ex:
        out = _raw(ex.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert out.startswith(b"HTTP/1.0 400 "), out
        assert b"Client sent an HTTP request to an HTTPS server." in out
        assert https_get(ex.port, ctx=client_context(pki))[0] == 200


def test_server_header_has_no_trailing_space(plain: int) -> None:
    from exporter import __version__
    _, headers, _ = http_get(f"http://127.0.0.1:{plain}/-/healthy")
    assert headers["Server"] == f"netstat-exporter/{__version__}"
