"""The structures Windows's IP Helper API fills, as ctypes layouts, and their decoding into the
seam's vocabulary (:mod:`exporter.system.common`): Linux's group and field names for
``netstat -s``, /proc/net/dev's columns for ``netstat -e``, :class:`Route` for ``netstat -r``,
:class:`Conn` for ``netstat -ano``.

Pure: bytes in, values out; no call is made here, so this module imports and is tested on any
system. The layouts are those of the Windows SDK's headers (tcpmib.h, udpmib.h, ipmib.h,
netioapi.h, ifdef.h, ws2ipdef.h, iprtrmib.h), field names as written there, for Windows x64
(and arm64, whose alignment is the same): DWORD/ULONG are 32 bits, DWORD64/ULONG64 64, enums 32
(an ``int``), WCHAR 16, BOOLEAN 8. Each size is pinned below and checked against the mingw-w64
headers by tests/test_windows_decode.py.

Microsoft's documentation of each structure:
https://learn.microsoft.com/windows/win32/api/tcpmib/ns-tcpmib-mib_tcpstats_lh (MIB_TCPSTATS),
.../tcpmib/ns-tcpmib-mib_tcpstats2, .../udpmib/ns-udpmib-mib_udpstats,
.../udpmib/ns-udpmib-mib_udpstats2, .../ipmib/ns-ipmib-mib_ipstats_lh,
.../ipmib/ns-ipmib-mib_icmp_ex_xpsp1, .../netioapi/ns-netioapi-mib_ipforward_row2,
.../netioapi/ns-netioapi-mib_if_row2, .../tcpmib/ns-tcpmib-mib_tcprow_owner_pid,
.../tcpmib/ns-tcpmib-mib_tcp6row_owner_pid, .../udpmib/ns-udpmib-mib_udprow_owner_pid,
.../udpmib/ns-udpmib-mib_udp6row_owner_pid.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
from ctypes import c_int32, c_uint8, c_uint16, c_uint32, c_uint64
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple, Type

from exporter.procfs.route import RTF_GATEWAY, RTF_UP, Route
from exporter.system.common import Conn, Groups, Link, ProtocolTables
from exporter.vocabulary.names import TCP_CLOSE, tcp_states

DWORD = ULONG = c_uint32
DWORD64 = ULONG64 = c_uint64
USHORT = ADDRESS_FAMILY = c_uint16
UCHAR = BOOLEAN = c_uint8
ENUM = c_int32  # a C enum: TCP_RTO_ALGORITHM, IFTYPE, IF_OPER_STATUS, NL_ROUTE_PROTOCOL, ...
WCHAR = c_uint16  # UTF-16 code unit (ctypes.c_wchar is 32 bits on Linux)

# ws2def.h: Windows's address family numbers (AF_INET6 is 23 there, 10 on Linux).
AF_INET, AF_INET6 = 2, 23
FAMILY_NAMES = {AF_INET: "ipv4", AF_INET6: "ipv6"}


class DecodeError(ValueError):
    """A buffer that cannot hold the structure it is said to hold."""


# --- tcpmib.h / udpmib.h (iprtrmib.h in mingw-w64) ---------------------------------------------

class MIB_TCPSTATS(ctypes.Structure):  # MIB_TCPSTATS_LH: GetTcpStatisticsEx
    _fields_ = [("dwRtoAlgorithm", DWORD), ("dwRtoMin", DWORD), ("dwRtoMax", DWORD),
                ("dwMaxConn", DWORD), ("dwActiveOpens", DWORD), ("dwPassiveOpens", DWORD),
                ("dwAttemptFails", DWORD), ("dwEstabResets", DWORD), ("dwCurrEstab", DWORD),
                ("dwInSegs", DWORD), ("dwOutSegs", DWORD), ("dwRetransSegs", DWORD),
                ("dwInErrs", DWORD), ("dwOutRsts", DWORD), ("dwNumConns", DWORD)]


class MIB_TCPSTATS2(ctypes.Structure):  # GetTcpStatisticsEx2 (Windows 10 1703+)
    _fields_ = [("RtoAlgorithm", ENUM), ("dwRtoMin", DWORD), ("dwRtoMax", DWORD),
                ("dwMaxConn", DWORD), ("dwActiveOpens", DWORD), ("dwPassiveOpens", DWORD),
                ("dwAttemptFails", DWORD), ("dwEstabResets", DWORD), ("dwCurrEstab", DWORD),
                ("dw64InSegs", DWORD64), ("dw64OutSegs", DWORD64), ("dwRetransSegs", DWORD),
                ("dwInErrs", DWORD), ("dwOutRsts", DWORD), ("dwNumConns", DWORD)]


class MIB_UDPSTATS(ctypes.Structure):  # GetUdpStatisticsEx
    _fields_ = [("dwInDatagrams", DWORD), ("dwNoPorts", DWORD), ("dwInErrors", DWORD),
                ("dwOutDatagrams", DWORD), ("dwNumAddrs", DWORD)]


class MIB_UDPSTATS2(ctypes.Structure):  # GetUdpStatisticsEx2 (Windows 10 1703+)
    _fields_ = [("dw64InDatagrams", DWORD64), ("dwNoPorts", DWORD), ("dwInErrors", DWORD),
                ("dw64OutDatagrams", DWORD64), ("dwNumAddrs", DWORD)]


# --- ipmib.h ---------------------------------------------------------------------------------

class MIB_IPSTATS(ctypes.Structure):  # MIB_IPSTATS_LH: GetIpStatisticsEx
    _fields_ = [("dwForwarding", DWORD), ("dwDefaultTTL", DWORD), ("dwInReceives", DWORD),
                ("dwInHdrErrors", DWORD), ("dwInAddrErrors", DWORD), ("dwForwDatagrams", DWORD),
                ("dwInUnknownProtos", DWORD), ("dwInDiscards", DWORD), ("dwInDelivers", DWORD),
                ("dwOutRequests", DWORD), ("dwRoutingDiscards", DWORD),
                ("dwOutDiscards", DWORD), ("dwOutNoRoutes", DWORD), ("dwReasmTimeout", DWORD),
                ("dwReasmReqds", DWORD), ("dwReasmOks", DWORD), ("dwReasmFails", DWORD),
                ("dwFragOks", DWORD), ("dwFragFails", DWORD), ("dwFragCreates", DWORD),
                ("dwNumIf", DWORD), ("dwNumAddr", DWORD), ("dwNumRoutes", DWORD)]


class MIBICMPSTATS_EX(ctypes.Structure):
    _fields_ = [("dwMsgs", DWORD), ("dwErrors", DWORD), ("rgdwTypeCount", DWORD * 256)]


class MIB_ICMP_EX(ctypes.Structure):  # GetIcmpStatisticsEx
    _fields_ = [("icmpInStats", MIBICMPSTATS_EX), ("icmpOutStats", MIBICMPSTATS_EX)]


# --- ws2def.h / ws2ipdef.h / guiddef.h -----------------------------------------------------

class SOCKADDR_IN(ctypes.Structure):
    _fields_ = [("sin_family", ADDRESS_FAMILY), ("sin_port", UCHAR * 2),  # network order
                ("sin_addr", UCHAR * 4), ("sin_zero", UCHAR * 8)]


class SOCKADDR_IN6(ctypes.Structure):
    _fields_ = [("sin6_family", ADDRESS_FAMILY), ("sin6_port", UCHAR * 2),
                ("sin6_flowinfo", ULONG), ("sin6_addr", UCHAR * 16), ("sin6_scope_id", ULONG)]


class SOCKADDR_INET(ctypes.Union):
    _fields_ = [("Ipv4", SOCKADDR_IN), ("Ipv6", SOCKADDR_IN6), ("si_family", ADDRESS_FAMILY)]


class GUID(ctypes.Structure):
    _fields_ = [("Data1", c_uint32), ("Data2", c_uint16), ("Data3", c_uint16),
                ("Data4", c_uint8 * 8)]


# --- netioapi.h ------------------------------------------------------------------------------

class IP_ADDRESS_PREFIX(ctypes.Structure):
    _fields_ = [("Prefix", SOCKADDR_INET), ("PrefixLength", c_uint8)]


class MIB_IPFORWARD_ROW2(ctypes.Structure):
    _fields_ = [("InterfaceLuid", ULONG64),  # NET_LUID, a union around a ULONG64
                ("InterfaceIndex", ULONG),  # NET_IFINDEX
                ("DestinationPrefix", IP_ADDRESS_PREFIX), ("NextHop", SOCKADDR_INET),
                ("SitePrefixLength", UCHAR), ("ValidLifetime", ULONG),
                ("PreferredLifetime", ULONG), ("Metric", ULONG),
                ("Protocol", ENUM),  # NL_ROUTE_PROTOCOL
                ("Loopback", BOOLEAN), ("AutoconfigureAddress", BOOLEAN), ("Publish", BOOLEAN),
                ("Immortal", BOOLEAN), ("Age", ULONG),
                ("Origin", ENUM)]  # NL_ROUTE_ORIGIN


class MIB_IPFORWARD_TABLE2(ctypes.Structure):  # GetIpForwardTable2; Table[ANY_SIZE]
    _fields_ = [("NumEntries", ULONG), ("Table", MIB_IPFORWARD_ROW2 * 1)]


IF_MAX_STRING_SIZE = 256  # ifdef.h
IF_MAX_PHYS_ADDRESS_LENGTH = 32


class MIB_IF_ROW2(ctypes.Structure):
    _fields_ = [("InterfaceLuid", ULONG64), ("InterfaceIndex", ULONG),
                ("InterfaceGuid", GUID),
                ("Alias", WCHAR * (IF_MAX_STRING_SIZE + 1)),
                ("Description", WCHAR * (IF_MAX_STRING_SIZE + 1)),
                ("PhysicalAddressLength", ULONG),
                ("PhysicalAddress", UCHAR * IF_MAX_PHYS_ADDRESS_LENGTH),
                ("PermanentPhysicalAddress", UCHAR * IF_MAX_PHYS_ADDRESS_LENGTH),
                ("Mtu", ULONG), ("Type", ULONG),  # IFTYPE is a ULONG
                ("TunnelType", ENUM), ("MediaType", ENUM), ("PhysicalMediumType", ENUM),
                ("AccessType", ENUM), ("DirectionType", ENUM),
                # Eight BOOLEAN bit-fields, first in the lowest bit: HardwareInterface,
                # FilterInterface, ConnectorPresent, NotAuthenticated, NotMediaConnected,
                # Paused, LowPower, EndPointInterface.
                ("InterfaceAndOperStatusFlags", UCHAR),
                ("OperStatus", ENUM), ("AdminStatus", ENUM), ("MediaConnectState", ENUM),
                ("NetworkGuid", GUID), ("ConnectionType", ENUM),
                ("TransmitLinkSpeed", ULONG64), ("ReceiveLinkSpeed", ULONG64),
                ("InOctets", ULONG64), ("InUcastPkts", ULONG64), ("InNUcastPkts", ULONG64),
                ("InDiscards", ULONG64), ("InErrors", ULONG64), ("InUnknownProtos", ULONG64),
                ("InUcastOctets", ULONG64), ("InMulticastOctets", ULONG64),
                ("InBroadcastOctets", ULONG64), ("OutOctets", ULONG64),
                ("OutUcastPkts", ULONG64), ("OutNUcastPkts", ULONG64),
                ("OutDiscards", ULONG64), ("OutErrors", ULONG64), ("OutUcastOctets", ULONG64),
                ("OutMulticastOctets", ULONG64), ("OutBroadcastOctets", ULONG64),
                ("OutQLen", ULONG64)]


class MIB_IF_TABLE2(ctypes.Structure):  # GetIfTable2; Table[ANY_SIZE]
    _fields_ = [("NumEntries", ULONG), ("Table", MIB_IF_ROW2 * 1)]


FILTER_INTERFACE = 0x02  # InterfaceAndOperStatusFlags.FilterInterface
IF_OPER_STATUS_UP = 1  # ifdef.h IfOperStatusUp
# NET_IF_LINK_SPEED_UNKNOWN (ifdef.h): the speed is not known.
LINK_SPEED_UNKNOWN = 0xFFFFFFFFFFFFFFFF


# --- tcpmib.h / udpmib.h: GetExtendedTcpTable(TCP_TABLE_OWNER_PID_ALL) and
# GetExtendedUdpTable(UDP_TABLE_OWNER_PID) ------------------------------------------------------

class MIB_TCPROW_OWNER_PID(ctypes.Structure):
    # Addresses and ports in network byte order; a port is the low 16 bits of its DWORD, so
    # its first two bytes in memory (the upper 16 bits are documented as undefined).
    _fields_ = [("dwState", DWORD), ("dwLocalAddr", UCHAR * 4), ("dwLocalPort", UCHAR * 4),
                ("dwRemoteAddr", UCHAR * 4), ("dwRemotePort", UCHAR * 4),
                ("dwOwningPid", DWORD)]


class MIB_TCPTABLE_OWNER_PID(ctypes.Structure):
    _fields_ = [("dwNumEntries", DWORD), ("table", MIB_TCPROW_OWNER_PID * 1)]


class MIB_TCP6ROW_OWNER_PID(ctypes.Structure):
    _fields_ = [("ucLocalAddr", UCHAR * 16), ("dwLocalScopeId", DWORD),
                ("dwLocalPort", UCHAR * 4), ("ucRemoteAddr", UCHAR * 16),
                ("dwRemoteScopeId", DWORD), ("dwRemotePort", UCHAR * 4), ("dwState", DWORD),
                ("dwOwningPid", DWORD)]


class MIB_TCP6TABLE_OWNER_PID(ctypes.Structure):
    _fields_ = [("dwNumEntries", DWORD), ("table", MIB_TCP6ROW_OWNER_PID * 1)]


class MIB_UDPROW_OWNER_PID(ctypes.Structure):
    _fields_ = [("dwLocalAddr", UCHAR * 4), ("dwLocalPort", UCHAR * 4), ("dwOwningPid", DWORD)]


class MIB_UDPTABLE_OWNER_PID(ctypes.Structure):
    _fields_ = [("dwNumEntries", DWORD), ("table", MIB_UDPROW_OWNER_PID * 1)]


class MIB_UDP6ROW_OWNER_PID(ctypes.Structure):
    _fields_ = [("ucLocalAddr", UCHAR * 16), ("dwLocalScopeId", DWORD),
                ("dwLocalPort", UCHAR * 4), ("dwOwningPid", DWORD)]


class MIB_UDP6TABLE_OWNER_PID(ctypes.Structure):
    _fields_ = [("dwNumEntries", DWORD), ("table", MIB_UDP6ROW_OWNER_PID * 1)]


# x64 sizes, from the headers (each checked against mingw-w64's by a compiled probe).
SIZES: Dict[Type[Any], int] = {
    MIB_TCPSTATS: 60, MIB_TCPSTATS2: 72, MIB_UDPSTATS: 20, MIB_UDPSTATS2: 32,
    MIB_IPSTATS: 92, MIBICMPSTATS_EX: 1032, MIB_ICMP_EX: 2064,
    SOCKADDR_IN: 16, SOCKADDR_IN6: 28, SOCKADDR_INET: 28, GUID: 16, IP_ADDRESS_PREFIX: 32,
    MIB_IPFORWARD_ROW2: 104, MIB_IPFORWARD_TABLE2: 112, MIB_IF_ROW2: 1352, MIB_IF_TABLE2: 1360,
    MIB_TCPROW_OWNER_PID: 24, MIB_TCPTABLE_OWNER_PID: 28, MIB_TCP6ROW_OWNER_PID: 56,
    MIB_TCP6TABLE_OWNER_PID: 60, MIB_UDPROW_OWNER_PID: 12, MIB_UDPTABLE_OWNER_PID: 16,
    MIB_UDP6ROW_OWNER_PID: 28, MIB_UDP6TABLE_OWNER_PID: 32,
}
for _cls, _size in SIZES.items():
    if ctypes.sizeof(_cls) != _size:  # an interpreter whose alignment differs from Windows x64
        raise ImportError(f"{_cls.__name__} is {ctypes.sizeof(_cls)} bytes here, not the "
                          f"{_size} of Windows x64")

# The statistics structures by name, as exporter.windows.iphlpapi reports which one it filled.
STATS: Dict[str, Type[Any]] = {c.__name__: c for c in (
    MIB_TCPSTATS, MIB_TCPSTATS2, MIB_UDPSTATS, MIB_UDPSTATS2, MIB_IPSTATS, MIB_ICMP_EX)}


def read(cls: Type[Any], raw: bytes, offset: int = 0) -> Any:
    """One ``cls`` at ``offset`` of ``raw``; DecodeError when ``raw`` is too short."""
    need = offset + ctypes.sizeof(cls)
    if len(raw) < need:
        raise DecodeError(f"{cls.__name__}: {len(raw)} bytes, need {need}")
    return cls.from_buffer_copy(raw, offset)


def rows(table: Type[Any], raw: bytes) -> List[Any]:
    """The rows of a counted table (``NumEntries``/``dwNumEntries`` then ``Table[ANY_SIZE]``);
    DecodeError when ``raw`` holds fewer rows than it counts."""
    count_field, _ = table._fields_[0]
    rows_field, array = table._fields_[1]
    row = array._type_
    if len(raw) < 4:
        raise DecodeError(f"{table.__name__}: {len(raw)} bytes, too short for {count_field}")
    n = c_uint32.from_buffer_copy(raw, 0).value
    start, size = getattr(table, rows_field).offset, ctypes.sizeof(row)
    if n and len(raw) < start + n * size:
        raise DecodeError(f"{table.__name__}: {count_field} {n} needs {start + n * size} bytes, "
                          f"got {len(raw)}")
    return [row.from_buffer_copy(raw, start + i * size) for i in range(n)]


# --- netstat -s ------------------------------------------------------------------------------

# A "raw statistics" value as exporter.windows.iphlpapi returns it: the name of the structure
# filled (MIB_TCPSTATS2 or its fallback MIB_TCPSTATS, ...) and its bytes.
Raw = Tuple[str, bytes]


def _stats(raw: Raw, *allowed: str) -> Any:
    name, data = raw
    if name not in allowed:
        raise DecodeError(f"expected {' or '.join(allowed)}, got {name}")
    return read(STATS[name], data)


def tcp(raw: Raw) -> Dict[str, int]:
    """MIB_TCPSTATS2 or MIB_TCPSTATS -> /proc/net/snmp's Tcp fields. MaxConn is -1 for
    MIB_TCP_MAXCONN_DYNAMIC ((DWORD)-1), as Linux prints it; RtoMin/RtoMax are milliseconds on
    both systems."""
    s = _stats(raw, "MIB_TCPSTATS2", "MIB_TCPSTATS")
    two = isinstance(s, MIB_TCPSTATS2)
    return {
        "RtoAlgorithm": s.RtoAlgorithm if two else s.dwRtoAlgorithm,
        "RtoMin": s.dwRtoMin, "RtoMax": s.dwRtoMax,
        "MaxConn": -1 if s.dwMaxConn == 0xFFFFFFFF else s.dwMaxConn,
        "ActiveOpens": s.dwActiveOpens, "PassiveOpens": s.dwPassiveOpens,
        "AttemptFails": s.dwAttemptFails, "EstabResets": s.dwEstabResets,
        "CurrEstab": s.dwCurrEstab,
        "InSegs": s.dw64InSegs if two else s.dwInSegs,
        "OutSegs": s.dw64OutSegs if two else s.dwOutSegs,
        "RetransSegs": s.dwRetransSegs, "InErrs": s.dwInErrs, "OutRsts": s.dwOutRsts,
    }


# Tcp fields that are levels or settings, not counters of events: taken from IPv4 when the two
# families are added up (CurrEstab is a level too, but the connections of both families count).
TCP_SETTINGS = ("RtoAlgorithm", "RtoMin", "RtoMax", "MaxConn")


def tcp_both(v4: Dict[str, int], v6: Dict[str, int]) -> Dict[str, int]:
    """Linux's Tcp group counts both families (net/ipv4/proc.c and net/ipv6 share the TCP MIB);
    Windows keeps one set per family: the counters and CurrEstab added up, the settings of
    IPv4."""
    return {k: v if k in TCP_SETTINGS else v + v6.get(k, 0) for k, v in v4.items()}


def udp(raw: Raw) -> Dict[str, int]:
    """MIB_UDPSTATS2 or MIB_UDPSTATS -> the Udp (Udp6) fields."""
    s = _stats(raw, "MIB_UDPSTATS2", "MIB_UDPSTATS")
    two = isinstance(s, MIB_UDPSTATS2)
    return {"InDatagrams": s.dw64InDatagrams if two else s.dwInDatagrams,
            "NoPorts": s.dwNoPorts, "InErrors": s.dwInErrors,
            "OutDatagrams": s.dw64OutDatagrams if two else s.dwOutDatagrams}


# MIB_IPSTATS field -> Linux's name, as /proc/net/snmp's Ip and /proc/net/snmp6's Ip6 print
# them. Left out: dwRoutingDiscards (Linux has no such counter); dwReasmTimeout, which is the
# reassembly timeout in seconds on Windows (RFC 1213 ipReasmTimeout), not Linux's count of
# reassemblies that timed out; dwNumIf, dwNumAddr, dwNumRoutes (sizes, not protocol counters).
# Ip6 has no Forwarding or DefaultTTL on Linux, and calls ForwDatagrams OutForwDatagrams.
_IP = (("dwForwarding", "Forwarding", ""), ("dwDefaultTTL", "DefaultTTL", ""),
       ("dwInReceives", "InReceives", "InReceives"),
       ("dwInHdrErrors", "InHdrErrors", "InHdrErrors"),
       ("dwInAddrErrors", "InAddrErrors", "InAddrErrors"),
       ("dwForwDatagrams", "ForwDatagrams", "OutForwDatagrams"),
       ("dwInUnknownProtos", "InUnknownProtos", "InUnknownProtos"),
       ("dwInDiscards", "InDiscards", "InDiscards"),
       ("dwInDelivers", "InDelivers", "InDelivers"),
       ("dwOutRequests", "OutRequests", "OutRequests"),
       ("dwOutDiscards", "OutDiscards", "OutDiscards"),
       ("dwOutNoRoutes", "OutNoRoutes", "OutNoRoutes"),
       ("dwReasmReqds", "ReasmReqds", "ReasmReqds"), ("dwReasmOks", "ReasmOKs", "ReasmOKs"),
       ("dwReasmFails", "ReasmFails", "ReasmFails"), ("dwFragOks", "FragOKs", "FragOKs"),
       ("dwFragFails", "FragFails", "FragFails"),
       ("dwFragCreates", "FragCreates", "FragCreates"))


def ip(raw: bytes, family: int) -> Dict[str, int]:
    """MIB_IPSTATS of ``family`` (AF_INET: Ip; AF_INET6: Ip6)."""
    s = read(MIB_IPSTATS, raw)
    col = 1 if family == AF_INET else 2
    return {row[col]: getattr(s, row[0]) for row in _IP if row[col]}


# ICMP types Linux names in its Icmp group (icmpmibmap, net/ipv4/proc.c) and in its Icmp6 group
# (icmp6type2name, net/ipv6/proc.c): In<name> and Out<name>, printed always, zero included.
ICMP_NAMES = {3: "DestUnreachs", 11: "TimeExcds", 12: "ParmProbs", 4: "SrcQuenchs",
              5: "Redirects", 8: "Echos", 0: "EchoReps", 13: "Timestamps",
              14: "TimestampReps", 17: "AddrMasks", 18: "AddrMaskReps"}
ICMP6_NAMES = {1: "DestUnreachs", 2: "PktTooBigs", 3: "TimeExcds", 4: "ParmProblems",
               128: "Echos", 129: "EchoReplies", 130: "GroupMembQueries",
               131: "GroupMembResponses", 132: "GroupMembReductions", 133: "RouterSolicits",
               134: "RouterAdvertisements", 135: "NeighborSolicits",
               136: "NeighborAdvertisements", 137: "Redirects", 143: "MLDv2Reports"}


def icmp(raw: bytes, family: int) -> Tuple[Dict[str, int], Dict[str, int]]:
    """MIB_ICMP_EX of ``family`` -> (the named fields, the numbered ones): for AF_INET Linux's
    Icmp group (InMsgs, InErrors, OutMsgs, OutErrors, In/Out<name> per icmpmibmap) and its
    IcmpMsg group (InType<N>/OutType<N> for the types counted at least once); for AF_INET6 the
    same two kinds of fields, which Linux prints together in Icmp6."""
    s = read(MIB_ICMP_EX, raw)
    names = ICMP_NAMES if family == AF_INET else ICMP6_NAMES
    named: Dict[str, int] = {}
    numbered: Dict[str, int] = {}
    for way, st in (("In", s.icmpInStats), ("Out", s.icmpOutStats)):
        named[f"{way}Msgs"] = st.dwMsgs
        named[f"{way}Errors"] = st.dwErrors
        counts = list(st.rgdwTypeCount)
        for t, name in names.items():
            named[f"{way}{name}"] = counts[t]
        numbered.update({f"{way}Type{t}": c for t, c in enumerate(counts) if c})
    return named, numbered


@dataclass(frozen=True)
class RawProtocols:
    """What protocol_tables() reads, one value per call and family."""

    tcp4: Raw
    tcp6: Raw
    udp4: Raw
    udp6: Raw
    ip4: bytes
    ip6: bytes
    icmp4: bytes
    icmp6: bytes


def protocol_tables(raw: RawProtocols) -> ProtocolTables:
    """``netstat -s`` as Linux's three tables: /proc/net/snmp's groups (Ip, Icmp, IcmpMsg, Tcp,
    Udp), none of /proc/net/netstat's, and /proc/net/snmp6's (Ip6, Icmp6, Udp6)."""
    icmp4, msg4 = icmp(raw.icmp4, AF_INET)
    icmp6, msg6 = icmp(raw.icmp6, AF_INET6)
    snmp: Groups = {"Ip": ip(raw.ip4, AF_INET), "Icmp": icmp4, "IcmpMsg": msg4,
                    "Tcp": tcp_both(tcp(raw.tcp4), tcp(raw.tcp6)), "Udp": udp(raw.udp4)}
    snmp6: Groups = {"Ip6": ip(raw.ip6, AF_INET6), "Icmp6": {**icmp6, **msg6},
                     "Udp6": udp(raw.udp6)}
    return snmp, None, snmp6


# --- netstat -e, -i ------------------------------------------------------------------------

@dataclass(frozen=True)
class Interface:
    """One row of GetIfTable2 that stands for an interface."""

    luid: int
    index: int
    alias: str
    link: Link


def _wstr(units: Any) -> str:
    """A NUL-terminated WCHAR array as text."""
    data = bytes(units)  # the array's own bytes: UTF-16, little-endian on Windows
    end = next((i for i in range(0, len(data), 2) if data[i:i + 2] == b"\0\0"), len(data))
    return data[:end].decode("utf-16-le", errors="replace")


def interface_rows(raw: bytes) -> List[Interface]:
    """GetIfTable2's MIB_IF_TABLE2 -> one :class:`Interface` per alias.

    Names are the interface's Alias, which is what psutil names it: psutil's net_io_counters
    walks GetAdaptersAddresses and keys each adapter by its FriendlyName (the interface alias,
    "Ethernet", "Wi-Fi", "Loopback Pseudo-Interface 1"), reading its counters with GetIfEntry2,
    that is, this same MIB_IF_ROW2. GetIfTable2 also lists the rows of the filter drivers bound
    to an adapter ("Ethernet-WFP Native MAC Layer LightWeight Filter-0000", "Ethernet-QoS
    Packet Scheduler-0000"), the same traffic counted again, which GetAdaptersAddresses does not
    list: those (FilterInterface set) are skipped, and a row whose alias was already taken is
    skipped too, so that one name is one interface. NDIS interfaces without an IP binding
    (WAN Miniports), which psutil does not list either, remain.

    Counters under /proc/net/dev's column names: packets are unicast plus non-unicast, as
    psutil adds them. MIB_IF_ROW2 counts multicast octets, not packets, so receive_multicast is
    not given; InUnknownProtos, which Linux does not count per interface, is
    receive_unknown_protocols.
    """
    out: List[Interface] = []
    seen = set()
    for r in rows(MIB_IF_TABLE2, raw):
        alias = _wstr(r.Alias)
        if r.InterfaceAndOperStatusFlags & FILTER_INTERFACE or not alias or alias in seen:
            continue
        seen.add(alias)
        counters = {
            "receive_bytes": r.InOctets, "receive_packets": r.InUcastPkts + r.InNUcastPkts,
            "receive_errs": r.InErrors, "receive_drop": r.InDiscards,
            "transmit_bytes": r.OutOctets, "transmit_packets": r.OutUcastPkts + r.OutNUcastPkts,
            "transmit_errs": r.OutErrors, "transmit_drop": r.OutDiscards,
            "receive_unknown_protocols": r.InUnknownProtos,
        }
        speed = r.ReceiveLinkSpeed  # bits per second
        out.append(Interface(r.InterfaceLuid, r.InterfaceIndex, alias, Link(
            counters, up=r.OperStatus == IF_OPER_STATUS_UP, mtu=r.Mtu or None,
            speed_bytes=None if speed in (0, LINK_SPEED_UNKNOWN) else speed / 8.0)))
    return out


# --- netstat -r ------------------------------------------------------------------------------

def _addr(sa: SOCKADDR_INET) -> Tuple[str, str]:
    """(family name, address) of a SOCKADDR_INET."""
    fam = sa.si_family
    if fam == AF_INET:
        return "ipv4", socket.inet_ntop(socket.AF_INET, bytes(sa.Ipv4.sin_addr))
    if fam == AF_INET6:
        return "ipv6", socket.inet_ntop(socket.AF_INET6, bytes(sa.Ipv6.sin6_addr))
    raise DecodeError(f"SOCKADDR_INET: address family {fam} is neither AF_INET nor AF_INET6")


def routes(raw: bytes, interfaces: Sequence[Interface]) -> List[Route]:
    """GetIpForwardTable2's MIB_IPFORWARD_TABLE2 -> :class:`Route`\\ s, the interface named by
    its alias (matched by LUID, else by index; "" when GetIfTable2 did not list it). The metric
    is the route's own: Windows adds the interface's metric to it when it chooses (what
    ``route print`` shows), which needs GetIpInterfaceEntry and is not added here. Windows's
    table holds what Linux keeps in its local table too (host and broadcast routes): listed
    as Windows lists them."""
    by_luid = {i.luid: i.alias for i in interfaces}
    by_index = {i.index: i.alias for i in interfaces}
    out: List[Route] = []
    for r in rows(MIB_IPFORWARD_TABLE2, raw):
        fam, dst = _addr(r.DestinationPrefix.Prefix)
        _, gw = _addr(r.NextHop)
        net = ipaddress.ip_network(f"{dst}/{r.DestinationPrefix.PrefixLength}", strict=False)
        gateway = "" if ipaddress.ip_address(gw).is_unspecified else gw
        name = by_luid.get(r.InterfaceLuid, by_index.get(r.InterfaceIndex, ""))
        out.append(Route(fam, str(net), gateway, name, r.Metric,
                         RTF_UP | (RTF_GATEWAY if gateway else 0)))
    return out


# --- netstat -ano ----------------------------------------------------------------------------

# tcpmib.h MIB_TCP_STATE, 1 to 12 -> the Linux kernel's state number (include/net/tcp_states.h);
# the last, MIB_TCP_STATE_DELETE_TCB, is a connection being torn down.
TCP_STATES = dict(enumerate(tcp_states(
    "close listen syn_sent syn_recv established fin_wait1 fin_wait2 close_wait closing last_ack "
    "time_wait close"), start=1))


def _port(field: Any) -> int:
    return int.from_bytes(bytes(field)[:2], "big")


def tcp_table(raw: bytes, family: int) -> List[Conn]:
    """GetExtendedTcpTable(TCP_TABLE_OWNER_PID_ALL) of ``family`` -> :class:`Conn`\\ s."""
    # The IPv4 and IPv6 rows differ in their address fields only (tcpmib.h).
    table: Type[ctypes.Structure]
    if family == AF_INET:
        table, name, af, local, remote = (MIB_TCPTABLE_OWNER_PID, "ipv4", socket.AF_INET,
                                          "dwLocalAddr", "dwRemoteAddr")
    else:
        table, name, af, local, remote = (MIB_TCP6TABLE_OWNER_PID, "ipv6", socket.AF_INET6,
                                          "ucLocalAddr", "ucRemoteAddr")
    return [Conn(name, TCP_STATES.get(r.dwState, TCP_CLOSE),
                 socket.inet_ntop(af, bytes(getattr(r, local))), _port(r.dwLocalPort),
                 socket.inet_ntop(af, bytes(getattr(r, remote))), _port(r.dwRemotePort),
                 r.dwOwningPid)
            for r in rows(table, raw)]


def udp_table(raw: bytes, family: int) -> List[Conn]:
    """GetExtendedUdpTable(UDP_TABLE_OWNER_PID) of ``family`` -> :class:`Conn`\\ s, all
    unconnected (the table has no remote address)."""
    if family == AF_INET:
        return [Conn("ipv4", TCP_CLOSE, socket.inet_ntop(socket.AF_INET, bytes(r.dwLocalAddr)),
                     _port(r.dwLocalPort), "0.0.0.0", 0, r.dwOwningPid)
                for r in rows(MIB_UDPTABLE_OWNER_PID, raw)]
    return [Conn("ipv6", TCP_CLOSE, socket.inet_ntop(socket.AF_INET6, bytes(r.ucLocalAddr)),
                 _port(r.dwLocalPort), "::", 0, r.dwOwningPid)
            for r in rows(MIB_UDP6TABLE_OWNER_PID, raw)]

