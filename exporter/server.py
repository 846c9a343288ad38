"""HTTP server: landing page, telemetry path, /-/healthy, and nothing else.

Threaded (one thread per connection) so a slow scrape never blocks the landing page or health
checks; a semaphore caps concurrent scrapes (``--web.max-requests``) and answers 503 beyond it.
``?collect[]=NAME`` and ``?exclude[]=NAME`` restrict one scrape to some collectors, as
node_exporter does; unknown names get 400.

With ``--web.config.file`` (see :mod:`exporter.webconfig`) connections get TLS and requests need
basic auth. Either way the server defends itself the way Go's net/http server with
ReadHeaderTimeout does: the TLS handshake happens in the connection's own thread, never in the
accept loop; the request head (request line and headers) must arrive completely within
``--web.read-header-timeout`` of the connection being accepted, however slowly the client drips
it; request lines and headers are capped in size (414, 431); request bodies are refused (413)
without being read; the number of open connections is capped. One misbehaving client holds one
thread for a bounded time and never blocks a scrape.
"""

from __future__ import annotations

import html
import io
import logging
import signal
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from exporter import __version__
from exporter.config import Config, ListenAddress
from exporter.exposition import choose_encoder, gzip_accepted
from exporter.registry import Exporter
from exporter.webconfig import WebSnapshot, WebState

log = logging.getLogger(__name__)

# Sending a response to a client that does not read it gives up after this long.
REQUEST_TIMEOUT_SECONDS = 30.0
# A kept-alive connection waits this long for its next request: above the common scrape
# intervals (up to a minute), so Prometheus keeps reusing one connection.
IDLE_TIMEOUT_SECONDS = 120.0
# Request line (method, path with query, version) and the whole head, in bytes. Go's net/http
# allows 1 MiB of headers; a scrape needs a few hundred bytes.
MAX_REQUEST_LINE = 8192
MAX_HEADER_BYTES = 16384
# Open connections beyond this are closed at once, so a flood cannot exhaust threads.
MAX_CONNECTIONS = 256
# Paths served without basic auth: they reveal nothing, and container health checks and
# Kubernetes probes have no credentials.
UNAUTHENTICATED_PATHS = ("/-/healthy", "/-/ready")
WWW_AUTHENTICATE = 'Basic realm="netstat-exporter", charset="UTF-8"'


class ServeError(RuntimeError):
    """The server could not start (address in use, permission denied). One-line message."""


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
                 web: Optional[WebSnapshot] = None, deadline: Optional[float] = None) -> None:
        self.web = web
        # The first request's head is due by this time; later ones read_header_timeout after
        # their first byte, which may take up to IDLE_TIMEOUT_SECONDS to come.
        self.deadline: Optional[float] = deadline if deadline is not None else (
            time.monotonic() + server.config.read_header_timeout)
        self._pending = b""  # bytes received after the last head: the next request's start
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        # The head is read by _read_head with a deadline, not through a buffered file that
        # would give every recv() the full timeout again.
        self.connection = self.request
        if self.disable_nagle_algorithm:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self.rfile = io.BytesIO()
        self.wfile = _SocketWriter(self.connection)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        # The request line and status only: never headers, which carry credentials.
        log.debug("http", extra={"client": self.client_address[0], "request": format % args})

    def _read_head(self) -> Optional[bytes]:
        """Receive up to the blank line ending the headers, within the deadline and size caps.
        None when the client closes or is too slow; _HeadRejected when it sends too much."""
        buf, self._pending = self._pending, b""
        while True:
            nl = buf.find(b"\n")
            if (nl < 0 and len(buf) > MAX_REQUEST_LINE) or nl > MAX_REQUEST_LINE:
                raise _HeadRejected(414, "request line too long")
            for sep in (b"\r\n\r\n", b"\n\n"):
                end = buf.find(sep)
                if 0 <= end <= MAX_HEADER_BYTES:
                    # Nothing here takes a body, so what follows is the next request.
                    self._pending = buf[end + len(sep):]
                    return buf[:end + len(sep)]
            if len(buf) > MAX_HEADER_BYTES:
                raise _HeadRejected(431, "request header fields too large")
            if self.deadline is None:
                # Kept-alive connection between requests: idle until the next one starts.
                self.connection.settimeout(IDLE_TIMEOUT_SECONDS)
            else:
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    log.debug("request head not complete in time, closing",
                              extra={"client": self.client_address[0], "bytes": len(buf)})
                    return None
                self.connection.settimeout(remaining)
            try:
                chunk = self.connection.recv(4096)
            except (OSError, ValueError):  # timeout, reset, TLS alert
                return None
            if not chunk:
                return None
            if self.deadline is None:
                self.deadline = time.monotonic() + self.server.config.read_header_timeout
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
        if not self.parse_request():  # sets close_connection from the Connection header
            return
        if self.command not in ("GET", "HEAD"):
            # Whatever body came with it stays unread: close after the answer.
            self.close_connection = True
            self._send(405, b"method not allowed\n",
                       headers=[("Allow", "GET, HEAD"), ("Connection", "close")])
            return
        length = self.headers.get("Content-Length", "0").strip()
        if self.headers.get("Transfer-Encoding") or length != "0":
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
        if urlsplit(self.path).path in UNAUTHENTICATED_PATHS:
            return True
        return self.web.auth.check(self.headers.get("Authorization"))

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
        params = parse_qs(query)
        only = params.get("collect[]", [])
        exclude = params.get("exclude[]", [])
        exporter = self.server.exporter
        unknown = exporter.unknown(only + exclude)
        if unknown:
            self._send(400, f"unknown or disabled collector: {', '.join(unknown)}\n".encode())
            return
        sem = self.server.scrape_slots
        if sem is not None and not sem.acquire(blocking=False):
            self._send(503, b"too many concurrent scrapes, try again later\n")
            return
        try:
            encoder, content_type = choose_encoder(self.headers.get("Accept") or "")
            body = encoder(exporter.target(only, exclude))
        finally:
            if sem is not None:
                sem.release()
        headers = []
        if gzip_accepted(self.headers.get("Accept-Encoding") or ""):
            import gzip

            body = gzip.compress(body, compresslevel=1)
            headers.append(("Content-Encoding", "gzip"))
        self._send(200, body, content_type, headers)


class ExporterHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: ListenAddress, config: Config, exporter: Exporter,
                 web: Optional[WebState] = None) -> None:
        self.config = config
        self.exporter = exporter
        self.web = web
        self._connections = 0
        self._connections_lock = threading.Lock()
        self.scrape_slots = (
            threading.BoundedSemaphore(config.max_requests) if config.max_requests > 0 else None
        )
        self.landing_page = landing_page(config, exporter)
        host = address.host
        self.dual_stack = False
        if host == "" and socket.has_ipv6:
            self.address_family, host, self.dual_stack = socket.AF_INET6, "::", True
        elif ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host or "0.0.0.0", address.port), Handler)

    def server_bind(self) -> None:
        if self.dual_stack:
            # ":9816" means every address, IPv4 and IPv6, as it does for node_exporter.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    # --- connection handling: runs in the accept loop, must never block ---

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            full = self._connections >= MAX_CONNECTIONS
            if not full:
                self._connections += 1
        if full:
            log.warning("too many open connections, closing a new one",
                        extra={"client": client_address[0], "limit": MAX_CONNECTIONS})
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections -= 1

    # --- in the connection's own thread ---

    def finish_request(self, request: Any, client_address: Any) -> None:
        deadline = time.monotonic() + self.config.read_header_timeout
        web = self.web.current() if self.web is not None else None
        conn = request
        if web is not None and web.ssl_context is not None:
            conn = self._handshake(request, client_address, web.ssl_context, deadline)
            if conn is None:
                return
        try:
            Handler(conn, client_address, self, web=web, deadline=deadline)
        finally:
            if conn is not request:
                conn.close()

    def _handshake(self, request: socket.socket, client_address: Any, ctx: ssl.SSLContext,
                   deadline: float) -> Optional[ssl.SSLSocket]:
        """TLS handshake within the deadline; None (and the socket closed) if it fails."""
        try:
            request.settimeout(max(deadline - time.monotonic(), 0.001))
            conn = ctx.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError) as e:
            log.debug("TLS setup failed", extra={"client": client_address[0], "err": str(e)})
            return None
        try:
            conn.do_handshake()  # the socket timeout bounds the whole handshake (_ssl.c)
            return conn
        except (OSError, ValueError) as e:
            log.debug("TLS handshake failed", extra={"client": client_address[0],
                                                     "err": str(e)})
            conn.close()
            return None


def landing_page(config: Config, exporter: Exporter) -> bytes:
    path = html.escape(config.telemetry_path)
    items = "".join(f"<li>{html.escape(n)}</li>" for n in exporter.names)
    return (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>netstat-exporter</title></head>"
        f"<body><h1>netstat-exporter {html.escape(__version__)}</h1>"
        f"<p>Metrics: <a href=\"{path}\">{path}</a></p>"
        f"<h2>Enabled collectors</h2><ul>{items}</ul>"
        f"<p>Scrape some collectors only: <code>{path}?collect[]=NAME</code></p>"
        "</body></html>\n"
    ).encode()


def make_servers(config: Config, exporter: Optional[Exporter] = None,
                 web: Optional[WebState] = None) -> List[ExporterHTTPServer]:
    exporter = exporter or Exporter(config)
    servers: List[ExporterHTTPServer] = []
    try:
        for addr in config.listen_addresses:
            try:
                servers.append(ExporterHTTPServer(addr, config, exporter, web))
            except OSError as e:
                raise ServeError(f"cannot listen on {addr}: {e.strerror or e}") from None
    except ServeError:
        for s in servers:
            s.server_close()
        raise
    return servers


def on_sighup(callbacks: List[Callable[[], object]]) -> None:
    """Run ``callbacks`` on SIGHUP, in a thread of their own (not in the signal handler, which
    runs in the accept loop's thread and must stay short). systemd's ExecReload sends SIGHUP."""

    def run() -> None:
        for cb in callbacks:
            try:
                cb()
            except Exception:  # noqa: BLE001 - one failing reload must not stop the others
                log.exception("reload on SIGHUP failed")

    def handler(signum: int, frame: object) -> None:
        threading.Thread(target=run, name="sighup", daemon=True).start()

    signal.signal(signal.SIGHUP, handler)


def serve(config: Config) -> None:
    # Load the web config before binding: a bad file is a start-up error (ConfigError).
    web = WebState(config.web_config_file) if config.web_config_file else None
    servers = make_servers(config, web=web)
    # SIGHUP re-reads the web config and the collectors' files (the expected-listeners file).
    reloads: List[Callable[[], object]] = [servers[0].exporter.reload]
    if web is not None:
        reloads.append(web.reload)
    on_sighup(reloads)
    tls = web is not None and web.current().ssl_context is not None
    for s in servers:
        host, port = s.server_address[:2]
        log.info("listening", extra={"address": f"{host!s}:{port}",
                                     "collectors": ",".join(s.exporter.names),
                                     "tls": tls})
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, name=f"http-{s.server_address[1]}",
                         daemon=True).start()
    try:
        servers[0].serve_forever()
    finally:
        for s in servers:
            s.server_close()
