"""macOS: the portable system (psutil: sockets, listeners, interfaces) plus ``netstat -s`` and
``netstat -r`` from sysctls, and ``netstat -an``'s own socket tables where psutil needs root.

* Sockets: psutil first. Its net_connections needs root on macOS (it asks every process for
  its descriptors; psutil issue 1219) and raises AccessDenied without it. The sockets are then
  read the way macOS's own ``netstat -an`` reads them, from net.inet.tcp.pcblist_n and
  net.inet.udp.pcblist_n, which every user may read: every socket is counted, with its state
  and owner's uid, but no pid, so no listener is attributed to a program. The log says so once.
* Protocol counters: net.inet.{ip,tcp,udp}.stats and net.inet6.ip6.stats under Linux's names
  (:mod:`exporter.darwin.decode`), with xnu's own TCP counters as ``TcpDarwin`` in the second
  table (/proc/net/netstat's place, beside IpExt). macOS gives a user other than root an
  all-zero struct tcpstat (net.inet.tcp.disable_access_to_stats, default 1): then the TCP
  groups are left out, and the log says so once.
* Routes: the routing sysctl NET_RT_DUMP (:func:`exporter.darwin.decode.routes`).

The calls are in :mod:`exporter.darwin.sysctl`; everything they return is decoded by pure
functions, tested on every system.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from typing import Dict, FrozenSet, List, Optional, Set, Tuple

from exporter.darwin import decode
from exporter.darwin import sysctl as _sysctl
from exporter.procfs.route import Route
from exporter.system import _psutil
from exporter.system.common import Conn, Groups, ProtocolTables, System

log = logging.getLogger(__name__)

# Reads of a pcblist_n whose generation changed during the copy, before taking the last one.
PCBLIST_READS = 3
# The table of ProtocolTables each group belongs in (Linux's file for it).
_TABLE = {"Ip": 0, "Tcp": 0, "Udp": 0, "IpExt": 1, "TcpDarwin": 1, "Ip6": 2}


def _protocol_fields() -> FrozenSet[Tuple[str, str]]:
    """Every (group, field) the decoders give, for the reference (docs/metrics.md): decoded
    from structures whose every counter is 1, so that none is withheld."""
    ones = b"\x01" * 65536
    out: Set[Tuple[str, str]] = set()
    for groups in (decode.tcp_stats(ones), decode.udp_stats(ones),
                   decode.ip_stats(ones, forwarding=1, ttl=64), decode.ip6_stats(ones)):
        out |= {(group, field) for group, fields in groups.items() for field in fields}
    return frozenset(out)


def if_indextoname(index: int) -> str:
    """The name of interface ``index`` (replaced in tests)."""
    return socket.if_indextoname(index)


class DarwinSystem(System):
    name = "darwin"
    collectors = frozenset({"sockets", "listeners", "interfaces", "protocols", "routes"})
    grant = "run the exporter as root (a launchd daemon, see deploy/macos/)"
    protocol_fields = _protocol_fields()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._psutil_denied = False
        self._said: Set[str] = set()

    def _once(self, key: str, message: str, **extra: object) -> None:
        with self._lock:
            if key in self._said:
                return
            self._said.add(key)
        log.warning(message, extra=extra)

    # --- netstat -an ----------------------------------------------------------------------------

    def connections(self, protocol: str) -> List[Conn]:
        """psutil's table while psutil may read it; after its first AccessDenied (no root),
        the pcblist_n sysctl's for good: the privilege does not change while running."""
        if not self._psutil_denied:
            import psutil

            try:
                return _psutil.connections(protocol)
            except psutil.AccessDenied:
                self._psutil_denied = True
                self._once("pcblist", "without root psutil cannot list the sockets of other "
                           "users' processes on macOS; sockets are read from the "
                           "net.inet.tcp.pcblist_n and net.inet.udp.pcblist_n sysctls, as "
                           "netstat -an reads them: every listener is counted, with its user, "
                           f"but not attributed to a program; {self.grant}")
        return self.pcblist(protocol)

    def pcblist(self, protocol: str) -> List[Conn]:
        """``net.inet.<protocol>.pcblist_n``, read again (at most :data:`PCBLIST_READS` times in
        all) while the table changes during the copy; the last read is taken as it is."""
        name = f"net.inet.{protocol}.pcblist_n"
        for _ in range(PCBLIST_READS):
            got = decode.pcblist(_sysctl.by_name(name, table=True), protocol)
            if not got.changed:
                break
        else:
            log.debug("socket table kept changing while read; using the last read",
                      extra={"sysctl": name, "reads": PCBLIST_READS})
        return got.conns

    # --- netstat -s -----------------------------------------------------------------------------

    def _int(self, name: str) -> Optional[int]:
        try:
            return decode.int32(_sysctl.by_name(name), name)
        except (OSError, decode.DecodeError) as e:
            log.debug("sysctl not read", extra={"sysctl": name, "err": str(e)})
            return None

    def protocol_tables(self) -> ProtocolTables:
        """(Ip, Tcp, Udp), (IpExt, TcpDarwin), (Ip6): /proc/net/snmp's, netstat's and snmp6's
        places, so that each group's fields are named and documented as on Linux."""
        groups: Groups = {}
        groups.update(decode.ip_stats(_sysctl.by_name("net.inet.ip.stats"),
                                      forwarding=self._int("net.inet.ip.forwarding"),
                                      ttl=self._int("net.inet.ip.ttl")))
        tcp = _sysctl.by_name("net.inet.tcp.stats")
        if decode.withheld(tcp):
            self._once("tcpstat", "macOS gives TCP counters (net.inet.tcp.stats) to root only "
                       "while net.inet.tcp.disable_access_to_stats is 1, its default: the Tcp "
                       f"and TcpDarwin protocol counters are left out; {self.grant}")
        else:
            groups.update(decode.tcp_stats(tcp))
        groups.update(decode.udp_stats(_sysctl.by_name("net.inet.udp.stats")))
        try:
            groups.update(decode.ip6_stats(_sysctl.by_name("net.inet6.ip6.stats")))
        except _sysctl.SysctlError as e:
            if e.errno != errno.ENOENT:
                raise
        tables: List[Dict[str, Dict[str, int]]] = [{}, {}, {}]
        for group, fields in groups.items():
            tables[_TABLE[group]][group] = fields
        snmp, netstat, snmp6 = tables
        return snmp, netstat or None, snmp6 or None

    # --- netstat -r -----------------------------------------------------------------------------

    def routes(self) -> Optional[List[Route]]:
        """NET_RT_DUMP, every family, without neighbour and cloned entries."""
        return decode.routes(_sysctl.route_dump(), if_indextoname)


SYSTEM = DarwinSystem
