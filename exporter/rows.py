"""Metric families that keep their samples as rows until someone asks for ``samples``.

A scrape builds a few hundred samples (about a thousand on a host with a hundred listeners),
and client_python makes each one a ``Sample`` holding a fresh dict of its labels, which the text
encoder then takes apart again to find the line it wrote last time. :class:`GaugeRows` and
:class:`CounterRows` take ``add_metric(label_values, value)`` as client_python's families do,
but keep ``(label values, value)``; :func:`exporter.exposition.generate_text` writes the rows
directly. Everything else sees ordinary families: reading ``samples`` turns the rows into
``Sample``s (and keeps them, so a collector may still append to the list it gets).
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

Row = Tuple[Tuple[str, ...], float]


class _Rows:
    """The rows behind ``samples``. ``_rows`` are newer than ``_samples``: whoever reads
    ``samples`` gets both, in the order they were added."""

    _rows: List[Row]
    _samples: List[Sample]
    _labelnames: Sequence[str]
    row_name: str  # the samples' name: the family's, with _total for a counter

    @property
    def samples(self) -> List[Sample]:
        rows = self._rows
        if rows:
            name, names = self.row_name, self._labelnames
            self._samples.extend(Sample(name, dict(zip(names, values)), value, None)
                                 for values, value in rows)
            rows.clear()
        return self._samples

    @samples.setter
    def samples(self, samples: List[Sample]) -> None:
        self._samples = samples
        self._rows = []


class GaugeRows(_Rows, GaugeMetricFamily):  # type: ignore[misc]
    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        super().__init__(name, documentation, labels=labels)
        self.row_name = self.name

    def add_metric(self, labels: Sequence[str], value: float,
                   timestamp: Optional[Any] = None) -> None:
        if timestamp is not None:
            GaugeMetricFamily.add_metric(self, labels, value, timestamp)
        else:
            self._rows.append((tuple(labels), value))


class CounterRows(_Rows, CounterMetricFamily):  # type: ignore[misc]
    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        super().__init__(name, documentation, labels=labels)
        self.row_name = self.name + "_total"

    def add_metric(self, labels: Sequence[str], value: float,
                   created: Optional[float] = None, timestamp: Optional[Any] = None,
                   exemplar: Optional[Any] = None) -> None:
        if created is not None or timestamp is not None or exemplar is not None:
            CounterMetricFamily.add_metric(self, labels, value, created, timestamp, exemplar)
        else:
            self._rows.append((tuple(labels), value))


def has_samples(family: Metric) -> bool:
    """Whether ``family`` has any sample, without turning its rows into Samples."""
    return bool(family.__dict__.get("_rows")) or bool(family.samples)
