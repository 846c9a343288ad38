"""The HTTP server's own counters, exposed with the exporter's metrics (and left out with them
by ``--web.disable-exporter-metrics``)."""

from __future__ import annotations

import threading
from typing import Dict, Iterator

from prometheus_client.core import Metric

from exporter.collectors.api import NAMESPACE, MetricDoc

HTTP_METRICS = (
    MetricDoc(f"{NAMESPACE}_exporter_http_connections", "gauge",
              "HTTP connections open now, from accept to close.",
              note="left out with --web.disable-exporter-metrics"),
    MetricDoc(f"{NAMESPACE}_exporter_http_connections_refused_total", "counter",
              "Connections closed as soon as accepted: the connection limit was reached and "
              "every open connection was busy answering a request.",
              note="left out with --web.disable-exporter-metrics"),
    MetricDoc(f"{NAMESPACE}_exporter_http_connections_reclaimed_total", "counter",
              "Open connections closed to make room for a new one when the connection limit "
              "was reached: state=\"idle\", kept alive between requests; state=\"waiting\", "
              "not yet through the TLS handshake and request head.", ("state",),
              note="left out with --web.disable-exporter-metrics"),
    MetricDoc(f"{NAMESPACE}_exporter_http_scrapes_refused_total", "counter",
              "Scrapes answered 503 because --web.max-requests scrapes were already running.",
              note="left out with --web.disable-exporter-metrics"),
    MetricDoc(f"{NAMESPACE}_exporter_http_scrapes_shared_total", "counter",
              "Scrapes answered with the result of an identical scrape (same collectors, same "
              "format) that was already running, instead of collecting again.",
              note="left out with --web.disable-exporter-metrics"),
)
_OPEN, _REFUSED, _RECLAIMED, _SCRAPES_REFUSED, _SHARED = HTTP_METRICS


class HTTPStats:
    """Counters updated by the connection threads; read at every scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.open = 0
        self.refused = 0
        self.reclaimed: Dict[str, int] = {"idle": 0, "waiting": 0}
        self.scrapes_refused = 0
        self.scrapes_shared = 0

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def add_reclaimed(self, state: str) -> None:
        with self._lock:
            self.reclaimed[state] += 1

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            open_, refused, reclaimed = self.open, self.refused, dict(self.reclaimed)
            scrapes_refused, shared = self.scrapes_refused, self.scrapes_shared
        for doc, n in ((_OPEN, open_), (_REFUSED, refused), (_SCRAPES_REFUSED, scrapes_refused),
                       (_SHARED, shared)):
            family = doc.family()
            family.add_metric([], n)
            yield family
        r = _RECLAIMED.family()
        for state, n in reclaimed.items():
            r.add_metric([state], n)
        yield r
