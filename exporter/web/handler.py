"""One connection's requests: the request head read with a deadline and size caps, checked
strictly, authenticated, routed (landing page, telemetry path, /-/healthy, /-/ready).

The head (request line and headers) must arrive completely within ``--web.read-header-timeout``
of the connection being accepted, however slowly the client drips it, as with Go's
ReadHeaderTimeout; request lines and headers are capped in size (414, 431); request bodies are
refused (413) without being read. What Go's net/http refuses is refused here with 400 too: a
header line without a colon or with a space before it, a folded header line, a version that is
not ``HTTP/<digit>.<digit>``, several differing or non-numeric ``Content-Length`` values (a
request smuggling vector behind a proxy). A TLS handshake sent to a plain-HTTP port is answered
400 at its first byte instead of waiting for a head that never comes.

``?collect[]=NAME`` and ``?exclude[]=NAME`` restrict one scrape to some collectors, as
node_exporter does; unknown or empty names, and the keys without brackets, get 400. Identical
concurrent scrapes share one collection (:mod:`exporter.web.singleflight`);
``--web.max-requests`` caps concurrent scrapes, and those beyond it get 503 with
``Retry-After``.
"""

from __future__ import annotations

import gzip
import io
import logging
import re
import socket
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from exporter import __version__
from exporter.exposition import choose_encoder, gzip_accepted
from exporter.web.limits import BUSY, IDLE, WAITING, Slot

if TYPE_CHECKING:
    from exporter.web.server import ExporterHTTPServer
    from exporter.web.state import WebSettings

log = logging.getLogger(__name__)

# Sending a response to a client that does not read it gives up after this long.
REQUEST_TIMEOUT_SECONDS = 30.0
# A kept-alive connection waits this long for its next request: above the common scrape
# intervals (up to a minute), so Prometheus keeps reusing one connection. A connection whose
# client has not shown valid credentials while basic auth is on gets --web.read-header-timeout
# instead; and any idle connection gives way to a new one when the connection limit is reached
# (exporter.web.limits).
IDLE_TIMEOUT_SECONDS = 120.0
# Request line (method, path with query, version) and the whole head, in bytes. Go's net/http
# allows 1 MiB of headers; a scrape needs a few hundred bytes.
MAX_REQUEST_LINE = 8192
MAX_HEADER_BYTES = 16384
# Paths served without basic auth: they reveal nothing, and container health checks and
# Kubernetes probes have no credentials.
UNAUTHENTICATED_PATHS = ("/-/healthy", "/-/ready")
WWW_AUTHENTICATE = 'Basic realm="netstat-exporter", charset="UTF-8"'
# A 503 for too many concurrent scrapes: a scrape takes well under this.
RETRY_AFTER_SECONDS = "1"

# RFC 9110 field names are tokens.
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VERSION = re.compile(r"HTTP/[0-9]\.[0-9]")
# The first byte of every TLS record of type handshake (RFC 8446, 5.1: ContentType 22).
TLS_HANDSHAKE = 0x16


