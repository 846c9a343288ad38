"""Windows: sockets and listeners through psutil (the portable system), and what psutil does not
have from the IP Helper API: ``netstat -s`` (GetTcpStatisticsEx2, GetUdpStatisticsEx2,
GetIpStatisticsEx, GetIcmpStatisticsEx, per family), ``netstat -r`` (GetIpForwardTable2) and
the ``-e`` counters psutil leaves out (unknown protocols, next to errors and discards) from
GetIfTable2.

Thin on purpose: each method makes the calls of :mod:`exporter.windows.iphlpapi` and hands their
bytes to :mod:`exporter.windows.decode`, where everything that can be tested off Windows is.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, FrozenSet, List, Optional, Tuple

from exporter.procfs.route import Route
from exporter.system.common import Link, ProtocolTables, System
from exporter.windows import decode, iphlpapi
from exporter.windows.decode import AF_INET, AF_INET6


def _protocol_fields() -> FrozenSet[Tuple[str, str]]:
    """Every (group, field) protocol_tables() gives, for the reference (docs/metrics.md):
    decoded from structures whose every byte is 1, so that none is withheld; the numbered
    ICMP types as the reference's pattern rows (InType<N>)."""
    ones = b"\x01" * 4096
    raw = decode.RawProtocols(
        tcp4=("MIB_TCPSTATS2", ones), tcp6=("MIB_TCPSTATS2", ones),
        udp4=("MIB_UDPSTATS2", ones), udp6=("MIB_UDPSTATS2", ones),
        ip4=ones, ip6=ones, icmp4=ones, icmp6=ones)
    return frozenset((group, re.sub(r"Type\d+$", "Type<N>", field))
                     for groups in decode.protocol_tables(raw) if groups
                     for group, fields in groups.items() for field in fields)


class WindowsSystem(System):
    name = "windows"
    collectors = frozenset({"sockets", "listeners", "interfaces", "protocols", "routes"})
    grant = "run the exporter as Administrator, or as a service under LocalSystem"
    protocol_fields = _protocol_fields()

    def interfaces(self, wanted: Callable[[str], bool]) -> Dict[str, Link]:
        """GetIfTable2's interfaces, named by alias as psutil names them."""
        return {i.alias: i.link for i in decode.interface_rows(iphlpapi.if_table())
                if wanted(i.alias)}

    def protocol_tables(self) -> ProtocolTables:
        return decode.protocol_tables(decode.RawProtocols(
            tcp4=iphlpapi.tcp_statistics(AF_INET), tcp6=iphlpapi.tcp_statistics(AF_INET6),
            udp4=iphlpapi.udp_statistics(AF_INET), udp6=iphlpapi.udp_statistics(AF_INET6),
            ip4=iphlpapi.ip_statistics(AF_INET), ip6=iphlpapi.ip_statistics(AF_INET6),
            icmp4=iphlpapi.icmp_statistics(AF_INET), icmp6=iphlpapi.icmp_statistics(AF_INET6)))

    def routes(self) -> Optional[List[Route]]:
        """GetIpForwardTable2, both families, interfaces named from GetIfTable2."""
        return decode.routes(iphlpapi.forward_table(),
                             decode.interface_rows(iphlpapi.if_table()))


SYSTEM = WindowsSystem
