"""sock_diag sockets opened inside other network namespaces, kept open across scrapes.

A netlink socket belongs to the namespace of the thread that created it, for life
(net/netlink/af_netlink.c netlink_create takes sock_net of current), and any thread may dump
from it. So a short-lived thread enters the namespace with setns(2), opens the socket and ends;
setns changes only the calling thread (kernel/nsproxy.c), so the exporter's other threads never
leave the host's namespace. ``os.setns`` exists only from Python 3.12: libc's ``setns`` is
called through ctypes.

Entering needs CAP_SYS_PTRACE (to open another process's /proc/<pid>/ns/net: ptrace_may_access
in proc_ns_get_link) and CAP_SYS_ADMIN (setns into a network namespace: netns_install checks
CAP_SYS_ADMIN in the namespace's user namespace).

An open socket holds a reference on its namespace (sk_alloc takes get_net for user sockets), so
a namespace whose processes and mounts are gone lives on as long as the exporter's socket does:
:class:`SocketPool` closes the sockets of namespaces that were not seen in a scrape. Holding the
namespace also keeps its nsfs inode from being reused while it is cached. Each socket's
namespace is identified on opening by its SO_NETNS_COOKIE (Linux 5.14+, a 64-bit number never
reused during the system's life), and the pool refuses to keep two sockets for one cookie, so a
namespace reached by two paths (a process and a mount, before and after a pid was reused) is
dumped once.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Callable, Dict, Hashable, Iterable, List, Optional, Tuple, TypeVar

from exporter.netlink.transport import open_socket

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
SO_NETNS_COOKIE = 71  # include/uapi/asm-generic/socket.h (Linux 5.14+)
THREAD_TIMEOUT = 10.0  # seconds; setns and socket() do not block, this only bounds a bug

T = TypeVar("T")

_libc: Optional[ctypes.CDLL] = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


class EnterError(OSError):
    """A namespace could not be entered; ``permission`` tells a missing capability from a
    namespace that went away."""

    @property
    def permission(self) -> bool:
        return self.errno in (errno.EPERM, errno.EACCES)


def run_in(path: str, fn: Callable[[], T], expect: Optional[Tuple[int, int]] = None) -> T:
    """Run ``fn`` in a new thread that has entered the network namespace at ``path`` (a
    /proc/<pid>/ns/net link or an nsfs mount) and return its result.

    ``expect`` is the (st_dev, st_ino) the namespace must have: checked on the opened file
    descriptor, so a pid reused by a process of another namespace is caught (ESTALE).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise EnterError(e.errno, f"open {path}: {e.strerror}") from None
    box: Dict[str, object] = {}
    try:
        if expect is not None:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != expect:
                raise EnterError(errno.ESTALE, f"{path} is no longer the namespace found")

        def target() -> None:
            try:
                _setns(fd)
            except OSError as e:
                box["e"] = EnterError(e.errno, f"setns {path}: {e.strerror}")
                return
            try:
                box["v"] = fn()
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                box["e"] = e

        t = threading.Thread(target=target, name="netns-enter", daemon=True)
        t.start()
        t.join(THREAD_TIMEOUT)
        if t.is_alive():
            raise EnterError(errno.ETIMEDOUT, f"entering {path} did not finish")
    finally:
        os.close(fd)
    if "e" in box:
        raise box["e"]  # type: ignore[misc]
    return box["v"]  # type: ignore[return-value]


def netns_cookie(sock: socket.socket) -> Optional[int]:
    """The SO_NETNS_COOKIE of the socket's namespace; None before Linux 5.14."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
    except OSError:
        return None
    return int(struct.unpack("<Q", raw)[0])


@dataclass
class Entry:
    sock: socket.socket
    cookie: Optional[int]


class SocketPool:
    """sock_diag sockets by namespace key, opened on first use and closed by :meth:`sweep` when
    their namespace was not seen. Not thread-safe: the caller serialises scrapes."""

    def __init__(self) -> None:
        self._entries: Dict[Hashable, Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def cookies(self) -> List[Optional[int]]:
        return [e.cookie for e in self._entries.values()]

    def cookie(self, key: Hashable) -> Optional[int]:
        """The SO_NETNS_COOKIE of the socket kept for ``key``; None when none is kept (or the
        kernel has no cookies)."""
        entry = self._entries.get(key)
        return None if entry is None else entry.cookie

    def get(self, key: Hashable, path: Optional[str],
            expect: Optional[Tuple[int, int]] = None) -> socket.socket:
        """The socket of namespace ``key``, opening it inside ``path`` (None: the exporter's
        own namespace, no setns) when there is none yet."""
        entry = self._entries.get(key)
        if entry is not None:
            return entry.sock
        sock = open_socket() if path is None else run_in(path, open_socket, expect)
        cookie = netns_cookie(sock)
        if cookie is not None:
            for other_key, other in self._entries.items():
                if other.cookie == cookie:
                    sock.close()
                    raise EnterError(errno.EEXIST, f"namespace already read as {other_key}")
        self._entries[key] = Entry(sock, cookie)
        return sock

    def drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            entry.sock.close()

    def sweep(self, seen: Iterable[Hashable]) -> int:
        """Close the sockets of namespaces not in ``seen``; how many were closed."""
        keep = set(seen)
        gone = [k for k in self._entries if k not in keep]
        for k in gone:
            self.drop(k)
        return len(gone)

    def close(self) -> None:
        self.sweep(())
