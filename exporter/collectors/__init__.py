"""Collectors: one module per collector, each registered under the one word that names it
everywhere (module, ``--collector.<name>`` flag, ``collector`` label, test file, dashboard row).

Importing this package registers them all, in the order listed here.
"""

# Registration order, not alphabetical order:
from exporter.collectors import sockets  # noqa: F401, I001
from exporter.collectors import listeners  # noqa: F401
