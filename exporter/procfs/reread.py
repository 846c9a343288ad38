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

A file printed whole by one handler, a sysctl or a seq_file of one show() (the counters files
``ONE_SHOW``), comes whole from one ``pread`` at offset 0 into a buffer larger than it: no read
is spent finding the end (:func:`pread_whole`). The buffer is sized to the file, from 4 KiB,
doubled while a read fills it, and remembered per file by the caller: a sysctl read makes the
kernel allocate and zero a buffer of the size asked (proc_sys_call_handler), so asking 64 KiB
for a six-byte value costs four times the read itself. Other files (net/dev, net/route, ...)
come one seq_file buffer per read and are read to the end (:func:`pread_all`).

Descriptors are bounded: at most ``max_fds`` are held; beyond that the files are opened, read
and closed each time, with the same result.
"""

from __future__ import annotations

import os
from typing import Dict, Hashable, Iterable, List, Optional, Sequence, Tuple

_CHUNK = 1 << 16
# net/ files printed by a single seq_file show() (proc_create_net_single).
ONE_SHOW = frozenset({"snmp", "netstat", "snmp6", "sockstat", "sockstat6"})
FIRST_SIZE = 4096


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


def pread_whole(fd: int, size: int) -> Tuple[bytes, int]:
    """A file printed whole by one handler, read from offset 0 into a buffer of ``size`` bytes,
    doubled and read again while a read fills it (it may have been cut short): the content,
    and the size that held it, for the next read."""
    data = os.pread(fd, size, 0)
    while len(data) >= size:
        size *= 2
        data = os.pread(fd, size, 0)
    return data, size


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
        # Buffer sizes per name, for files printed whole (see pread_whole); 0: read to the end.
        self._sizes = [FIRST_SIZE if single_record else 0] * len(self.names)
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
                return [None if fd is None else self._read(i, fd) for i, fd in enumerate(fds)]
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
            out = [None if fd is None else self._read(i, fd) for i, fd in enumerate(opened)]
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

    def _read(self, i: int, fd: int) -> bytes:
        if not self._sizes[i]:
            return pread_all(fd)
        data, self._sizes[i] = pread_whole(fd, self._sizes[i])
        return data

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
