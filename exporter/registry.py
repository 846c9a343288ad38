"""Collector registry in the node_exporter manner.

Each collector module registers a factory under one name with a default on/off. The
:class:`Exporter` built from a :class:`~exporter.config.Config` instantiates the enabled ones and,
at every scrape, runs each, times it and reports
``netstat_exporter_collector_duration_seconds{collector}`` and
``netstat_exporter_collector_success{collector}``. A collector that raises drops only its own
metrics for that scrape; the reason is logged.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass
from typing import (
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Union,
)

from prometheus_client import ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as _PromCollector

from exporter import __version__, waits
from exporter.config import Config, UnknownCollectorError

log = logging.getLogger(__name__)

NAMESPACE = "netstat"


class Collector(Protocol):
    """What a collector is: something that yields fresh metric families on every call."""

    def collect(self) -> Iterable[Metric]: ...


Factory = Callable[[Config], Collector]


@dataclass(frozen=True)
class MetricDoc:
    """One metric a collector can emit: the single source of its name, type, help and labels.

    ``docs/metrics.md`` is generated from these, and collectors build their families from them
    (:meth:`family`), so the reference and the exposition cannot drift apart. ``name`` is the
    name as exposed (counters end in ``_total``).
    """

    name: str
    type: str  # "gauge" or "counter"
    help: str
    labels: Tuple[str, ...] = ()
    note: str = ""  # shown in the reference only (e.g. "only with --collector.x.flag")

    def __post_init__(self) -> None:
        if self.type not in ("gauge", "counter"):
            raise ValueError(f"{self.name}: type must be gauge or counter")
        if (self.type == "counter") != self.name.endswith("_total"):
            raise ValueError(f"{self.name}: counters, and only counters, end in _total")

    def family(self) -> Union[GaugeMetricFamily, CounterMetricFamily]:
        """A fresh, empty family for one scrape."""
        if self.type == "counter":
            return CounterMetricFamily(self.name[: -len("_total")], self.help,
                                       labels=list(self.labels))
        return GaugeMetricFamily(self.name, self.help, labels=list(self.labels))


@dataclass(frozen=True)
class CollectorSpec:
    name: str
    default_enabled: bool
    description: str
    factory: Factory
    metrics: Tuple[MetricDoc, ...] = ()


_SPECS: Dict[str, CollectorSpec] = {}


def register(name: str, *, default_enabled: bool, description: str,
             metrics: Sequence[MetricDoc] = ()) -> Callable[[Factory], Factory]:
    """Class or function decorator: register a collector factory under ``name``, with the
    metrics it can emit."""

    def deco(factory: Factory) -> Factory:
        if name in _SPECS:
            raise RuntimeError(f"collector {name!r} registered twice")
        _SPECS[name] = CollectorSpec(name, default_enabled, description, factory, tuple(metrics))
        return factory

    return deco


def specs() -> Mapping[str, CollectorSpec]:
    """Every registered collector, by name, in registration order."""
    import exporter.collectors  # noqa: F401  (importing registers them)

    return dict(_SPECS)


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

    @property
    def names(self) -> List[str]:
        return list(self.collectors)

    def target(self, only: Optional[Sequence[str]] = None, exclude: Sequence[str] = ()) -> _Target:
        """A registry-like object for one scrape, restricted as ``collect[]``/``exclude[]`` ask."""
        names = list(self.collectors) if not only else [n for n in self.collectors if n in only]
        names = [n for n in names if n not in exclude]
        return _Target(self, names)

    def unknown(self, names: Iterable[str]) -> List[str]:
        return sorted(set(names) - set(self.collectors))

    def reload(self) -> None:
        """Have every collector that reads a file of its own re-read it (on SIGHUP)."""
        for collector in self.collectors.values():
            reload = getattr(collector, "reload", None)
            if callable(reload):
                reload()


EXPORTER_METRICS = (
    MetricDoc(f"{NAMESPACE}_exporter_collector_duration_seconds", "gauge",
              "How long a collector took in this scrape.", ("collector",)),
    MetricDoc(f"{NAMESPACE}_exporter_collector_success", "gauge",
              "1 if the collector succeeded in this scrape, 0 if it failed (see the exporter "
              "log).", ("collector",)),
    MetricDoc(f"{NAMESPACE}_exporter_build_info", "gauge",
              "Version of netstat-exporter and the Python that runs it; value 1.",
              ("version", "python_version"),
              note="left out with --web.disable-exporter-metrics"),
)
_DURATION, _SUCCESS, _BUILD = EXPORTER_METRICS


class _Target(_PromCollector):
    def __init__(self, exporter: Exporter, names: List[str]) -> None:
        self._exporter = exporter
        self._names = names

    def collect(self) -> Iterator[Metric]:
        duration = _DURATION.family()
        success = _SUCCESS.family()
        for name in self._names:
            waits.take()
            start = time.perf_counter()
            try:
                # Materialise the whole output first: a collector that fails half-way
                # must not leave half of its metrics in the exposition.
                metrics = list(self._exporter.collectors[name].collect())
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
        if not self._exporter.config.disable_exporter_metrics:
            info = _BUILD.family()
            info.add_metric([__version__, platform.python_version()], 1.0)
            yield info
            yield from self._exporter.process.collect()


def _one_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return " ".join(text.split())
