"""What every system's module returns, and the portable system they all build on.

The collectors never ask which operating system they run on: they ask the :class:`System` that
:func:`exporter.system.load` chose once, at start, for the data they export. Its results use
one vocabulary on every system, Linux's, wherever the meaning is the same:

* protocol counters (``netstat -s``) are :data:`Groups` keyed by the group and field names of
  Linux's /proc/net/snmp, /proc/net/netstat and /proc/net/snmp6 (``Tcp``/``ActiveOpens``,
  ``Udp6``/``InDatagrams``), so one metric name means one thing everywhere;
* interface counters (``netstat -e``/``-i``) are :class:`Link`\\ s keyed by /proc/net/dev's
  column names (``receive_bytes``, ``transmit_drop``);
* routes (``netstat -r``) are :class:`~exporter.procfs.route.Route`\\ s;
* sockets (``netstat -ano``) are :class:`Conn`\\ s whose states are the Linux kernel's state
  numbers (:mod:`exporter.vocabulary.names`).

:class:`System` itself is the portable system: sockets and interfaces through psutil, and
nothing that needs a native call. ``--platform=portable`` runs exactly this on Linux, which is
how the code that Windows and macOS share is tested on every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, List, Mapping, Optional, Tuple

from exporter.config import ConfigError
from exporter.procfs.route import Route

# group -> field -> value, in Linux's names (exporter.procfs.snmp.Groups).
Groups = Dict[str, Dict[str, int]]
# The three tables of `netstat -s` as Linux has them: /proc/net/snmp's groups (Ip, Icmp,
# IcmpMsg, Tcp, Udp, UdpLite), /proc/net/netstat's (TcpExt, IpExt, MPTcpExt) and
# /proc/net/snmp6's (Ip6, Icmp6, Udp6, UdpLite6); None where a system has no such table.
ProtocolTables = Tuple[Optional[Groups], Optional[Groups], Optional[Groups]]


class PlatformError(ConfigError):
    """A flag that means nothing on the system the exporter runs on."""


class Unavailable(RuntimeError):
    """What a system cannot give at all (not "no data" but "no such thing here"); its message
    is one line that says what is missing and, where it helps, what to grant."""


@dataclass(frozen=True)
class Link:
    """One interface: its counters under /proc/net/dev's column names (only those the system
    has; ``receive_unknown_protocols`` is Windows's InUnknownProtos), and its state."""

    counters: Mapping[str, int]
    up: Optional[bool] = None  # operationally up
    mtu: Optional[int] = None  # bytes
    speed_bytes: Optional[float] = None  # link speed in bytes per second; None when unknown


@dataclass(frozen=True)
class Conn:
    """One socket of a system's own table (``netstat -ano``'s line): ``state`` is the Linux
    kernel's number (TCP_ESTABLISHED for a connected UDP socket, TCP_CLOSE for an unconnected
    one), ``pid`` the holder where the system says (None: unknown or not ours to see), ``uid``
    the socket's owner where the system says without naming the process (macOS's pcblist_n;
    None: unknown)."""

    family: str  # "ipv4" | "ipv6"
    state: int
    local: str
    lport: int
    remote: str
    rport: int
    pid: Optional[int] = None
    uid: Optional[int] = None


class System:
    """The portable system: sockets, listeners and interfaces through psutil.

    A subclass per operating system overrides what it reads natively and lists, in
    :attr:`collectors`, the collectors it can serve. Methods a system does not override raise
    :class:`Unavailable`; the scrape never calls them, since the collectors that would are not
    in :attr:`collectors` and cannot be enabled there.
    """

    name = "portable"
    # The collectors this system can serve.
    collectors: FrozenSet[str] = frozenset({"sockets", "listeners", "interfaces"})
    # Whether /proc and /sys exist here and --path.procfs/--path.sysfs mean something.
    has_procfs = False
    # The (group, field) pairs protocol_tables() can give, in Linux's names, for the reference
    # (docs/metrics.md); empty where any field the kernel prints may come (Linux).
    protocol_fields: FrozenSet[Tuple[str, str]] = frozenset()

    # What to grant for every listener to be named (said once in the log where one is not).
    grant = "run the exporter as root"

    def socket_source(self, asked: str) -> str:
        """The socket source a collector uses when its flag says ``asked``: only psutil reads
        sockets outside Linux. Raises PlatformError for a source that is Linux's own."""
        if asked not in ("auto", "psutil"):
            raise PlatformError(f"socket source {asked!r} means nothing on {self.name}: only "
                                "psutil reads sockets there")
        return "psutil"

    def connections(self, protocol: str) -> List[Conn]:
        """Every socket of ``protocol`` ("tcp" or "udp"), ``netstat -ano``."""
        from exporter.system import _psutil

        return _psutil.connections(protocol)

    def interfaces(self, wanted: Callable[[str], bool]) -> Dict[str, Link]:
        """Interfaces whose name ``wanted`` accepts, by name (``netstat -e``, ``-i``)."""
        from exporter.system import _psutil

        return _psutil.interfaces(wanted)

    def protocol_tables(self) -> ProtocolTables:
        """``netstat -s``."""
        raise Unavailable(f"protocol counters are not available on {self.name}")

    def routes(self) -> Optional[List[Route]]:
        """``netstat -r``: the main routing table, both families; None: no data."""
        raise Unavailable(f"the routing table is not available on {self.name}")
