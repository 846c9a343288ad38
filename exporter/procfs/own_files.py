"""The exporter's own /proc/net and /proc/sys files, kept open between scrapes.

A default scrape reads about twenty files of ``<procfs>/net`` and ``<procfs>/sys`` (protocol
counters, socket totals, routes, interface counters, the sysctls beside them). They are the
same files every scrape, and a file of /proc printed again from offset 0 (``pread``) is what a
fresh open gives: only the open is saved (a path walk, and for files longer than a page a second
printing, see :mod:`exporter.procfs.reread`), which is most of the cost of the small ones.

Only a procfs root whose ``self`` is this process is kept (:func:`keep`, decided by the scrape
from /proc/self/mountinfo), and only its ``net/`` and ``sys/``: those show the exporter's own
network namespace (the thread group leader's, which the exporter never moves), so a path names
the same file for the life of the process, and the set of paths is the fixed one the collectors
read. Per-process files (/proc/<pid>/...) are never kept. A kept descriptor is never closed
while the exporter runs (a concurrent scrape may be reading it, and a closed number can be
given to another file at once); a file whose read fails fails again as a fresh read would.
"""

from __future__ import annotations

import os
import threading
from typing import Dict, FrozenSet, Optional, Set

from exporter.procfs.reread import pread_all

_DIRS: FrozenSet[str] = frozenset({"net", "sys"})
_lock = threading.Lock()
_roots: Set[str] = set()
_fds: Dict[str, int] = {}


def keep(root: str) -> None:
    """Keep the files of ``root``'s net/ and sys/ open from now on."""
    with _lock:
        _roots.add(root)


def kept(root: str, first: str) -> bool:
    """Whether ``<root>/<first>/...`` is read through a kept descriptor."""
    return first in _DIRS and root in _roots


def read(path: str) -> bytes:
    """The content of ``path``, from its kept descriptor (opened on first use). Raises OSError
    as a fresh read would (a missing file is not kept)."""
    fd = _fds.get(path)
    if fd is None:
        fd = _open(path)
    return pread_all(fd)


def _open(path: str) -> int:
    with _lock:
        fd: Optional[int] = _fds.get(path)
        if fd is None:
            fd = _fds[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        return fd


def close_all() -> None:
    """Close every kept file and keep none from now on (tests, with no scrape running)."""
    with _lock:
        for fd in _fds.values():
            os.close(fd)
        _fds.clear()
        _roots.clear()


def is_own_procfs(root: str) -> bool:
    """Whether ``root`` is a procfs mount (per /proc/self/mountinfo) in which ``self`` is this
    process: the real /proc, or the host's mounted at /host/proc in a container sharing the
    host's pid namespace. A copy of a /proc tree (test fixtures) is not."""
    from exporter.procfs import is_procfs_mount  # the package imports this module

    if not is_procfs_mount(root):
        return False
    try:
        return os.readlink(os.path.join(root, "self")) == str(os.getpid())
    except OSError:
        return False
