"""The exporter's own /proc/net and /proc/sys files, kept open between scrapes.

A default scrape reads about twenty files of ``<procfs>/net`` and ``<procfs>/sys`` (protocol
counters, socket totals, routes, interface counters, the sysctls beside them). They are the
same files every scrape, and a file of /proc printed again from offset 0 (``pread``) is what a
fresh open gives: only the open is saved (a path walk, and for files longer than a page a second
printing, see :mod:`exporter.procfs.reread`), which is most of the cost of the small ones.

The sysctls of ``sys/`` and the counters files of ``net/`` are printed whole by one handler
and read with one ``pread`` sized to them (:func:`exporter.procfs.reread.pread_whole`); the
other files of ``net/`` are read to their end.

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
from typing import Dict, FrozenSet, Optional, Set, Tuple

from exporter.procfs.reread import FIRST_SIZE, ONE_SHOW, pread_all, pread_whole

_DIRS: FrozenSet[str] = frozenset({"net", "sys"})
_lock = threading.Lock()
_roots: Set[str] = set()
# path -> (descriptor, buffer size for a file printed whole by one handler, else 0)
_fds: Dict[str, Tuple[int, int]] = {}


def keep(root: str) -> None:
    """Keep the files of ``root``'s net/ and sys/ open from now on."""
    with _lock:
        _roots.add(root)


def kept(root: str, first: str) -> bool:
    """Whether ``<root>/<first>/...`` is read through a kept descriptor."""
    return first in _DIRS and root in _roots


def read(path: str, whole: bool = False) -> bytes:
    """The content of ``path``, from its kept descriptor (opened on first use); ``whole`` if
    it is printed whole by one handler (:func:`printed_whole`). Raises OSError as a fresh read
    would (a missing file is not kept)."""
    entry = _fds.get(path)
    if entry is None:
        entry = _open(path, whole)
    fd, size = entry
    if not size:
        return pread_all(fd)
    data, grown = pread_whole(fd, size)
    if grown != size:
        _fds[path] = (fd, grown)
    return data


def printed_whole(parts: Tuple[str, ...]) -> bool:
    """Whether ``<root>/<parts...>`` is printed whole by one handler: a sysctl, or one of the
    counters files of net/."""
    return parts[0] == "sys" or (parts[0] == "net" and len(parts) == 2 and parts[1] in ONE_SHOW)


def _open(path: str, whole: bool) -> Tuple[int, int]:
    with _lock:
        entry: Optional[Tuple[int, int]] = _fds.get(path)
        if entry is None:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            entry = _fds[path] = (fd, FIRST_SIZE if whole else 0)
        return entry


def close_all() -> None:
    """Close every kept file and keep none from now on (tests, with no scrape running)."""
    with _lock:
        for fd, _ in _fds.values():
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
