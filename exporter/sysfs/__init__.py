"""Pure readers of sysfs files (``--path.sysfs``, default /sys): no Prometheus imports.

As under :mod:`exporter.procfs`, the root is a parameter, a missing file is ``None`` ("no data")
and malformed content raises :class:`~exporter.procfs.errors.ParseError`.
"""