class _SocketWriter(io.BufferedIOBase):
    """Unbuffered writes straight to the socket with sendall (as socketserver's own)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self._sock.sendall(b)
        return len(memoryview(b))

    def fileno(self) -> int:
        return self._sock.fileno()


class _HeadRejected(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class Handler(BaseHTTPRequestHandler):
    """One connection: its requests in turn, each head read with a deadline."""

    server: ExporterHTTPServer
    server_version = f"netstat-exporter/{__version__}"
    sys_version = ""
    timeout = REQUEST_TIMEOUT_SECONDS
    # Keep-alive: Prometheus reuses its connection, so repeated scrapes do not leave a
    # TIME_WAIT socket behind on the very host whose TIME_WAIT sockets are being counted.
    protocol_version = "HTTP/1.1"
    # Headers and body in separate segments on a kept-alive connection meet the client's delayed
    # ACK: without TCP_NODELAY every scrape would stall about 40 ms.
    disable_nagle_algorithm = True
    # Answer malformed requests with a status line, not HTTP/0.9's bare body.
    default_request_version = "HTTP/1.0"

    def __init__(self, request: Any, client_address: Any, server: ExporterHTTPServer,
                 web: Optional[WebSettings] = None, deadline: Optional[float] = None,
                 slot: Optional[Slot] = None) -> None:
        self.web = web
        self.slot = slot
        self.plain = web is None or web.ssl_context is None
        # The first request's head is due by this time; later ones read_header_timeout after
        # their first byte, which may take up to the idle timeout to come.
        self.deadline: Optional[float] = deadline if deadline is not None else (
            time.monotonic() + server.config.read_header_timeout)
        self._pending = b""  # bytes received after the last head: the next request's start
        self._first = True  # the connection's first request
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        # The head is read by _read_head with a deadline, not through a buffered file that
        # would give every recv() the full timeout again.
        self.connection = self.request
        if self.disable_nagle_algorithm:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self.rfile = io.BytesIO()
        self.wfile = _SocketWriter(self.connection)

    def version_string(self) -> str:
        return self.server_version  # not "name/version " with the empty sys_version

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        # The request line and status only: never headers, which carry credentials.
        log.debug("http", extra={"client": self.client_address[0], "request": format % args})

    def _state(self, state: str) -> bool:
        """Record the connection's state in the server's table; False if it was reclaimed."""
        return self.slot is None or self.server.connections.set(self.slot, state)

    def _idle_timeout(self) -> float:
        if self.web is not None and self.web.auth and not (self.slot and self.slot.trusted):
            return self.server.config.read_header_timeout
        return IDLE_TIMEOUT_SECONDS

    def _read_head(self) -> Optional[bytes]:
        """Receive up to the blank line ending the headers, within the deadline and size caps.
        None when the client closes or is too slow; _HeadRejected when it sends too much."""
        buf, self._pending = self._pending, b""
        while True:
            if self._first and self.plain and buf[:1] == bytes([TLS_HANDSHAKE]):
                raise _HeadRejected(400, "TLS handshake sent to a plain HTTP port: "
                                         "scrape with http://, not https://")
            nl = buf.find(b"\n")
            if (nl < 0 and len(buf) > MAX_REQUEST_LINE) or nl > MAX_REQUEST_LINE:
                raise _HeadRejected(414, "request line too long")
            for sep in (b"\r\n\r\n", b"\n\n"):
                end = buf.find(sep)
                if 0 <= end <= MAX_HEADER_BYTES:
                    # Nothing here takes a body, so what follows is the next request.
                    self._pending = buf[end + len(sep):]
                    self._first = False
                    return buf[:end + len(sep)] if self._state(BUSY) else None
            if len(buf) > MAX_HEADER_BYTES:
                raise _HeadRejected(431, "request header fields too large")
            if self.deadline is None:
                # Kept-alive connection between requests: idle until the next one starts.
                if not self._state(IDLE):
                    return None
                self.connection.settimeout(self._idle_timeout())
            else:
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    log.debug("request head not complete in time, closing",
                              extra={"client": self.client_address[0], "bytes": len(buf)})
                    return None
                self.connection.settimeout(remaining)
            try:
                chunk = self.connection.recv(4096)
            except (OSError, ValueError):  # timeout, reset, TLS alert, reclaimed
                return None
            if not chunk:
                return None
            if self.deadline is None:
                self.deadline = time.monotonic() + self.server.config.read_header_timeout
                if not self._state(WAITING):
                    return None
            buf += chunk

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection:
            self.deadline = None if not self._pending else (
                time.monotonic() + self.server.config.read_header_timeout)
            self.handle_one_request()

    def handle_one_request(self) -> None:
        self.close_connection = True
        self.command, self.request_version, self.requestline = "", "", ""
        try:
            head = self._read_head()
        except _HeadRejected as e:
            self.connection.settimeout(REQUEST_TIMEOUT_SECONDS)
            self.send_error(e.code, e.message)
            return
        if head is None:
            return
        self.connection.settimeout(REQUEST_TIMEOUT_SECONDS)
        self.rfile = io.BytesIO(head)
        self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE + 1)
        problem = _malformed(head)
        if problem is not None:
            self.requestline = self.raw_requestline.decode("latin-1").rstrip("\r\n")
            self.send_error(400, problem)
            return
        if not self.parse_request():  # sets close_connection from the Connection header
            return
        if self.command not in ("GET", "HEAD"):
            # Whatever body came with it stays unread: close after the answer.
            self.close_connection = True
            self._send(405, b"method not allowed\n",
                       headers=[("Allow", "GET, HEAD"), ("Connection", "close")])
            return
        lengths = {v.strip() for v in self.headers.get_all("Content-Length") or []}
        if len(lengths) > 1 or any(not v.isdigit() for v in lengths):
            # Which one would a proxy in front have used? Refuse rather than guess.
            self.send_error(400, "conflicting or malformed Content-Length")
            return
        if self.headers.get("Transfer-Encoding") or any(int(v) for v in lengths):
            # Nothing here takes a body: refuse it unread, and close.
            self.send_error(413, "request bodies are not accepted")
            return
        if not self._authorized():
            # No idle connections for clients without credentials.
            self._send(401, b"Unauthorized\n",
                       headers=[("WWW-Authenticate", WWW_AUTHENTICATE), ("Connection", "close")])
            return
        getattr(self, "do_" + self.command)()
        self.wfile.flush()

    def _authorized(self) -> bool:
        if self.web is None or not self.web.auth:
            return True
        if self.web.auth.check(self.headers.get("Authorization")):
            if self.slot is not None:
                self.server.connections.trust(self.slot)
            return True
        return urlsplit(self.path).path in UNAUTHENTICATED_PATHS

    def send_response(self, code: int, message: Optional[str] = None) -> None:
        super().send_response(code, message)
        if self.web is not None:
            for k, v in self.web.headers:  # http_server_config.headers, on every answer
                self.send_header(k, v)

    def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
              headers: Optional[List[Tuple[str, str]]] = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers or []:
            self.send_header(k, v)
        # One write for headers and body (end_headers would flush the headers on their own).
        self._headers_buffer.append(b"\r\n")  # type: ignore[attr-defined]
        if self.command != "HEAD":
            self._headers_buffer.append(body)  # type: ignore[attr-defined]
        self.flush_headers()

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        cfg = self.server.config
        if url.path == cfg.telemetry_path:
            self._scrape(url.query)
        elif url.path == "/":
            self._send(200, self.server.landing_page, "text/html; charset=utf-8")
        elif url.path in ("/-/healthy", "/-/ready"):
            self._send(200, b"OK\n")
        else:
            self._send(404, b"404 page not found\n")

    def _reject_method(self) -> None:
        self._send(405, b"method not allowed\n", headers=[("Allow", "GET, HEAD")])

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _reject_method

    def _scrape(self, query: str) -> None:
        params = parse_qs(query, keep_blank_values=True)
        only = params.get("collect[]", [])
        exclude = params.get("exclude[]", [])
        server = self.server
        exporter = server.exporter
        unknown = exporter.unknown(only + exclude)
        for bare in ("collect", "exclude"):
            # Without the brackets the whole scrape would come back, as if the filter worked.
            if bare in params:
                self._send(400, f"unknown parameter {bare!r}: name collectors with "
                                f"{bare}[]=NAME\n".encode())
                return
        if "" in only or "" in exclude:
            self._send(400, b"empty collect[] or exclude[] value: name a collector\n")
            return
        if unknown:
            self._send(400, f"unknown or disabled collector: {', '.join(unknown)}\n".encode())
            return
        sem = server.scrape_slots
        if sem is not None and not sem.acquire(blocking=False):
            server.stats.add("scrapes_refused")
            self._send(503, b"too many concurrent scrapes, try again later\n",
                       headers=[("Retry-After", RETRY_AFTER_SECONDS)])
            return
        try:
            encoder, content_type = choose_encoder(self.headers.get("Accept") or "")
            compress = gzip_accepted(self.headers.get("Accept-Encoding") or "")
            key = (tuple(sorted(set(only))), tuple(sorted(set(exclude))), content_type,
                   compress)

            def render() -> bytes:
                body: bytes = encoder(server.scrape_target(only, exclude))
                return gzip.compress(body, compresslevel=1) if compress else body

            body, shared = server.scrapes.do(key, render)
            if shared:
                server.stats.add("scrapes_shared")
        finally:
            if sem is not None:
                sem.release()
        headers = [("Content-Encoding", "gzip")] if compress else []
        self._send(200, body, content_type, headers)


def _malformed(head: bytes) -> Optional[str]:
    """Why the head must get 400, for what parse_request lets through; None if it is fine."""
    lines = head.rstrip(b"\r\n").split(b"\n")
    words = lines[0].rstrip(b"\r").split()
    if len(words) == 3 and not _VERSION.fullmatch(words[2].decode("latin-1")):
        return f"bad request version {words[2].decode('latin-1')!r}"
    for line in lines[1:]:
        line = line.rstrip(b"\r")
        if line[:1] in (b" ", b"\t"):
            return "folded header line (obsolete line folding is not accepted)"
        name, colon, _ = line.partition(b":")
        if not colon:
            return "header line without a colon"
        if not _TOKEN.fullmatch(name):
            return "malformed header name"
    return None
