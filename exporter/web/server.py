"""The HTTP server: listening sockets, one thread per connection, TLS, connection limits,
reloads on SIGHUP.

Threaded (one thread per connection) so a slow scrape never blocks the landing page or health
checks. The accept loop only admits or refuses: the TLS handshake happens in the connection's
own thread, within ``--web.read-header-timeout`` of the accept, as does reading the request head
(:mod:`exporter.web.handler`). Open connections are capped, and when the cap is reached an idle
or silent connection gives way to the new one (:mod:`exporter.web.limits`), so clients without
credentials cannot lock Prometheus out. A plain-HTTP request sent to the TLS port is answered
with a 400 in clear text, as Go's net/http does, instead of a reset.

No error of a connection ever reaches stderr as a traceback: a client that resets its connection
is logged at debug, anything else as one error line.
"""

from __future__ import annotations

import html
import logging
import signal
import socket
import ssl
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

from prometheus_client.core import Metric
from prometheus_client.registry import Collector as _PromCollector

from exporter import __version__
from exporter.config import Config, ListenAddress
from exporter.scrape import Exporter
from exporter.web.handler import TLS_HANDSHAKE, Handler
from exporter.web.limits import MAX_CONNECTIONS, ConnectionTable, Slot
from exporter.web.singleflight import SingleFlight
from exporter.web.state import WebState
from exporter.web.telemetry import HTTPStats

log = logging.getLogger(__name__)

