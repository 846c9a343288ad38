"""Windows: the IP Helper structures (exporter.windows.decode) decoded to the exact metrics, the
layouts pinned against the mingw-w64 headers, and the call plumbing (exporter.windows.iphlpapi)
on a stand-in DLL.

The structures are built with ctypes from the documented layouts and filled with distinct
values; the real :class:`WindowsSystem` serves them with its iphlpapi functions replaced by ones
returning those bytes, and the collectors' output is held against the values, so the
per-family summing, the Linux names and the units are checked along with the layouts. The
same calls, made for real under Wine, are tests/test_windows_wine.py.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import sys
from typing import Any, Dict, Iterable, List, Optional, Tuple

import pytest
from helpers import ROOT
from prometheus_client import CollectorRegistry

from exporter.collectors.interfaces import InterfacesCollector, InterfacesOptions
from exporter.collectors.protocols import ProtocolsCollector, ProtocolsOptions
from exporter.collectors.protocols.table import lookup
from exporter.collectors.routes import RoutesCollector, RoutesOptions
from exporter.config import Config
from exporter.procfs.route import Route
from exporter.system import check, load_named
from exporter.system.common import Conn, PlatformError
from exporter.vocabulary.names import TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN, TCP_TIME_WAIT
from exporter.windows import decode, iphlpapi
from exporter.windows.decode import AF_INET, AF_INET6, DecodeError

MINGW = "x86_64-w64-mingw32-gcc"
WINE_DIR = os.path.join(ROOT, "tests", "wine")


# --- building structures ---------------------------------------------------------------------

def fill(cls: Any, base: int, **fixed: int) -> Any:
    """A ``cls`` whose scalar fields hold base, base+1, ... in field order, except ``fixed``."""
    s = cls()
    n = base
    for name, typ in cls._fields_:
        if issubclass(typ, (ctypes._SimpleCData,)):
            setattr(s, name, fixed.get(name, n))
            n += 1
    return s


def table(header: Any, rows: List[Any]) -> bytes:
    """A counted table: the count, padding to the rows' alignment, the rows."""
    count_field, _ = header._fields_[0]
    rows_field, array = header._fields_[1]
    start = getattr(header, rows_field).offset
    out = bytearray(start)
    ctypes.c_uint32.from_buffer(out).value = len(rows)
    for r in rows:
        assert isinstance(r, array._type_)
        out += bytes(r)
    return bytes(out)


