"""The IP Helper API calls (iphlpapi.dll), through ctypes: the call plumbing only.

Each function makes one call (or one sizing loop) and returns the raw bytes of the structure
the call filled; :mod:`exporter.windows.decode` holds the layouts and reads them. The DLL is
loaded on the first call, never at import, so this module imports on any system. Prototypes as
iphlpapi.h and netioapi.h of the Windows SDK declare them (WINAPI is the x64 calling convention,
which ctypes.WinDLL uses):

    ULONG GetTcpStatisticsEx2(PMIB_TCPSTATS2 Statistics, ADDRESS_FAMILY Family);  // 1703+
    ULONG GetTcpStatisticsEx(PMIB_TCPSTATS Statistics, ULONG Family);
    ULONG GetUdpStatisticsEx2(PMIB_UDPSTATS2 Statistics, ADDRESS_FAMILY Family);  // 1703+
    ULONG GetUdpStatisticsEx(PMIB_UDPSTATS Statistics, ULONG Family);
    ULONG GetIpStatisticsEx(PMIB_IPSTATS Statistics, ULONG Family);
    ULONG GetIcmpStatisticsEx(PMIB_ICMP_EX Statistics, ULONG Family);
    NETIO_STATUS GetIpForwardTable2(ADDRESS_FAMILY Family, PMIB_IPFORWARD_TABLE2 *Table);
    NETIO_STATUS GetIfTable2(PMIB_IF_TABLE2 *Table);
    VOID FreeMibTable(PVOID Memory);
    DWORD GetExtendedTcpTable(PVOID pTcpTable, PDWORD pdwSize, BOOL bOrder, ULONG ulAf,
                              TCP_TABLE_CLASS TableClass, ULONG Reserved);
    DWORD GetExtendedUdpTable(PVOID pUdpTable, PDWORD pdwSize, BOOL bOrder, ULONG ulAf,
                              UDP_TABLE_CLASS TableClass, ULONG Reserved);

(https://learn.microsoft.com/windows/win32/api/iphlpapi/ and .../api/netioapi/.) Every one
returns NO_ERROR (0) or a Win32 error code, raised here as :class:`IphlpapiError`.
"""

from __future__ import annotations

import ctypes
import threading
from ctypes import POINTER, byref, c_int32, c_uint16, c_uint32, c_void_p
from typing import Any, Optional, Type

from exporter.windows import decode
from exporter.windows.decode import AF_INET, AF_INET6  # noqa: F401  (callers pass these)

AF_UNSPEC = 0
NO_ERROR = 0
ERROR_INSUFFICIENT_BUFFER = 122  # winerror.h
ERROR_PROC_NOT_FOUND = 127
TCP_TABLE_OWNER_PID_ALL = 5  # iprtrmib.h TCP_TABLE_CLASS
UDP_TABLE_OWNER_PID = 1  # iprtrmib.h UDP_TABLE_CLASS
# GetExtendedTcpTable/GetExtendedUdpTable: how often to ask again when the table grew between
# the call that gave the size and the call that reads it.
SIZING_TRIES = 8

ULONG = DWORD = c_uint32
ADDRESS_FAMILY = c_uint16

# name -> (restype, argtypes); a pointer to a structure is passed as c_void_p.
_PROTOTYPES = {
    "GetTcpStatisticsEx2": (ULONG, (c_void_p, ADDRESS_FAMILY)),
    "GetTcpStatisticsEx": (ULONG, (c_void_p, ULONG)),
    "GetUdpStatisticsEx2": (ULONG, (c_void_p, ADDRESS_FAMILY)),
    "GetUdpStatisticsEx": (ULONG, (c_void_p, ULONG)),
    "GetIpStatisticsEx": (ULONG, (c_void_p, ULONG)),
    "GetIcmpStatisticsEx": (ULONG, (c_void_p, ULONG)),
    "GetIpForwardTable2": (ULONG, (ADDRESS_FAMILY, POINTER(c_void_p))),
    "GetIfTable2": (ULONG, (POINTER(c_void_p),)),
    "FreeMibTable": (None, (c_void_p,)),
    "GetExtendedTcpTable": (DWORD, (c_void_p, POINTER(DWORD), c_int32, ULONG, c_int32, ULONG)),
    "GetExtendedUdpTable": (DWORD, (c_void_p, POINTER(DWORD), c_int32, ULONG, c_int32, ULONG)),
}

_dll: Any = None
_lock = threading.Lock()


class IphlpapiError(OSError):
    """A call that answered with an error code."""

    def __init__(self, function: str, code: int) -> None:
        super().__init__(code, f"{function} failed with Win32 error {code}")
        self.function = function
        self.code = code


def bind(dll: Any) -> Any:
    """Declare the prototypes on ``dll``'s functions; the ``Ex2`` functions Windows before 10
    1703 (and Wine) lack are left out. Returns ``dll``."""
    for name, (restype, argtypes) in _PROTOTYPES.items():
        fn = getattr(dll, name, None)
        if fn is not None:
            fn.restype = restype
            fn.argtypes = argtypes
    return dll


def _load() -> Any:
    global _dll
    with _lock:
        if _dll is None:
            _dll = bind(ctypes.WinDLL("iphlpapi.dll"))  # type: ignore[attr-defined]
        return _dll


def _function(name: str) -> Optional[Any]:
    """The DLL's function ``name``, None where it has none."""
    return getattr(_load(), name, None)


