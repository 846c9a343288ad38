"""/proc files kept open across scrapes and read again from offset 0.

A /proc/net file is a seq_file: every read from offset 0 makes the kernel print it afresh, so
an open descriptor read with ``pread(fd, n, 0)`` gives the current content, as a fresh open
does. What it saves is the open (a path walk through /proc/<pid>/net, about 10 µs) and, for
files longer than a page, a second printing: a fresh seq_file starts with a one-page buffer,
and a file that overflows it (/proc/net/netstat is 4 KiB and more) is printed twice on its first
read (fs/seq_file.c seq_read_iter). For the few counters files read in every namespace every
scrape, that halves the kernel's work.

An open /proc/<pid>/net file holds a reference to its network namespace (single_open_net), so
it keeps the namespace alive: whoever holds files closes them as soon as the namespace is no
longer found (:meth:`HeldFiles.sweep`), like the sock_diag sockets of tier 2. Because of that
reference the namespace's inode cannot be reused while the files are held, so the namespace's
key stays its own.

Descriptors are bounded: at most ``max_fds`` are held; beyond that the files are opened, read
and closed each time, with the same result.
"""

from __future__ import annotations

import os
from typing import Dict, Hashable, Iterable, List, Optional, Sequence

_CHUNK = 1 << 16


def pread_all(fd: int) -> bytes:
    """The whole content of an open /proc file, printed afresh (read from offset 0). As with
    a fresh read, only an empty read ends it: a file of many records (/proc/net/tcp) comes one
    seq_file buffer at a time."""
    data = os.pread(fd, _CHUNK, 0)
    if not data:
        return data
    more = os.pread(fd, _CHUNK, len(data))
    if not more:
        return data
    chunks = [data, more]
    off = len(data) + len(more)
    while more:
        more = os.pread(fd, _CHUNK, off)
        chunks.append(more)
        off += len(more)
    return b"".join(chunks)


def _pread_once(fd: int) -> bytes:
    data = os.pread(fd, _CHUNK, 0)
    return data if len(data) < _CHUNK else pread_all(fd)


def nofile_budget(reserve: int = 512) -> int:
    """Descriptors that may be held: half of what RLIMIT_NOFILE leaves after ``reserve`` for
    connections, sockets and the other collectors' files."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 0
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(0, (soft - reserve) // 2)


class HeldFiles:
    """The files ``names`` of one directory per key (a namespace), held open between reads.

    :meth:`read` gives their contents (None for a file that does not exist there, e.g.
    sockstat6 with IPv6 off). Not thread-safe: its user serialises calls.
    """

    def __init__(self, names: Sequence[str], max_fds: Optional[int] = None, *,
                 single_record: bool = False) -> None:
        self.names = tuple(names)
        # Files printed whole by one seq_file show() (single_open: net/snmp, net/netstat,
        # net/sockstat): one read from offset 0 returns all of a file shorter than the read,
        # so the read that would find the end is left out. Not so for files of many records
        # (net/tcp), which come one buffer per read.
        self._read = _pread_once if single_record else pread_all
        self.max_fds = nofile_budget() if max_fds is None else max_fds
        self._held: Dict[Hashable, List[Optional[int]]] = {}
        self._fds = 0

    def __len__(self) -> int:
        return len(self._held)

    @property
    def fds(self) -> int:
        """Descriptors held now."""
        return self._fds

    def read(self, key: Hashable, directory: str) -> List[Optional[bytes]]:
        """The contents of the files of ``key``: from the held descriptors, or from
        ``directory`` (opened, and held if the budget allows). A file that does not exist is
        None, and so is every file of a directory that is gone (the process exited); other
        errors (permission) raise OSError."""
        fds = self._held.get(key)
        if fds is not None:
            try:
                read = self._read
                return [None if fd is None else read(fd) for fd in fds]
            except OSError:
                self.drop(key)  # opened afresh below
        opened: List[Optional[int]] = []
        try:
            for name in self.names:
                try:
                    opened.append(os.open(os.path.join(directory, name),
                                          os.O_RDONLY | os.O_CLOEXEC))
                except FileNotFoundError:
                    opened.append(None)
            out = [None if fd is None else self._read(fd) for fd in opened]
        except OSError:
            _close(opened)
            raise
        n = sum(fd is not None for fd in opened)
        if n and self._fds + n <= self.max_fds:
            self._held[key] = opened
            self._fds += n
        else:
            _close(opened)
        return out

    def drop(self, key: Hashable) -> None:
        fds = self._held.pop(key, None)
        if fds is not None:
            self._fds -= _close(fds)

    def sweep(self, keys: Iterable[Hashable]) -> None:
        """Close the files of every key not in ``keys`` (namespaces no longer found)."""
        live = set(keys)
        for key in [k for k in self._held if k not in live]:
            self.drop(key)

    def close(self) -> None:
        for key in list(self._held):
            self.drop(key)


def _close(fds: List[Optional[int]]) -> int:
    n = 0
    for fd in fds:
        if fd is not None:
            os.close(fd)
            n += 1
    return n


__all__ = ["HeldFiles", "nofile_budget", "pread_all"]
