"""HTTP server: landing page, telemetry path, /-/healthy, and nothing else.

Threaded (one thread per connection) so a slow scrape never blocks the landing page or health
checks; a semaphore caps concurrent scrapes (``--web.max-requests``) and answers 503 beyond it.
``?collect[]=NAME`` and ``?exclude[]=NAME`` restrict one scrape to some collectors, as
node_exporter does; unknown names get 400.
"""

from __future__ import annotations

import html
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from prometheus_client.exposition import choose_encoder, gzip_accepted

from exporter import __version__
from exporter.config import Config, ListenAddress
from exporter.registry import Exporter

log = logging.getLogger(__name__)

# An idle or stalled client holds one thread for at most this long (slowloris).
REQUEST_TIMEOUT_SECONDS = 30.0


class ServeError(RuntimeError):
    """The server could not start (address in use, permission denied). One-line message."""


class Handler(BaseHTTPRequestHandler):
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

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        log.debug("http", extra={"client": self.client_address[0], "request": format % args})

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

    def __init__(self, address: ListenAddress, config: Config, exporter: Exporter) -> None:
        self.config = config
        self.exporter = exporter
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


def make_servers(config: Config, exporter: Optional[Exporter] = None) -> List[ExporterHTTPServer]:
    exporter = exporter or Exporter(config)
    servers: List[ExporterHTTPServer] = []
    try:
        for addr in config.listen_addresses:
            try:
                servers.append(ExporterHTTPServer(addr, config, exporter))
            except OSError as e:
                raise ServeError(f"cannot listen on {addr}: {e.strerror or e}") from None
    except ServeError:
        for s in servers:
            s.server_close()
        raise
    return servers


def serve(config: Config) -> None:
    servers = make_servers(config)
    for s in servers:
        host, port = s.server_address[:2]
        log.info("listening", extra={"address": f"{host!s}:{port}",
                                     "collectors": ",".join(s.exporter.names)})
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, name=f"http-{s.server_address[1]}",
                         daemon=True).start()
    try:
        servers[0].serve_forever()
    finally:
        for s in servers:
            s.server_close()
