"""The names the rest of the code imported from here before the declaration API and the scrape
were separated, kept so that those imports keep working:
:mod:`exporter.collectors.api` declares collectors (``MetricDoc``, ``register``, options and
flags) and :mod:`exporter.scrape` runs them (``Exporter``). New code imports from those.
"""

from __future__ import annotations

from exporter.collectors.api import NAMESPACE, Collector, CollectorSpec, MetricDoc, register
from exporter.scrape import EXPORTER_METRICS, Exporter, SocketUser, check_names, specs

__all__ = ["EXPORTER_METRICS", "NAMESPACE", "Collector", "CollectorSpec", "Exporter",
           "MetricDoc", "SocketUser", "check_names", "register", "specs"]
