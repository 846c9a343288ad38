"""Pure readers of sysfs files (``--path.sysfs``, default /sys): no Prometheus imports.

As under :mod:`exporter.procfs`, the root is a parameter, a missing file is ``None`` ("no data")
and malformed content raises :class:`~exporter.procfs.errors.ParseError`.
"""

from __future__ import annotations

import os
from typing import Optional


def not_a_sysfs(root: str) -> Optional[str]:
    """Why ``root`` is not a sysfs (as mounted at /sys, or a copy of one), or None. A sysfs has
    ``class/net/`` (every network device, loopback included); without it every interface would
    silently lose its state, MTU and speed."""
    if not os.path.isdir(os.path.join(root, "class", "net")):
        return "has no class/net/ directory"
    return None
