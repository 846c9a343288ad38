"""Collectors: one module per collector, each registered under the one word that names it
everywhere (module, ``--collector.<name>`` flag, ``collector`` label, test file, dashboard row).

Importing this package registers them all; their order in the exposition and the reference
is :data:`exporter.collectors.api.ORDER`, not the order of the imports below. A collector module
declares everything about itself through :mod:`exporter.collectors.api`: its metrics
(``MetricDoc``, kept as module-level constants such as ``M_INFO``), its option dataclass and the
``Flag`` of each option, and ``register``. It never imports the scrape (:mod:`exporter.scrape`)
or the command line. Collectors that read sockets implement ``socket_wants()`` and
``collect_snapshot(snap)`` and get the scrape's shared :mod:`exporter.sockets` snapshot.
"""

from exporter.collectors import (  # noqa: F401  (importing registers them)
    interfaces,
    limits,
    listeners,
    netns,
    ports,
    protocols,
    routes,
    sockets,
    tcpevents,
)