def _required(name: str) -> Any:
    fn = _function(name)
    if fn is None:
        raise IphlpapiError(name, ERROR_PROC_NOT_FOUND)
    return fn


def _check(name: str, code: int) -> None:
    if code != NO_ERROR:
        raise IphlpapiError(name, code)


def _fill(name: str, cls: Type[Any], family: int) -> bytes:
    """Call ``name(&cls, family)`` and return the structure's bytes."""
    fn = _required(name)
    buf = cls()
    _check(name, fn(byref(buf), family))
    return bytes(buf)


def _either(two: str, struct2: Type[Any], one: str, struct1: Type[Any],
            family: int) -> decode.Raw:
    """The 64-bit ``two`` where the DLL has it, else ``one``: (structure name, bytes)."""
    if _function(two) is not None:
        return struct2.__name__, _fill(two, struct2, family)
    return struct1.__name__, _fill(one, struct1, family)


def tcp_statistics(family: int) -> decode.Raw:
    """GetTcpStatisticsEx2, else GetTcpStatisticsEx: ("MIB_TCPSTATS2" or "MIB_TCPSTATS",
    bytes)."""
    return _either("GetTcpStatisticsEx2", decode.MIB_TCPSTATS2,
                   "GetTcpStatisticsEx", decode.MIB_TCPSTATS, family)


def udp_statistics(family: int) -> decode.Raw:
    """GetUdpStatisticsEx2, else GetUdpStatisticsEx: ("MIB_UDPSTATS2" or "MIB_UDPSTATS",
    bytes)."""
    return _either("GetUdpStatisticsEx2", decode.MIB_UDPSTATS2,
                   "GetUdpStatisticsEx", decode.MIB_UDPSTATS, family)


def ip_statistics(family: int) -> bytes:
    """GetIpStatisticsEx: a MIB_IPSTATS."""
    return _fill("GetIpStatisticsEx", decode.MIB_IPSTATS, family)


def icmp_statistics(family: int) -> bytes:
    """GetIcmpStatisticsEx: a MIB_ICMP_EX."""
    return _fill("GetIcmpStatisticsEx", decode.MIB_ICMP_EX, family)


def _table2(name: str, table: Type[Any], *args: Any) -> bytes:
    """A MIB_*_TABLE2 the call allocates: NumEntries, the rows, as bytes; then FreeMibTable."""
    fn = _required(name)
    ptr = c_void_p()
    _check(name, fn(*args, byref(ptr)))
    if not ptr.value:
        raise IphlpapiError(name, 0)
    try:
        count = c_uint32.from_address(ptr.value).value
        rows_field, array = table._fields_[1]
        size = getattr(table, rows_field).offset + count * ctypes.sizeof(array._type_)
        return ctypes.string_at(ptr.value, size)
    finally:
        _load().FreeMibTable(ptr)


def forward_table() -> bytes:
    """GetIpForwardTable2(AF_UNSPEC): both families' routes, a MIB_IPFORWARD_TABLE2."""
    return _table2("GetIpForwardTable2", decode.MIB_IPFORWARD_TABLE2, AF_UNSPEC)


def if_table() -> bytes:
    """GetIfTable2: every interface, a MIB_IF_TABLE2."""
    return _table2("GetIfTable2", decode.MIB_IF_TABLE2)


def slack(size: int) -> int:
    """The buffer asked for a table the last call said needs ``size`` bytes: a quarter more
    and 4 KiB, for the sockets opened between two calls (on a busy host the table grows faster
    than a call that looks up every owner takes)."""
    return size + size // 4 + 4096 if size else 0


def _extended(name: str, family: int, table_class: int) -> bytes:
    """GetExtendedTcpTable/GetExtendedUdpTable: asked for the size, then read into a buffer
    with :func:`slack`, again while ERROR_INSUFFICIENT_BUFFER says the table outgrew it (at
    most SIZING_TRIES calls)."""
    fn = _required(name)
    size = DWORD(0)
    buf: Any = None
    code = ERROR_INSUFFICIENT_BUFFER
    for _ in range(SIZING_TRIES):
        size.value = slack(size.value)
        buf = ctypes.create_string_buffer(size.value) if size.value else None
        code = fn(buf, byref(size), 0, family, table_class, 0)
        if code != ERROR_INSUFFICIENT_BUFFER:
            break
    _check(name, code)
    return b"" if buf is None else buf.raw[:size.value]


def tcp_table(family: int) -> bytes:
    """GetExtendedTcpTable(TCP_TABLE_OWNER_PID_ALL): MIB_TCPTABLE_OWNER_PID (AF_INET) or
    MIB_TCP6TABLE_OWNER_PID (AF_INET6)."""
    return _extended("GetExtendedTcpTable", family, TCP_TABLE_OWNER_PID_ALL)


def udp_table(family: int) -> bytes:
    """GetExtendedUdpTable(UDP_TABLE_OWNER_PID): MIB_UDPTABLE_OWNER_PID or
    MIB_UDP6TABLE_OWNER_PID."""
    return _extended("GetExtendedUdpTable", family, UDP_TABLE_OWNER_PID)


__all__ = ["AF_INET", "AF_INET6", "AF_UNSPEC", "IphlpapiError", "bind", "tcp_statistics",
           "udp_statistics", "ip_statistics", "icmp_statistics", "forward_table", "if_table",
           "tcp_table", "udp_table"]
