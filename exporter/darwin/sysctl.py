"""macOS sysctl calls through ctypes: the plumbing only, bytes in and out.

From <sys/sysctl.h> (macOS SDK; xnu bsd/sys/sysctl.h)::

    int sysctlbyname(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen);
    int sysctl(int *name, u_int namelen, void *oldp, size_t *oldlenp, void *newp, size_t newlen);

Both return 0, or -1 with errno set. Reading is two calls, as netstat does: one with
``oldp == NULL`` for the size, one with a buffer of that size. A table (the socket lists, the
routing table) can grow between the two; the kernel then answers ENOMEM, and the read starts
again with the new size, at most :data:`TRIES` times. The fixed-size statistics structures are
copied whole, or as much of them as the buffer holds (``SYSCTL_OUT(req, &stat, MIN(sizeof
stat, req->oldlen))``, e.g. tcp_getstat in xnu bsd/netinet/tcp_input.c).

libc is loaded on the first call, never at import, so this module imports on every system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import threading
from typing import Any, Callable, Optional

# <sys/sysctl.h> CTL_NET, <sys/socket.h> PF_ROUTE (== AF_ROUTE, 17 on macOS) and NET_RT_DUMP.
CTL_NET = 4
PF_ROUTE = 17
NET_RT_DUMP = 1
# net.route.0.<af>.dump.0, af 0: every family (netstat -r asks the same with NET_RT_DUMP2).
ROUTE_DUMP_MIB = (CTL_NET, PF_ROUTE, 0, 0, NET_RT_DUMP, 0)

# Reads of a table that keeps growing past its size estimate (netstat's route.c: MAX_TRIES 10).
TRIES = 8

_lock = threading.Lock()
_libc: Optional[Any] = None


class SysctlError(OSError):
    """A sysctl call failed: ``errno`` is the kernel's answer (ENOENT: no such name here)."""


def _load() -> Any:
    """libc, with the two functions' signatures declared (loaded once, on first use)."""
    global _libc
    with _lock:
        if _libc is None:
            path = ctypes.util.find_library("c") or "/usr/lib/libSystem.B.dylib"
            lib = ctypes.CDLL(path, use_errno=True)
            size_p = ctypes.POINTER(ctypes.c_size_t)
            lib.sysctlbyname.argtypes = [ctypes.c_char_p, ctypes.c_void_p, size_p,
                                         ctypes.c_void_p, ctypes.c_size_t]
            lib.sysctlbyname.restype = ctypes.c_int
            lib.sysctl.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_uint, ctypes.c_void_p,
                                   size_p, ctypes.c_void_p, ctypes.c_size_t]
            lib.sysctl.restype = ctypes.c_int
            _libc = lib
        return _libc


# One call: (buffer or None, pointer to its size) -> 0 or -1.
_Call = Callable[[Optional["ctypes.Array[ctypes.c_char]"], Any], int]


def _read(call: _Call, what: str, slack: bool) -> bytes:
    for _ in range(TRIES):
        size = ctypes.c_size_t(0)
        if call(None, ctypes.byref(size)) != 0:
            raise _error(what)
        want = size.value + (size.value // 2 if slack else 0)
        buf = ctypes.create_string_buffer(max(want, 1))
        size = ctypes.c_size_t(want)
        if call(buf, ctypes.byref(size)) == 0:
            return buf.raw[:size.value]
        err = ctypes.get_errno()
        if err != errno.ENOMEM:
            raise SysctlError(err, f"sysctl {what}: {os.strerror(err)}")
    raise SysctlError(errno.ENOMEM, f"sysctl {what}: still growing after {TRIES} reads")


def _error(what: str) -> SysctlError:
    err = ctypes.get_errno()
    return SysctlError(err, f"sysctl {what}: {os.strerror(err)}")


def by_name(name: str, table: bool = False) -> bytes:
    """The value of the sysctl ``name`` (``net.inet.tcp.stats``) as the kernel copies it out.
    ``table``: a list that may grow between the size query and the read (half as much again
    is allocated, as netstat does for the routing table)."""
    lib = _load()
    raw = name.encode()
    return _read(lambda buf, size: int(lib.sysctlbyname(raw, buf, size, None, 0)), name, table)


def route_dump() -> bytes:
    """``CTL_NET, PF_ROUTE, 0, 0, NET_RT_DUMP, 0``: every route of every family, one
    ``struct rt_msghdr`` and its sockaddrs per route (:func:`exporter.darwin.decode.routes`)."""
    lib = _load()
    mib = (ctypes.c_int * len(ROUTE_DUMP_MIB))(*ROUTE_DUMP_MIB)
    return _read(lambda buf, size: int(lib.sysctl(mib, len(ROUTE_DUMP_MIB), buf, size, None, 0)),
                 "net.route.0.0.dump", True)
