"""The frozen configuration that the command line (or a test) builds and everything else reads.

Nothing in here touches the system: `cli.py` turns flags into a :class:`Config`, and collectors,
scrape and server only read it. Collector options are not fields here: each collector module
declares its own option dataclass and flags (:mod:`exporter.collectors.api`), and the Config
carries the instances in ``options``. Errors found while building it are :class:`ConfigError`
subclasses whose message is one line, fit to print after ``netstat-exporter: error:``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, FrozenSet, Mapping, Optional, Tuple

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


class SysfsPathError(ConfigError):
    """A --path.sysfs that is not a readable sysfs."""


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


# Flags a pattern may set for the whole of itself, written at its start: (?i) for case, as in
# Go's RE2, which node_exporter's patterns use. They must stay at the front once anchored.
_GLOBAL_FLAGS = re.compile(r"\(\?[aiLmsux]+\)")


def anchored(pattern: str, end: str = "$") -> re.Pattern[str]:
    """``pattern`` compiled to match a whole value. Raises re.error whose position is in
    ``pattern`` as given, not in the anchored text built around it."""
    re.compile(pattern)  # the user's own text first: its errors point into it
    flags = _GLOBAL_FLAGS.match(pattern)
    lead = flags.group(0) if flags else ""
    return re.compile(f"{lead}^(?:{pattern[len(lead):]}){end}")


def regex_problem(e: re.error) -> str:
    """What is wrong with a pattern, and where: ``missing ), unterminated subpattern at
    position 4``."""
    return e.msg if e.pos is None else f"{e.msg} at position {e.pos}"


def compile_regex(flag: str, pattern: Optional[str]) -> Optional[re.Pattern[str]]:
    """Compile an anchored regex flag value, or raise RegexError naming the flag and quoting the
    pattern as the user wrote it."""
    if pattern is None or pattern == "":
        return None
    try:
        return anchored(pattern)
    except re.error as e:
        raise RegexError(f"{flag} {pattern!r}: invalid regular expression: "
                         f"{regex_problem(e)}") from None


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
    # --- system ---
    # The system whose readers serve the collectors (exporter.system): "auto" (this one),
    # "linux", "windows", "darwin" or "portable" (psutil alone, --platform=portable).
    system: str = "auto"
    # --- paths ---
    procfs: str = "/proc"
    sysfs: str = "/sys"
    # --- collectors ---
    collectors: FrozenSet[str] = field(default_factory=frozenset)
    # Each collector's options, by collector name: an instance of the frozen dataclass the
    # collector module declares (exporter.collectors.api.register); absent means its defaults.
    options: Mapping[str, Any] = field(default_factory=dict)
    # --- logging ---
    log_level: str = "info"
    log_format: str = "logfmt"

    def replace(self, **changes: object) -> Config:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
