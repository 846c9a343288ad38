"""One scrape: the enabled collectors run in turn, each timed and isolated, sharing the
scrape's socket snapshot.

The :class:`Exporter` built from a :class:`~exporter.config.Config` instantiates the enabled
collectors (registered in :mod:`exporter.collectors.api`) and, at every scrape, runs each,
times it and reports ``netstat_exporter_collector_duration_seconds{collector}`` and
``netstat_exporter_collector_success{collector}``. A collector that raises drops only its own
metrics for that scrape; the reason is logged. Collectors that read sockets get the scrape's
:class:`~exporter.sockets.snapshot.ScrapeSockets`, so each socket table is read once per scrape.
"""

from __future__ import annotations

import functools
import logging
import operator
import platform
import time
from typing import (
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    cast,
)

from prometheus_client import ProcessCollector
from prometheus_client.core import Metric
from prometheus_client.registry import Collector as _PromCollector

import exporter.collectors  # noqa: F401  (importing registers them)
from exporter import __version__, waits
from exporter.collectors.api import (
    NAMESPACE,
    Collector,
    MetricDoc,
    reserve,
    specs,
)
from exporter.config import Config, UnknownCollectorError
from exporter.procfs import own_files
from exporter.sockets.snapshot import ScrapeSockets, Snapshot, Wants
from exporter.system import System, load

log = logging.getLogger(__name__)


class SocketUser(Protocol):
    """A collector that reads the socket tables. A scrape hands it the snapshot shared by all
    such collectors of the scrape (``collect()`` alone takes a snapshot of its own)."""

    procfs: str
    socket_source: str
    system: System

    def socket_wants(self) -> Wants: ...

    def collect_snapshot(self, snap: Snapshot) -> Iterable[Metric]: ...

    def collect(self) -> Iterable[Metric]: ...


def check_names(names: Iterable[str]) -> None:
    known = specs()
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise UnknownCollectorError(
            f"unknown collector {', '.join(map(repr, unknown))} (known: {', '.join(known)})"
        )


class Exporter:
    """The scrape target: the enabled collectors plus the exporter's own telemetry."""

    def __init__(self, config: Config, extra: Optional[Mapping[str, Collector]] = None) -> None:
        self.config = config
        check_names(config.collectors)
        self.collectors: Dict[str, Collector] = {
            name: spec.factory(config)
            for name, spec in specs().items()
            if name in config.collectors
        }
        if extra:  # tests inject collectors that misbehave on purpose
            self.collectors.update(extra)
        # process_* metrics of the exporter itself (RSS, CPU, open fds), from client_python.
        self.process = ProcessCollector(registry=None)
        if load(config).has_procfs and own_files.is_own_procfs(config.procfs):
            # The same twenty-odd /proc/net and /proc/sys files every scrape: keep them open.
            own_files.keep(config.procfs)

    @property
    def names(self) -> List[str]:
        return list(self.collectors)

    def target(self, only: Optional[Sequence[str]] = None, exclude: Sequence[str] = ()) -> _Scrape:
        """A registry-like object for one scrape, restricted as ``collect[]``/``exclude[]`` ask."""
        names = list(self.collectors) if not only else [n for n in self.collectors if n in only]
        names = [n for n in names if n not in exclude]
        return _Scrape(self, names)

    def unknown(self, names: Iterable[str]) -> List[str]:
        return sorted(set(names) - set(self.collectors))

    def reload(self) -> None:
        """Have every collector that reads a file of its own re-read it (on SIGHUP)."""
        for collector in self.collectors.values():
            reload = getattr(collector, "reload", None)
            if callable(reload):
                reload()


# What every scrape adds about itself: collector timing and success, netlink dumps, build info.
# With the HTTP server's own counters they make exporter.docs.EXPORTER_METRICS.
SCRAPE_METRICS = (
    MetricDoc(f"{NAMESPACE}_exporter_collector_duration_seconds", "gauge",
              "How long a collector took in this scrape.", ("collector",)),
    MetricDoc(f"{NAMESPACE}_exporter_collector_success", "gauge",
              "1 if the collector succeeded in this scrape, 0 if it failed (see the exporter "
              "log).", ("collector",)),
    MetricDoc(f"{NAMESPACE}_exporter_netlink_dumps", "gauge",
              "Netlink sock_diag dumps made in this scrape: the collectors of a scrape share "
              "one socket snapshot, in which each socket table is dumped at most once.",
              note="only in scrapes that read sockets over netlink"),
    MetricDoc(f"{NAMESPACE}_exporter_build_info", "gauge",
              "Version of netstat-exporter and the Python that runs it; value 1.",
              ("version", "python_version"),
              note="left out with --web.disable-exporter-metrics"),
)
_DURATION, _SUCCESS, _DUMPS, _BUILD = SCRAPE_METRICS
reserve("exporter", SCRAPE_METRICS)


class _Scrape(_PromCollector):
    """The collectors of one scrape, as a registry-like object for the exposition."""

    def __init__(self, exporter: Exporter, names: List[str]) -> None:
        self._exporter = exporter
        self._names = names

    def collect(self) -> Iterator[Metric]:
        collectors = [(name, self._exporter.collectors[name]) for name in self._names]
        # The collectors of this scrape that read sockets share its snapshots: each socket
        # table is read once, when the first of them asks, with what all of them need.
        users = [cast(SocketUser, c) for _, c in collectors if _uses_sockets(c)]
        scrape = ScrapeSockets(functools.reduce(operator.or_, (c.socket_wants() for c in users),
                                                Wants())) if users else None
        try:
            yield from self._collect(collectors, scrape)
        finally:
            if scrape is not None:
                scrape.close()

    def _collect(self, collectors: List[Tuple[str, Collector]],
                 scrape: Optional[ScrapeSockets]) -> Iterator[Metric]:
        duration = _DURATION.family()
        success = _SUCCESS.family()
        for name, collector in collectors:
            waits.take()
            start = time.perf_counter()
            try:
                # Materialise the whole output first: a collector that fails half-way
                # must not leave half of its metrics in the exposition.
                if scrape is not None and _uses_sockets(collector):
                    user = cast(SocketUser, collector)
                    snap = scrape.get(user.procfs, user.socket_source, user.system)
                    metrics = list(user.collect_snapshot(snap))
                else:
                    metrics = list(collector.collect())
                ok = 1.0
            except Exception as e:  # noqa: BLE001 - one collector's failure is not the scrape's
                log.error("collector failed", extra={"collector": name, "err": _one_line(e)})
                log.debug("collector traceback", exc_info=True, extra={"collector": name})
                metrics, ok = [], 0.0
            # Work only: not the time spent waiting for a lock another scrape held.
            duration.add_metric([name], time.perf_counter() - start - waits.take())
            success.add_metric([name], ok)
            yield from metrics
        yield duration
        yield success
        if scrape is not None and scrape.dumps:
            dumps = _DUMPS.family()
            dumps.add_metric([], float(scrape.dumps))
            yield dumps
        if not self._exporter.config.disable_exporter_metrics:
            info = _BUILD.family()
            info.add_metric([__version__, platform.python_version()], 1.0)
            yield info
            yield from self._exporter.process.collect()


def _uses_sockets(c: Collector) -> bool:
    return hasattr(c, "collect_snapshot")


def _one_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return " ".join(text.split())
