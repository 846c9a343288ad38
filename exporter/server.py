"""HTTP server: landing page, telemetry path, /-/healthy, and nothing else.

The code lives in :mod:`exporter.web` (``server``: listening and connections; ``handler``: one
connection's requests; ``limits``: the connection table; ``singleflight``: shared concurrent
scrapes), as exporter-toolkit splits ``web/``; this module keeps the names it always offered.
"""

from __future__ import annotations

from exporter.web.handler import (
    IDLE_TIMEOUT_SECONDS,
    MAX_HEADER_BYTES,
    MAX_REQUEST_LINE,
    REQUEST_TIMEOUT_SECONDS,
    UNAUTHENTICATED_PATHS,
    WWW_AUTHENTICATE,
    Handler,
)
from exporter.web.limits import MAX_CONNECTIONS
from exporter.web.server import (
    ExporterHTTPServer,
    ServeError,
    landing_page,
    make_servers,
    on_sighup,
    serve,
)

__all__ = [
    "IDLE_TIMEOUT_SECONDS", "MAX_CONNECTIONS", "MAX_HEADER_BYTES", "MAX_REQUEST_LINE",
    "REQUEST_TIMEOUT_SECONDS", "UNAUTHENTICATED_PATHS", "WWW_AUTHENTICATE", "ExporterHTTPServer",
    "Handler", "ServeError", "landing_page", "make_servers", "on_sighup", "serve",
]
