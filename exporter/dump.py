"""What ``netstat-exporter dump`` prints: one scrape, for a look or for node_exporter's textfile
collector.

The exporter's own ``process_*`` metrics are left out. node_exporter exports the same names for
its own process, so a file carrying them makes every scrape of node_exporter fail to gather
("... was collected before with the same name and label values",
promhttp_metric_handler_errors_total{cause="gathering"}); and the CPU time and memory of a
process that lives for one dump describe nothing worth keeping.
"""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest

# Names that client_python's ProcessCollector exports, as node_exporter does for itself.
_PROCESS_PREFIX = "process_"


class _WithoutProcessMetrics:
    def __init__(self, target: Any) -> None:
        self._target = target

    def collect(self) -> Iterator[Metric]:
        for metric in self._target.collect():
            if not metric.name.startswith(_PROCESS_PREFIX):
                yield metric


def render(target: Any) -> bytes:
    """The text exposition of one scrape of ``target`` (a collector), without process_*."""
    return generate_latest(_WithoutProcessMetrics(target))
