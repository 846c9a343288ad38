"""Collectors: one module per collector, each registered under the one word that names it
everywhere (module, ``--collector.<name>`` flag, ``collector`` label, test file, dashboard row).

Importing this package registers them all, in the order listed here. A collector module
declares everything about itself through :mod:`exporter.collectors.api`: its metrics
(``MetricDoc``, kept as module-level constants such as ``M_INFO``), its option dataclass and the
``Flag`` of each option, and ``register``. It never imports the scrape (:mod:`exporter.scrape`)
or the command line. Collectors that read sockets implement ``socket_wants()`` and
``collect_snapshot(snap)`` and get the scrape's shared :mod:`exporter.sockets` snapshot.
"""

# Registration order is the order of the reference and of the exposition, not alphabetical.
from exporter.collectors import sockets  # noqa: F401, I001
from exporter.collectors import listeners  # noqa: F401
from exporter.collectors import protocols  # noqa: F401
from exporter.collectors import interfaces  # noqa: F401
from exporter.collectors import routes  # noqa: F401
from exporter.collectors import ports  # noqa: F401
from exporter.collectors import limits  # noqa: F401
from exporter.collectors import netns  # noqa: F401
from exporter.collectors import tcpevents  # noqa: F401