# What Go's net/http answers to plain HTTP on a TLS port (net/http/server.go).
HTTP_TO_TLS_PORT = (b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                    b"Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
# Refused or reclaimed connections are logged at most this often (a flood would fill the log).
LOG_INTERVAL_SECONDS = 10.0


class ServeError(RuntimeError):
    """The server could not start (address in use, permission denied). One-line message."""


class _ServedScrape(_PromCollector):
    """One scrape's collectors, then the server's own counters."""

    def __init__(self, parts: Sequence[Any]) -> None:
        self._parts = parts

    def collect(self) -> Iterator[Metric]:
        for part in self._parts:
            yield from part.collect()


class ExporterHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: ListenAddress, config: Config, exporter: Exporter,
                 web: Optional[WebState] = None, stats: Optional[HTTPStats] = None) -> None:
        self.config = config
        self.exporter = exporter
        self.web = web
        self.stats = stats or HTTPStats()
        self.connections = ConnectionTable(self.stats, MAX_CONNECTIONS)
        self.scrapes: SingleFlight[bytes] = SingleFlight()
        self.scrape_slots = (
            threading.BoundedSemaphore(config.max_requests) if config.max_requests > 0 else None
        )
        self.landing_page = landing_page(config, exporter)
        self._logged = 0.0
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

    def scrape_target(self, only: Sequence[str], exclude: Sequence[str]) -> _ServedScrape:
        parts: List[Any] = [self.exporter.target(only, exclude)]
        if not self.config.disable_exporter_metrics:
            parts.append(self.stats)
        return _ServedScrape(parts)

    # --- connection handling: runs in the accept loop, must never block ---

    def process_request(self, request: Any, client_address: Any) -> None:
        admitted = self.connections.admit(request, client_address[0])
        if admitted is None:
            self._log_limit("too many open connections, all busy: closing a new one",
                            client_address)
            self.shutdown_request(request)
            return
        slot, victim = admitted
        if victim is not None:
            self._log_limit(f"too many open connections, closing the longest {victim.state} "
                            "one for a new one", client_address, victim.client)
        threading.Thread(target=self._connection, args=(request, client_address, slot),
                         name="http-conn", daemon=True).start()

    def _log_limit(self, msg: str, client_address: Any, victim: str = "") -> None:
        now = time.monotonic()
        level = logging.WARNING if now - self._logged >= LOG_INTERVAL_SECONDS else logging.DEBUG
        if level == logging.WARNING:
            self._logged = now
        extra = {"client": client_address[0], "limit": MAX_CONNECTIONS,
                 "refused_total": self.stats.refused,
                 "reclaimed_total": sum(self.stats.reclaimed.values())}
        if victim:
            extra["closed_client"] = victim
        log.log(level, msg, extra=extra)

    # --- in the connection's own thread ---

    def _connection(self, request: socket.socket, client_address: Any, slot: Slot) -> None:
        tls: Optional[ssl.SSLSocket] = None
        try:
            deadline = time.monotonic() + self.config.read_header_timeout
            web = self.web.current() if self.web is not None else None
            conn: socket.socket = request
            if web is not None and web.ssl_context is not None:
                tls, ok = self._handshake(request, client_address, web.ssl_context, deadline)
                if tls is None or not ok:
                    return
                conn = tls
            Handler(conn, client_address, self, web=web, deadline=deadline, slot=slot)
        except Exception:  # noqa: BLE001 - logged in one line by handle_error
            self.handle_error(request, client_address)
        finally:
            # Out of the table before the descriptor is closed: a reclaim acts on the
            # descriptor number, which must still be this connection's.
            self.connections.release(slot)
            if tls is not None:
                tls.close()
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line, never socketserver's traceback on stderr."""
        e = sys.exc_info()[1]
        client = client_address[0] if client_address else ""
        if isinstance(e, (OSError, ValueError)):  # reset, broken pipe, timeout, TLS alert
            log.debug("connection ended by an error", extra={"client": client, "err": str(e)})
        else:
            log.error("request failed", extra={
                "client": client, "err": " ".join(f"{type(e).__name__}: {e}".split())})

    def _handshake(self, request: socket.socket, client_address: Any, ctx: ssl.SSLContext,
                   deadline: float) -> Tuple[Optional[ssl.SSLSocket], bool]:
        """TLS handshake within the deadline: the TLS socket (None if the client sent no TLS,
        and was told so if it spoke HTTP) and whether the handshake succeeded. The caller
        closes the TLS socket, after taking the connection out of the table."""
        try:
            request.settimeout(max(deadline - time.monotonic(), 0.001))
            first = request.recv(1, socket.MSG_PEEK)
            if not first:
                return None, False
            if first[0] != TLS_HANDSHAKE:
                log.debug("plain HTTP on the TLS port", extra={"client": client_address[0]})
                request.sendall(HTTP_TO_TLS_PORT)
                return None, False
            conn = ctx.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError) as e:
            log.debug("TLS setup failed", extra={"client": client_address[0], "err": str(e)})
            return None, False
        try:
            conn.do_handshake()  # the socket timeout bounds the whole handshake (_ssl.c)
        except (OSError, ValueError) as e:
            log.debug("TLS handshake failed", extra={"client": client_address[0],
                                                     "err": str(e)})
            return conn, False
        return conn, True


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
    stats = HTTPStats()  # one set of counters for every listening address
    servers: List[ExporterHTTPServer] = []
    try:
        for addr in config.listen_addresses:
            try:
                servers.append(ExporterHTTPServer(addr, config, exporter, web, stats))
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
            except Exception as e:  # noqa: BLE001 - one failing reload must not stop the others
                log.error("reload on SIGHUP failed",
                          extra={"err": " ".join(f"{type(e).__name__}: {e}".split())})

    def handler(signum: int, frame: object) -> None:
        threading.Thread(target=run, name="sighup", daemon=True).start()

    hup = getattr(signal, "SIGHUP", None)
    if hup is None:
        return  # Windows has no SIGHUP: files are re-read when they change, or on restart
    signal.signal(hup, handler)


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
        log.info("listening", extra={"address": str(ListenAddress(str(host), int(port))),
                                     "collectors": ",".join(s.exporter.names),
                                     "tls": tls})
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, name=f"http-{s.server_address[1]}",
                         daemon=True).start()
    stopped_by: List[str] = []

    def stop(signum: int, _frame: object) -> None:
        # serve_forever returns once shutdown() is called, which waits for it: from another
        # thread, never from this handler, which runs in the serving thread.
        stopped_by.append(signal.Signals(signum).name)
        threading.Thread(target=servers[0].shutdown, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    try:
        servers[0].serve_forever()
    finally:
        for s in servers:
            s.server_close()
    if stopped_by:
        # systemd, Kubernetes and docker stop a service with SIGTERM: the log says it was asked
        # to, rather than ending mid-line, and the exit status is 0.
        log.info(f"received {stopped_by[0]}, shutting down")