def wchar(text: str, n: int = decode.IF_MAX_STRING_SIZE + 1) -> Any:
    units = list(text.encode("utf-16-le"))
    arr = (decode.WCHAR * n)()
    for i in range(0, len(units), 2):
        arr[i // 2] = units[i] | units[i + 1] << 8
    return arr


def sockaddr(addr: str) -> Any:
    sa = decode.SOCKADDR_INET()
    if ":" in addr:
        sa.Ipv6.sin6_family = AF_INET6
        sa.Ipv6.sin6_addr[:] = list(socket.inet_pton(socket.AF_INET6, addr))
    else:
        sa.Ipv4.sin_family = AF_INET
        sa.Ipv4.sin_addr[:] = list(socket.inet_aton(addr))
    return sa


def be_port(port: int, junk: int = 0xBEEF) -> List[int]:
    """A DWORD port field as Windows fills it: the port in network byte order in the low 16 bits
    (the first two bytes in memory); the upper 16 bits are documented as undefined."""
    return [port >> 8, port & 0xFF, junk & 0xFF, junk >> 8]


# --- the values --------------------------------------------------------------------------------

BIG = 1 << 33  # beyond 32 bits: only the 64-bit fields can hold it

TCP4 = fill(decode.MIB_TCPSTATS2, 100, RtoAlgorithm=4, dwRtoMin=300, dwRtoMax=240000,
            dwMaxConn=0xFFFFFFFF, dw64InSegs=BIG + 1, dw64OutSegs=BIG + 2)
TCP6 = fill(decode.MIB_TCPSTATS2, 200, RtoAlgorithm=1, dwRtoMin=1, dwRtoMax=2, dwMaxConn=77,
            dw64InSegs=BIG + 10, dw64OutSegs=BIG + 20)
UDP4 = fill(decode.MIB_UDPSTATS2, 300, dw64InDatagrams=BIG + 3, dw64OutDatagrams=BIG + 4)
UDP6 = fill(decode.MIB_UDPSTATS2, 400, dw64InDatagrams=BIG + 5, dw64OutDatagrams=BIG + 6)
IP4 = fill(decode.MIB_IPSTATS, 500, dwForwarding=1, dwDefaultTTL=128)
IP6 = fill(decode.MIB_IPSTATS, 600, dwForwarding=2, dwDefaultTTL=65)


def icmp_ex(base: int, types_in: Dict[int, int], types_out: Dict[int, int]) -> Any:
    s = decode.MIB_ICMP_EX()
    s.icmpInStats.dwMsgs, s.icmpInStats.dwErrors = base, base + 1
    s.icmpOutStats.dwMsgs, s.icmpOutStats.dwErrors = base + 2, base + 3
    for t, c in types_in.items():
        s.icmpInStats.rgdwTypeCount[t] = c
    for t, c in types_out.items():
        s.icmpOutStats.rgdwTypeCount[t] = c
    return s


ICMP4 = icmp_ex(700, {0: 11, 3: 12, 8: 13, 200: 14}, {0: 21, 11: 22, 255: 23})
ICMP6 = icmp_ex(800, {128: 31, 135: 32, 1: 33}, {129: 41, 143: 42, 77: 43})


def if_row(luid: int, index: int, alias: str, base: int, *, flags: int = 0x01, oper: int = 1,
           mtu: int = 1500, speed: int = 1_000_000_000) -> Any:
    r = fill(decode.MIB_IF_ROW2, base, InterfaceLuid=luid, InterfaceIndex=index, Mtu=mtu,
             InterfaceAndOperStatusFlags=flags, OperStatus=oper, ReceiveLinkSpeed=speed,
             TransmitLinkSpeed=speed // 2)
    r.Alias = wchar(alias)
    r.Description = wchar(alias + " adapter")
    return r


ETH_LUID, LO_LUID, WIFI_LUID = 0x0006000001000000, 0x0018000000000000, 0x0047000002000000
IF_ROWS = [
    if_row(LO_LUID, 1, "Loopback Pseudo-Interface 1", 1000, flags=0, mtu=4294967295, speed=0),
    if_row(ETH_LUID, 7, "Ethernet", 2000, speed=(1 << 64) - 1),
    # The filter rows Windows lists for an adapter: skipped.
    if_row(ETH_LUID + 1, 8, "Ethernet-WFP Native MAC Layer LightWeight Filter-0000", 3000,
           flags=0x03),
    if_row(ETH_LUID + 2, 9, "Ethernet-QoS Packet Scheduler-0000", 4000, flags=0x02),
    # A second row under a taken alias: the first one stays.
    if_row(ETH_LUID + 3, 10, "Ethernet", 5000),
    if_row(WIFI_LUID, 12, "Wi-Fi 2 (Ünïcode)", 6000, oper=2, speed=866_700_000),
]
IF_TABLE = table(decode.MIB_IF_TABLE2, IF_ROWS)


def route_row(luid: int, index: int, dst: str, plen: int, gw: str, metric: int) -> Any:
    r = fill(decode.MIB_IPFORWARD_ROW2, 1, InterfaceLuid=luid, InterfaceIndex=index,
             Metric=metric)
    r.DestinationPrefix.Prefix = sockaddr(dst)
    r.DestinationPrefix.PrefixLength = plen
    r.NextHop = sockaddr(gw)
    return r


ROUTES = table(decode.MIB_IPFORWARD_TABLE2, [
    route_row(ETH_LUID, 7, "0.0.0.0", 0, "192.0.2.1", 25),
    route_row(ETH_LUID, 7, "192.0.2.0", 24, "0.0.0.0", 281),
    route_row(LO_LUID, 1, "127.0.0.0", 8, "0.0.0.0", 331),
    route_row(ETH_LUID, 7, "::", 0, "fe80::1", 256),
    route_row(ETH_LUID, 7, "2001:db8::", 64, "::", 256),
    route_row(0x999, 12, "198.51.100.7", 32, "0.0.0.0", 5),  # by index only: Wi-Fi
    route_row(0x998, 99, "203.0.113.0", 24, "0.0.0.0", 6),  # an interface not listed
])


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> Iterable[None]:
    """The WindowsSystem's calls answered with the structures above."""
    stats = {
        "tcp_statistics": {AF_INET: ("MIB_TCPSTATS2", bytes(TCP4)),
                           AF_INET6: ("MIB_TCPSTATS2", bytes(TCP6))},
        "udp_statistics": {AF_INET: ("MIB_UDPSTATS2", bytes(UDP4)),
                           AF_INET6: ("MIB_UDPSTATS2", bytes(UDP6))},
        "ip_statistics": {AF_INET: bytes(IP4), AF_INET6: bytes(IP6)},
        "icmp_statistics": {AF_INET: bytes(ICMP4), AF_INET6: bytes(ICMP6)},
    }
    for name, by_family in stats.items():
        monkeypatch.setattr(iphlpapi, name, lambda family, t=by_family: t[family])
    monkeypatch.setattr(iphlpapi, "if_table", lambda: IF_TABLE)
    monkeypatch.setattr(iphlpapi, "forward_table", lambda: ROUTES)
    monkeypatch.setattr(iphlpapi, "_dll", "never loaded")  # no real call can happen
    yield


def registry(collector: Any) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return reg


def samples(reg: CollectorRegistry) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for m in reg.collect() for s in m.samples}


def config(**options: Any) -> Config:
    return Config(system="windows", options=options)


# --- sizes and offsets ------------------------------------------------------------------------

def test_sizes_are_those_of_windows_x64() -> None:
    assert ctypes.sizeof(decode.MIB_IF_ROW2) == 1352
    assert ctypes.sizeof(decode.MIB_IPFORWARD_ROW2) == 104
    assert ctypes.sizeof(decode.MIB_TCPSTATS2) == 72 and ctypes.sizeof(decode.MIB_TCPSTATS) == 60
    assert ctypes.sizeof(decode.MIB_UDPSTATS2) == 32 and ctypes.sizeof(decode.MIB_UDPSTATS) == 20
    assert ctypes.sizeof(decode.MIB_IPSTATS) == 92 and ctypes.sizeof(decode.MIB_ICMP_EX) == 2064
    assert ctypes.sizeof(decode.MIB_TCPROW_OWNER_PID) == 24
    assert ctypes.sizeof(decode.MIB_TCP6ROW_OWNER_PID) == 56
    # Rows of the TABLE2 tables start 8 bytes in (NET_LUID's alignment); of the others, 4.
    assert decode.MIB_IF_TABLE2.Table.offset == decode.MIB_IPFORWARD_TABLE2.Table.offset == 8
    assert decode.MIB_TCPTABLE_OWNER_PID.table.offset == 4
    for cls, size in decode.SIZES.items():
        assert ctypes.sizeof(cls) == size, cls.__name__


def _fields(cls: Any) -> Iterable[Tuple[str, int, int]]:
    for name, typ in cls._fields_:
        yield name, getattr(cls, name).offset, ctypes.sizeof(typ)


def layout_asserts() -> str:
    """C static assertions of every size, field offset and field size of decode's layouts."""
    lines = ["#include <winsock2.h>", "#include <ws2tcpip.h>", "#include <windows.h>",
             "#include <iphlpapi.h>", "#include <netioapi.h>", "#include <stddef.h>",
             '#include "mib2.h"']
    for cls in decode.SIZES:
        c = cls.__name__
        lines.append(f'_Static_assert(sizeof({c}) == {ctypes.sizeof(cls)}, "sizeof {c}");')
        for name, off, size in _fields(cls):
            lines.append(f'_Static_assert(offsetof({c}, {name}) == {off}, "{c}.{name} offset");')
            lines.append(f'_Static_assert(sizeof((({c} *)0)->{name}) == {size}, '
                         f'"{c}.{name} size");')
    return "\n".join(lines) + "\n"


@pytest.mark.skipif(not shutil.which(MINGW), reason=f"needs {MINGW} (scripts/test-all installs it)")
def test_layouts_match_the_mingw_headers(tmp_path: Any) -> None:
    """Every size, offset and field width of decode's ctypes layouts, compiled as static
    assertions against mingw-w64's headers (MIB_TCPSTATS2/MIB_UDPSTATS2, which they lack, from
    tests/wine/mib2.h): a wrong field is a compile error naming it."""
    src = tmp_path / "layouts.c"
    src.write_text(layout_asserts())
    r = subprocess.run([MINGW, "-fsyntax-only", "-Wall", "-I", WINE_DIR, str(src)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert layout_asserts().count("_Static_assert") > 300


# --- netstat -s --------------------------------------------------------------------------------

def expected_protocols() -> Dict[Tuple[str, str], int]:
    """What the structures above mean, in Linux's names, written out by hand."""
    t4, t6 = TCP4, TCP6
    out: Dict[Tuple[str, str], int] = {
        ("Tcp", "RtoAlgorithm"): 4, ("Tcp", "RtoMin"): 300, ("Tcp", "RtoMax"): 240000,
        ("Tcp", "MaxConn"): -1,
        ("Tcp", "ActiveOpens"): t4.dwActiveOpens + t6.dwActiveOpens,
        ("Tcp", "PassiveOpens"): t4.dwPassiveOpens + t6.dwPassiveOpens,
        ("Tcp", "AttemptFails"): t4.dwAttemptFails + t6.dwAttemptFails,
        ("Tcp", "EstabResets"): t4.dwEstabResets + t6.dwEstabResets,
        ("Tcp", "CurrEstab"): t4.dwCurrEstab + t6.dwCurrEstab,
        ("Tcp", "InSegs"): 2 * BIG + 11, ("Tcp", "OutSegs"): 2 * BIG + 22,
        ("Tcp", "RetransSegs"): t4.dwRetransSegs + t6.dwRetransSegs,
        ("Tcp", "InErrs"): t4.dwInErrs + t6.dwInErrs,
        ("Tcp", "OutRsts"): t4.dwOutRsts + t6.dwOutRsts,
        ("Udp", "InDatagrams"): BIG + 3, ("Udp", "NoPorts"): UDP4.dwNoPorts,
        ("Udp", "InErrors"): UDP4.dwInErrors, ("Udp", "OutDatagrams"): BIG + 4,
        ("Udp6", "InDatagrams"): BIG + 5, ("Udp6", "NoPorts"): UDP6.dwNoPorts,
        ("Udp6", "InErrors"): UDP6.dwInErrors, ("Udp6", "OutDatagrams"): BIG + 6,
        ("Ip", "Forwarding"): 1, ("Ip", "DefaultTTL"): 128,
    }
    both = {"InReceives": "dwInReceives", "InHdrErrors": "dwInHdrErrors",
            "InAddrErrors": "dwInAddrErrors", "InUnknownProtos": "dwInUnknownProtos",
            "InDiscards": "dwInDiscards", "InDelivers": "dwInDelivers",
            "OutRequests": "dwOutRequests", "OutDiscards": "dwOutDiscards",
            "OutNoRoutes": "dwOutNoRoutes", "ReasmReqds": "dwReasmReqds",
            "ReasmOKs": "dwReasmOks", "ReasmFails": "dwReasmFails", "FragOKs": "dwFragOks",
            "FragFails": "dwFragFails", "FragCreates": "dwFragCreates"}
    for linux, win in both.items():
        out[("Ip", linux)] = getattr(IP4, win)
        out[("Ip6", linux)] = getattr(IP6, win)
    out[("Ip", "ForwDatagrams")] = IP4.dwForwDatagrams
    out[("Ip6", "OutForwDatagrams")] = IP6.dwForwDatagrams
    for group, s, names in (("Icmp", ICMP4, decode.ICMP_NAMES),
                            ("Icmp6", ICMP6, decode.ICMP6_NAMES)):
        out[(group, "InMsgs")], out[(group, "InErrors")] = s.icmpInStats.dwMsgs, \
            s.icmpInStats.dwErrors
        out[(group, "OutMsgs")], out[(group, "OutErrors")] = s.icmpOutStats.dwMsgs, \
            s.icmpOutStats.dwErrors
        for t, name in names.items():
            out[(group, "In" + name)] = s.icmpInStats.rgdwTypeCount[t]
            out[(group, "Out" + name)] = s.icmpOutStats.rgdwTypeCount[t]
    out.update({("IcmpMsg", "InType0"): 11, ("IcmpMsg", "InType3"): 12,
                ("IcmpMsg", "InType8"): 13, ("IcmpMsg", "InType200"): 14,
                ("IcmpMsg", "OutType0"): 21, ("IcmpMsg", "OutType11"): 22,
                ("IcmpMsg", "OutType255"): 23,
                ("Icmp6", "InType128"): 31, ("Icmp6", "InType135"): 32,
                ("Icmp6", "InType1"): 33, ("Icmp6", "OutType129"): 41,
                ("Icmp6", "OutType143"): 42, ("Icmp6", "OutType77"): 43})
    return out


def test_protocol_tables_in_linux_names(windows: None) -> None:
    system = load_named("windows")
    assert system.name == "windows"
    snmp, netstat, snmp6 = system.protocol_tables()
    assert netstat is None and snmp is not None and snmp6 is not None
    got = {(g, f): v for table_ in (snmp, snmp6) for g, fields in table_.items()
           for f, v in fields.items()}
    assert got == expected_protocols()
    # Every name is one Linux prints (the table of the protocols collector knows it, or it is
    # a numbered ICMP type), so one metric means one thing on both systems.
    for g, f in got:
        assert not lookup(g, f).description.startswith("a field"), (g, f)


def test_protocols_collector_output(windows: None) -> None:
    reg = registry(ProtocolsCollector(config(protocols=ProtocolsOptions(fields=".*"))))
    got = {name: v for (name, labels), v in samples(reg).items()}
    want = {}
    for (g, f), v in expected_protocols().items():
        field = lookup(g, f)
        want[field.name] = v * field.scale
    assert got == want
    # A few by their exact names: the summing, the 64-bit counters, the units.
    assert got["netstat_tcp_active_opens_total"] == TCP4.dwActiveOpens + TCP6.dwActiveOpens
    assert got["netstat_tcp_in_segs_total"] == 2 * BIG + 11
    assert got["netstat_tcp_rto_min_seconds"] == 0.3
    assert got["netstat_tcp_max_conn"] == -1
    assert got["netstat_udp6_in_datagrams_total"] == BIG + 5
    assert got["netstat_ip6_out_forw_datagrams_total"] == IP6.dwForwDatagrams
    assert got["netstat_icmp_msg_out_type255_total"] == 23
    assert got["netstat_icmp6_in_neighbor_solicits_total"] == 32
    assert got["netstat_icmp6_out_type77_total"] == 43


def test_the_32_bit_fallback_structures() -> None:
    t = fill(decode.MIB_TCPSTATS, 10, dwMaxConn=5000)
    d = decode.tcp(("MIB_TCPSTATS", bytes(t)))
    assert d == {"RtoAlgorithm": 10, "RtoMin": 11, "RtoMax": 12, "MaxConn": 5000,
                 "ActiveOpens": 14, "PassiveOpens": 15, "AttemptFails": 16,
                 "EstabResets": 17, "CurrEstab": 18, "InSegs": 19, "OutSegs": 20,
                 "RetransSegs": 21, "InErrs": 22, "OutRsts": 23}
    u = fill(decode.MIB_UDPSTATS, 40)
    assert decode.udp(("MIB_UDPSTATS", bytes(u))) == {
        "InDatagrams": 40, "NoPorts": 41, "InErrors": 42, "OutDatagrams": 43}


def test_reasm_timeout_and_routing_discards_are_not_linux_counters() -> None:
    """Windows's dwReasmTimeout is a timeout in seconds, not Linux's count of timed-out
    reassemblies; dwRoutingDiscards has no Linux field: neither is given a Linux name."""
    d = decode.ip(bytes(IP4), AF_INET)
    assert "ReasmTimeout" not in d and "RoutingDiscards" not in d
    assert set(decode.ip(bytes(IP6), AF_INET6)) == set(d) - {"Forwarding", "DefaultTTL",
                                                            "ForwDatagrams"} | {
        "OutForwDatagrams"}


# --- netstat -e --------------------------------------------------------------------------------

def test_interfaces_collector_output(windows: None) -> None:
    reg = registry(InterfacesCollector(config()))
    got = samples(reg)
    devices = {dict(labels)["device"] for (_, labels) in got}
    assert devices == {"Loopback Pseudo-Interface 1", "Ethernet", "Wi-Fi 2 (Ünïcode)"}
    for row in (IF_ROWS[0], IF_ROWS[1], IF_ROWS[5]):
        dev = (("device", decode._wstr(row.Alias)),)
        want = {
            "netstat_interface_receive_bytes_total": row.InOctets,
            "netstat_interface_receive_packets_total": row.InUcastPkts + row.InNUcastPkts,
            "netstat_interface_receive_errors_total": row.InErrors,
            "netstat_interface_receive_drop_total": row.InDiscards,
            "netstat_interface_transmit_bytes_total": row.OutOctets,
            "netstat_interface_transmit_packets_total": row.OutUcastPkts + row.OutNUcastPkts,
            "netstat_interface_transmit_errors_total": row.OutErrors,
            "netstat_interface_transmit_drop_total": row.OutDiscards,
            "netstat_interface_receive_unknown_protocols_total": row.InUnknownProtos,
            "netstat_interface_up": 1.0 if row.OperStatus == 1 else 0.0,
            "netstat_interface_mtu_bytes": row.Mtu,
        }
        if row.ReceiveLinkSpeed not in (0, (1 << 64) - 1):
            want["netstat_interface_speed_bytes"] = row.ReceiveLinkSpeed / 8
        assert {name: v for (name, labels), v in got.items() if labels == dev} == want
    # The first row of an alias, not the later one; the Wi-Fi link's speed in bytes.
    assert got[("netstat_interface_receive_bytes_total", (("device", "Ethernet"),))] == \
        IF_ROWS[1].InOctets
    assert got[("netstat_interface_speed_bytes", (("device", "Wi-Fi 2 (Ünïcode)"),))] == \
        866_700_000 / 8
    assert got[("netstat_interface_up", (("device", "Wi-Fi 2 (Ünïcode)"),))] == 0


def test_interfaces_filter_by_alias(windows: None) -> None:
    reg = registry(InterfacesCollector(config(
        interfaces=InterfacesOptions(device_exclude="Loopback.*|Wi-Fi.*"))))
    assert {dict(labels)["device"] for (_, labels) in samples(reg)} == {"Ethernet"}


# --- netstat -r --------------------------------------------------------------------------------

def test_routes_decoded() -> None:
    got = decode.routes(ROUTES, decode.interface_rows(IF_TABLE))
    assert got == [
        Route("ipv4", "0.0.0.0/0", "192.0.2.1", "Ethernet", 25, 3),
        Route("ipv4", "192.0.2.0/24", "", "Ethernet", 281, 1),
        Route("ipv4", "127.0.0.0/8", "", "Loopback Pseudo-Interface 1", 331, 1),
        Route("ipv6", "::/0", "fe80::1", "Ethernet", 256, 3),
        Route("ipv6", "2001:db8::/64", "", "Ethernet", 256, 1),
        Route("ipv4", "198.51.100.7/32", "", "Wi-Fi 2 (Ünïcode)", 5, 1),
        Route("ipv4", "203.0.113.0/24", "", "", 6, 1),
    ]


def test_routes_collector_output(windows: None) -> None:
    reg = registry(RoutesCollector(config(routes=RoutesOptions(table=True))))
    got = samples(reg)
    assert got[("netstat_route_entries", (("family", "ipv4"), ("interface", "Ethernet")))] == 2
    assert got[("netstat_route_entries", (("family", "ipv6"), ("interface", "Ethernet")))] == 2
    assert got[("netstat_route_default_info", (
        ("family", "ipv4"), ("gateway", "192.0.2.1"), ("interface", "Ethernet"),
        ("metric", "25")))] == 1
    assert got[("netstat_route_default_info", (
        ("family", "ipv6"), ("gateway", "fe80::1"), ("interface", "Ethernet"),
        ("metric", "256")))] == 1
    assert sum(1 for (name, _) in got if name == "netstat_route_info") == 7


# --- netstat -ano ------------------------------------------------------------------------------

def tcp_row(state: int, local: str, lport: int, remote: str, rport: int, pid: int) -> Any:
    r = decode.MIB_TCPROW_OWNER_PID(dwState=state, dwOwningPid=pid)
    r.dwLocalAddr[:] = list(socket.inet_aton(local))
    r.dwRemoteAddr[:] = list(socket.inet_aton(remote))
    r.dwLocalPort[:] = be_port(lport)
    r.dwRemotePort[:] = be_port(rport, 0x1234)
    return r


def test_tcp_table_states_ports_pids() -> None:
    raw = table(decode.MIB_TCPTABLE_OWNER_PID, [
        tcp_row(2, "0.0.0.0", 445, "0.0.0.0", 0, 4),
        tcp_row(5, "192.0.2.2", 49713, "198.51.100.9", 443, 8812),
        tcp_row(11, "127.0.0.1", 5985, "127.0.0.1", 65000, 0),
        tcp_row(12, "10.0.0.1", 1, "10.0.0.2", 65535, 1),
    ])
    assert decode.tcp_table(raw, AF_INET) == [
        Conn("ipv4", TCP_LISTEN, "0.0.0.0", 445, "0.0.0.0", 0, 4),
        Conn("ipv4", TCP_ESTABLISHED, "192.0.2.2", 49713, "198.51.100.9", 443, 8812),
        Conn("ipv4", TCP_TIME_WAIT, "127.0.0.1", 5985, "127.0.0.1", 65000, 0),
        Conn("ipv4", TCP_CLOSE, "10.0.0.1", 1, "10.0.0.2", 65535, 1),
    ]
    r6 = decode.MIB_TCP6ROW_OWNER_PID(dwState=2, dwOwningPid=1234, dwLocalScopeId=3)
    r6.ucLocalAddr[:] = list(socket.inet_pton(socket.AF_INET6, "fe80::1"))
    r6.dwLocalPort[:] = be_port(8080)
    raw6 = table(decode.MIB_TCP6TABLE_OWNER_PID, [r6])
    assert decode.tcp_table(raw6, AF_INET6) == [
        Conn("ipv6", TCP_LISTEN, "fe80::1", 8080, "::", 0, 1234)]
    # Every Windows state has a Linux number.
    assert sorted(decode.TCP_STATES) == list(range(1, 13))


def test_udp_table() -> None:
    r = decode.MIB_UDPROW_OWNER_PID(dwOwningPid=99)
    r.dwLocalAddr[:] = list(socket.inet_aton("0.0.0.0"))
    r.dwLocalPort[:] = be_port(5353)
    r6 = decode.MIB_UDP6ROW_OWNER_PID(dwOwningPid=98)
    r6.dwLocalPort[:] = be_port(546)
    assert decode.udp_table(table(decode.MIB_UDPTABLE_OWNER_PID, [r]), AF_INET) == [
        Conn("ipv4", TCP_CLOSE, "0.0.0.0", 5353, "0.0.0.0", 0, 99)]
    assert decode.udp_table(table(decode.MIB_UDP6TABLE_OWNER_PID, [r6]), AF_INET6) == [
        Conn("ipv6", TCP_CLOSE, "::", 546, "::", 0, 98)]


# --- short buffers -----------------------------------------------------------------------------

@pytest.mark.parametrize("call,message", [
    (lambda: decode.tcp(("MIB_TCPSTATS2", bytes(TCP4)[:60])), "MIB_TCPSTATS2: 60 bytes, need 72"),
    (lambda: decode.tcp(("MIB_UDPSTATS", bytes(20))), "expected MIB_TCPSTATS2 or MIB_TCPSTATS"),
    (lambda: decode.udp(("MIB_UDPSTATS2", b"")), "MIB_UDPSTATS2: 0 bytes, need 32"),
    (lambda: decode.ip(bytes(91), AF_INET), "MIB_IPSTATS: 91 bytes, need 92"),
    (lambda: decode.icmp(bytes(IP4), AF_INET), "MIB_ICMP_EX: 92 bytes, need 2064"),
    (lambda: decode.interface_rows(IF_TABLE[:-1]), "MIB_IF_TABLE2: NumEntries 6 needs 8120 "
                                                   "bytes, got 8119"),
    (lambda: decode.interface_rows(b"\1\0"), "MIB_IF_TABLE2: 2 bytes, too short for NumEntries"),
    (lambda: decode.routes(ROUTES[:200], []), "MIB_IPFORWARD_TABLE2: NumEntries 7 needs 736"),
    (lambda: decode.tcp_table(b"\2\0\0\0" + bytes(24), AF_INET),
     "MIB_TCPTABLE_OWNER_PID: dwNumEntries 2 needs 52 bytes, got 28"),
])
def test_short_buffers_say_what_is_missing(call: Any, message: str) -> None:
    with pytest.raises(DecodeError, match=message.replace("(", r"\(")):
        call()


def test_empty_tables() -> None:
    assert decode.tcp_table(bytes(4), AF_INET6) == []
    assert decode.interface_rows(bytes(8)) == []
    assert decode.routes(bytes(8), []) == []


def test_a_failing_call_fails_only_its_collector(windows: None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(family: int) -> Any:
        raise iphlpapi.IphlpapiError("GetIpStatisticsEx", 5)

    monkeypatch.setattr(iphlpapi, "ip_statistics", denied)
    with pytest.raises(iphlpapi.IphlpapiError, match="GetIpStatisticsEx failed with Win32 "
                                                     "error 5"):
        load_named("windows").protocol_tables()


# --- the system --------------------------------------------------------------------------------

def test_windows_system_serves_what_it_lists() -> None:
    system = load_named("windows")
    assert system.collectors == {"sockets", "listeners", "interfaces", "protocols", "routes"}
    assert system.grant == "run the exporter as Administrator, or as a service under LocalSystem"
    assert system.socket_source("auto") == "psutil"
    with pytest.raises(PlatformError, match="--path.procfs means nothing on windows"):
        check(system, [], ["--path.procfs"])
    with pytest.raises(PlatformError, match="the limits collector is not available on windows"):
        check(system, ["limits"], [])


def test_importing_loads_no_dll() -> None:
    """exporter.windows imports anywhere; the DLL is loaded by the first call."""
    code = ("import exporter.system._windows, exporter.windows.iphlpapi as i; "
            "assert i._dll is None; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.stdout.strip() == "ok", r.stderr


# --- the call plumbing, on a stand-in DLL -----------------------------------------------------

class Fn:
    """A DLL function: records its calls and the prototype bind() declares."""

    def __init__(self, impl: Any) -> None:
        self.impl = impl
        self.calls: List[Tuple[Any, ...]] = []
        self.argtypes: Optional[Any] = None
        self.restype: Any = "unset"

    def __call__(self, *args: Any) -> Any:
        self.calls.append(args)
        return self.impl(*args)


class Dll:
    def __init__(self, **functions: Any) -> None:
        for name, impl in functions.items():
            setattr(self, name, Fn(impl))


def target(arg: Any) -> Any:
    """The object a byref() argument points at."""
    return arg._obj


def use(monkeypatch: pytest.MonkeyPatch, dll: Dll) -> Dll:
    monkeypatch.setattr(iphlpapi, "_dll", iphlpapi.bind(dll))
    return dll


def test_bind_declares_the_prototypes_of_the_functions_present() -> None:
    dll = iphlpapi.bind(Dll(GetTcpStatisticsEx=None, FreeMibTable=None))
    assert dll.GetTcpStatisticsEx.restype is ctypes.c_uint32
    assert dll.GetTcpStatisticsEx.argtypes == (ctypes.c_void_p, ctypes.c_uint32)
    assert dll.FreeMibTable.restype is None
    assert not hasattr(dll, "GetTcpStatisticsEx2")


def test_ex2_where_present(monkeypatch: pytest.MonkeyPatch) -> None:
    def ex2(arg: Any, family: int) -> int:
        target(arg).dwActiveOpens = family
        target(arg).dw64InSegs = BIG
        return 0

    dll = use(monkeypatch, Dll(GetTcpStatisticsEx2=ex2, GetTcpStatisticsEx=lambda *a: 1))
    name, raw = iphlpapi.tcp_statistics(AF_INET6)
    assert name == "MIB_TCPSTATS2" and len(raw) == 72
    assert decode.tcp((name, raw))["ActiveOpens"] == 23
    assert decode.tcp((name, raw))["InSegs"] == BIG
    assert dll.GetTcpStatisticsEx.calls == []


def test_ex_where_ex2_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows before 10 1703, and Wine, have no Ex2: the 32-bit call answers."""
    def ex(arg: Any, family: int) -> int:
        target(arg).dwInDatagrams = 7
        return 0

    use(monkeypatch, Dll(GetUdpStatisticsEx=ex))
    name, raw = iphlpapi.udp_statistics(AF_INET)
    assert (name, len(raw)) == ("MIB_UDPSTATS", 20)
    assert decode.udp((name, raw))["InDatagrams"] == 7


def test_error_codes_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, Dll(GetIpStatisticsEx=lambda arg, family: 87))
    with pytest.raises(iphlpapi.IphlpapiError) as e:
        iphlpapi.ip_statistics(AF_INET)
    assert (e.value.function, e.value.code) == ("GetIpStatisticsEx", 87)
    with pytest.raises(iphlpapi.IphlpapiError, match="GetIcmpStatisticsEx failed with Win32 "
                                                     "error 127"):
        iphlpapi.icmp_statistics(AF_INET)  # not in this DLL: ERROR_PROC_NOT_FOUND


def test_table2_copied_then_freed(monkeypatch: pytest.MonkeyPatch) -> None:
    memory = ctypes.create_string_buffer(IF_TABLE, len(IF_TABLE) + 4096)  # and more after it
    freed: List[int] = []

    def get(ptr: Any) -> int:
        target(ptr).value = ctypes.addressof(memory)
        return 0

    use(monkeypatch, Dll(GetIfTable2=get, FreeMibTable=lambda p: freed.append(p.value)))
    assert iphlpapi.if_table() == IF_TABLE  # exactly NumEntries rows
    assert freed == [ctypes.addressof(memory)]


def test_extended_table_sizing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Asked for the size, then read with slack; the table outgrows the slack twice in
    between: asked again each time."""
    rows = [tcp_row(2, "0.0.0.0", 1 + i, "0.0.0.0", 0, i) for i in range(800)]
    sizes = iter([table(decode.MIB_TCPTABLE_OWNER_PID, rows[:1]),
                  table(decode.MIB_TCPTABLE_OWNER_PID, rows[:400]),
                  table(decode.MIB_TCPTABLE_OWNER_PID, rows)])
    state = {"now": next(sizes)}

    def ext(buf: Any, size: Any, order: int, family: int, cls: int, reserved: int) -> int:
        assert (order, family, cls, reserved) == (0, AF_INET, 5, 0)
        have = target(size).value
        data = state["now"]
        if buf is None or have < len(data):
            target(size).value = len(data)
            state["now"] = next(sizes, data)  # it grows after each sizing answer
            return iphlpapi.ERROR_INSUFFICIENT_BUFFER
        ctypes.memmove(buf, data, len(data))
        target(size).value = len(data)
        return 0

    dll = use(monkeypatch, Dll(GetExtendedTcpTable=ext))
    raw = iphlpapi.tcp_table(AF_INET)
    assert [c.lport for c in decode.tcp_table(raw, AF_INET)] == list(range(1, 801))
    assert len(dll.GetExtendedTcpTable.calls) == 4
    assert iphlpapi.slack(28) == 28 + 7 + 4096 and iphlpapi.slack(0) == 0


def test_extended_table_sizing_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    def always_more(buf: Any, size: Any, *rest: Any) -> int:
        target(size).value += 24
        return iphlpapi.ERROR_INSUFFICIENT_BUFFER

    dll = use(monkeypatch, Dll(GetExtendedUdpTable=always_more))
    with pytest.raises(iphlpapi.IphlpapiError, match="GetExtendedUdpTable failed with Win32 "
                                                     "error 122"):
        iphlpapi.udp_table(AF_INET6)
    assert len(dll.GetExtendedUdpTable.calls) == iphlpapi.SIZING_TRIES
