"""Misbehaving clients: half requests, drip-fed headers, stalled TLS handshakes, oversized
request lines and headers, request bodies, connection floods. None of them may block a
concurrent scrape, and each is dropped within --web.read-header-timeout."""

from __future__ import annotations

import os
import re
import socket
import ssl
import time
from typing import Iterator, List

import pytest
from helpers import http_get, parse, poll
from tlshelpers import PKI, client_context, exporter_with, https_get, make_pki, write_web_config

from exporter.server import MAX_CONNECTIONS, MAX_HEADER_BYTES, MAX_REQUEST_LINE

TIMEOUT = 2.0  # --web.read-header-timeout for these tests


@pytest.fixture(scope="module")
def plain() -> Iterator[int]:
    with exporter_with(f"--web.read-header-timeout={TIMEOUT}") as ex:
        yield ex.port


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


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
        s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while not first.endswith(b"OK\n"):
            chunk = s.recv(4096)
            assert chunk, first
            first += chunk
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
            for _ in range(MAX_CONNECTIONS):
                held.append(_connect(ex.port))
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

@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(str(tmp_path_factory.mktemp("pki")))


def test_stalled_tls_handshake_does_not_block_scrape(pki: PKI) -> None:
    cfg = write_web_config(os.path.join(pki.dir, "tls.yml"), [
        "tls_server_config:", "  cert_file: server.crt", "  key_file: server.key"])
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

            def half_closed() -> bool:
                half.settimeout(0.2)
                try:
                    return half.recv(1024) == b""
                except socket.timeout:
                    return False
                except (OSError, ssl.SSLError):
                    return True

            poll(half_closed, timeout=15, interval=0.0, what="stalled TLS request dropped")
        finally:
            for s in (silent, partial, half):
                s.close()
