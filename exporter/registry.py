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
)

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as _PromCollector

from exporter import __version__
from exporter.config import Config, UnknownCollectorError

log = logging.getLogger(__name__)

NAMESPACE = "netstat"


class Collector(Protocol):
    """What a collector is: something that yields fresh metric families on every call."""

    def collect(self) -> Iterable[Metric]: ...


Factory = Callable[[Config], Collector]


@dataclass(frozen=True)
class CollectorSpec:
    name: str
    default_enabled: bool
    description: str
    factory: Factory


_SPECS: Dict[str, CollectorSpec] = {}


def register(name: str, *, default_enabled: bool, description: str) -> Callable[[Factory], Factory]:
    """Class or function decorator: register a collector factory under ``name``."""

    def deco(factory: Factory) -> Factory:
        if name in _SPECS:
            raise RuntimeError(f"collector {name!r} registered twice")
        _SPECS[name] = CollectorSpec(name, default_enabled, description, factory)
        return factory

    return deco


def specs() -> Mapping[str, CollectorSpec]:
    """Every registered collector, by name, in registration order."""
    import exporter.collectors  # noqa: F401  (importing registers them)

    return dict(_SPECS)


def default_collectors() -> frozenset:
    return frozenset(n for n, s in specs().items() if s.default_enabled)


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

    @property
    def names(self) -> List[str]:
        return list(self.collectors)

    def target(self, only: Optional[Sequence[str]] = None, exclude: Sequence[str] = ()) -> "_Target":
        """A registry-like object for one scrape, restricted as ``collect[]``/``exclude[]`` ask."""
        names = list(self.collectors) if not only else [n for n in self.collectors if n in only]
        names = [n for n in names if n not in exclude]
        return _Target(self, names)

    def unknown(self, names: Iterable[str]) -> List[str]:
        return sorted(set(names) - set(self.collectors))


class _Target(_PromCollector):
    def __init__(self, exporter: Exporter, names: List[str]) -> None:
        self._exporter = exporter
        self._names = names

    def collect(self) -> Iterator[Metric]:
        duration = GaugeMetricFamily(
            f"{NAMESPACE}_exporter_collector_duration_seconds",
            "How long a collector took in this scrape.",
            labels=["collector"],
        )
        success = GaugeMetricFamily(
            f"{NAMESPACE}_exporter_collector_success",
            "1 if the collector succeeded in this scrape, 0 if it failed (see the exporter log).",
            labels=["collector"],
        )
        for name in self._names:
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
            duration.add_metric([name], time.perf_counter() - start)
            success.add_metric([name], ok)
            yield from metrics
        yield duration
        yield success
        if not self._exporter.config.disable_exporter_metrics:
            info = GaugeMetricFamily(
                f"{NAMESPACE}_exporter_build_info",
                "Version of netstat-exporter and the Python that runs it; value 1.",
                labels=["version", "python_version"],
            )
            info.add_metric([__version__, platform.python_version()], 1.0)
            yield info


def _one_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return " ".join(text.split())
