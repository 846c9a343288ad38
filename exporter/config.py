"""The frozen configuration that the command line (or a test) builds and everything else reads.

Nothing in here touches the system: `cli.py` turns flags into a :class:`Config`, and collectors,
registry and server only read it. Errors found while building it are :class:`ConfigError`
subclasses whose message is one line, fit to print after ``netstat-exporter: error:``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import FrozenSet, Optional, Tuple

DEFAULT_PORT = 9816
DEFAULT_LISTEN_ADDRESS = f":{DEFAULT_PORT}"


class ConfigError(ValueError):
    """A configuration value that cannot be used. The message is a single line."""


class UnknownCollectorError(ConfigError):
    """A collector name that no collector is registered under."""


class ListenAddressError(ConfigError):
    """A --web.listen-address that is not ``[host]:port``."""


class ProcfsPathError(ConfigError):
    """A --path.procfs that is not a readable procfs."""


class RegexError(ConfigError):
    """A regular expression flag that does not compile."""


@dataclass(frozen=True)
class ListenAddress:
    host: str  # "" means every address
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


_ADDR_RE = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.%a-zA-Z0-9]+)\]|(?P<host>[^\[\]:]*)):(?P<port>\d{1,5})$")


def parse_listen_address(text: str) -> ListenAddress:
    """Parse ``host:port``, ``:port`` or ``[v6]:port`` as node_exporter accepts them."""
    m = _ADDR_RE.match(text.strip())
    if not m:
        raise ListenAddressError(
            f"malformed --web.listen-address {text!r}: expected [host]:port, e.g. ':{DEFAULT_PORT}'"
        )
    port = int(m.group("port"))
    if not 0 <= port <= 65535:
        raise ListenAddressError(f"malformed --web.listen-address {text!r}: port out of range")
    host = m.group("v6") if m.group("v6") is not None else (m.group("host") or "")
    return ListenAddress(host=host, port=port)


def compile_regex(flag: str, pattern: Optional[str]) -> Optional[re.Pattern[str]]:
    """Compile an anchored regex flag value, or raise RegexError naming the flag."""
    if pattern is None or pattern == "":
        return None
    try:
        return re.compile(f"^(?:{pattern})$")
    except re.error as e:
        raise RegexError(f"{flag}: invalid regular expression {pattern!r}: {e}") from None


# The protocols collector's default fields, matched against "Group_Field" kernel names: what
# node_exporter's netstat collector exports by default, plus the counters that explain TIME_WAIT
# pile-ups, listen-queue overflows and memory aborts.
DEFAULT_PROTOCOLS_FIELDS = (
    r"^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)"
    r"|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts|TCPOFOQueue|TW|TWRecycled"
    r"|TWKilled|TCPTimeWaitOverflow|TCPBacklogDrop|TCPAbortOn.*|TCPReqQFull.*"
    r"|TCPMemoryPressures|TCPRcvQDrop)"
    r"|Tcp_(ActiveOpens|PassiveOpens|AttemptFails|EstabResets|CurrEstab|InSegs|OutSegs"
    r"|RetransSegs|OutRsts)"
    r"|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$"
)


@dataclass(frozen=True)
class Config:
    # --- web ---
    listen_addresses: Tuple[ListenAddress, ...] = (ListenAddress("", DEFAULT_PORT),)
    telemetry_path: str = "/metrics"
    max_requests: int = 40
    disable_exporter_metrics: bool = False
    # exporter-toolkit web configuration file (TLS, basic auth, headers); None: plain HTTP.
    web_config_file: Optional[str] = None
    # Seconds from accepting a connection until its request head (and TLS handshake) is in.
    read_header_timeout: float = 10.0
    # --- paths ---
    procfs: str = "/proc"
    sysfs: str = "/sys"
    # --- collectors ---
    collectors: FrozenSet[str] = field(default_factory=frozenset)
    # sockets: where to read sockets from; "auto" tries netlink, then /proc, then psutil.
    sockets_source: str = "auto"
    # protocols: regex over "Group_Field" names (TcpExt_ListenOverflows) choosing the fields.
    protocols_fields: str = DEFAULT_PROTOCOLS_FIELDS
    # interfaces: regexes over device names; "" means no filter.
    interfaces_device_include: str = ""
    interfaces_device_exclude: str = ""
    # routes: list every route as netstat_route_info, at most max_routes of them.
    routes_table: bool = False
    routes_max_routes: int = 1000
    # ports: busiest destinations listed (0: none); where sockets are read from.
    ports_top_destinations: int = 0
    ports_source: str = "auto"
    # listeners: where to read sockets from (as for sockets); add a pid label to
    # netstat_listener_info; how many ports netstat_listener_connections names before summing the
    # rest as "other", and whether to count connections at all; the expected-listeners file
    # ("" for none).
    listeners_source: str = "auto"
    listeners_pid_label: bool = False
    listeners_max_ports: int = 100
    listeners_connections: bool = True
    listeners_expected_file: str = ""
    # Flags that collectors declare in their own modules (registry.Option), by dest.
    collector_options: Tuple[Tuple[str, object], ...] = ()
    # --- logging ---
    log_level: str = "info"
    log_format: str = "logfmt"

    def replace(self, **changes: object) -> Config:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
