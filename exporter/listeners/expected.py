"""The expected-listeners file (``--collector.listeners.expected-file``): which listeners should
exist, so that every other one can be reported as unexpected.

YAML (any name) or TOML (a name ending in ``.toml``)::

    listeners:
      - port: 22
        protocol: tcp
        process: sshd
        user: root
      - port: 8000-8099          # an inclusive range
        protocol: any            # tcp, udp or any
        address: 127.0.0.0/8     # an address or a network; omitted: any address
        executable: /usr/bin/python3*
        description: free text, ignored

``process``, ``executable`` and ``user`` are shell-style globs (``*``, ``?``, ``[...]``) that must
match the whole value, case-sensitively; prefix one with ``re:`` for a regular expression
(also matched against the whole value). A listener is expected when at least one entry matches
every field the entry gives. Unknown keys, bad values and duplicate keys are refused with the
file name and line.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

from exporter import yamlsafe
from exporter.config import ConfigError, anchored, regex_problem
from exporter.install import WEB, install_command

KEYS = ("port", "protocol", "address", "process", "executable", "user", "description")
REQUIRED = ("port", "protocol")
PROTOCOLS = ("tcp", "udp", "any")
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

# Thousands of entries fit in a fraction of this; a larger file is refused before parsing.
MAX_FILE_BYTES = 4 << 20

# One entry as read from either format: key -> (value, line); and the entry's own line.
_Entry = Tuple[int, Dict[str, Tuple[Any, int]]]


class ExpectedFileError(ConfigError):
    """An expected-listeners file that cannot be used; the message names file and line."""

    def __init__(self, path: str, message: str, line: Optional[int] = None) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"expected-listeners file {where}: {message}")


@dataclass(frozen=True)
class Pattern:
    """A glob, or with the ``re:`` prefix a regular expression, matched against a whole value."""

    text: str
    regex: re.Pattern[str]

    @classmethod
    def parse(cls, text: str) -> Pattern:
        if text.startswith("re:"):
            return cls(text, anchored(text[3:], r"\Z"))
        return cls(text, re.compile(fnmatch.translate(text)))

    def __call__(self, value: str) -> bool:
        return self.regex.match(value) is not None


@dataclass(frozen=True)
class Rule:
    line: int
    low: int
    high: int
    protocol: str
    address: Optional[Network] = None
    process: Optional[Pattern] = None
    executable: Optional[Pattern] = None
    user: Optional[Pattern] = None

    def matches(self, protocol: str, address: str, port: int, process: str, executable: str,
                user: str) -> bool:
        if not self.low <= port <= self.high:
            return False
        if self.protocol != "any" and self.protocol != protocol:
            return False
        if self.address is not None:
            try:
                ip = ipaddress.ip_address(address.split("%", 1)[0])
            except ValueError:
                return False
            if ip not in self.address:
                return False
        if self.process is not None and not self.process(process):
            return False
        if self.executable is not None and not self.executable(executable):
            return False
        return self.user is None or self.user(user)


@dataclass(frozen=True)
class ExpectedListeners:
    path: str
    rules: Tuple[Rule, ...]

    def matches(self, protocol: str, address: str, port: int, process: str = "",
                executable: str = "", user: str = "") -> bool:
        return any(r.matches(protocol, address, port, process, executable, user)
                   for r in self.rules)


# --- reading ---------------------------------------------------------------------------------

def load(path: str) -> ExpectedListeners:
    """Read and validate the file. Raises ExpectedFileError with a one-line message."""
    try:
        text = yamlsafe.read_capped(path, MAX_FILE_BYTES)
    except OSError as e:
        raise ExpectedFileError(path, e.strerror or str(e)) from None
    except UnicodeDecodeError:
        raise ExpectedFileError(path, "not UTF-8 text") from None
    except yamlsafe.TooLarge as e:
        raise ExpectedFileError(path, f"{e}, refused unread") from None
    entries = _toml_entries(text, path) if path.endswith(".toml") else _yaml_entries(text, path)
    return ExpectedListeners(path, tuple(_rule(path, line, e) for line, e in entries))


def _yaml_entries(text: str, path: str) -> List[_Entry]:
    """The listener entries of a YAML file: each entry's line and its keys, each with its value
    and line."""
    yaml = _import_yaml(path)
    root = _compose_yaml(yaml, text, path)
    nodes = _YamlNodes(yaml, path)
    if isinstance(root, yaml.SequenceNode):
        raise ExpectedFileError(path, "the file is a list; put its entries under a "
                                      "'listeners:' key", nodes.line(root))
    listeners = _listeners_node(nodes, nodes.mapping(root, "the file"), root)
    if listeners is None:
        return []
    entries: List[_Entry] = []
    for item in listeners.value:
        fields = nodes.mapping(item, "a listener entry")
        entries.append((nodes.line(item),
                        {k: (nodes.scalar(v), ln) for k, (v, ln) in fields.items()}))
    return entries


def _import_yaml(path: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise ExpectedFileError(
            path, f"reading YAML needs PyYAML: install it with: {install_command(*WEB)}; "
                  "or write the file in TOML") from None
    return yaml


def _compose_yaml(yaml: Any, text: str, path: str) -> Any:
    """The file's node tree (nothing constructed yet), or a one-line error with the line."""
    deep = yamlsafe.nesting_error(yaml, text)
    if deep is not None:
        raise ExpectedFileError(path, f"invalid YAML: {deep[1]}", deep[0])
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        if mark is not None and e.context_mark is not None and mark.line >= text.count("\n"):
            mark = e.context_mark  # "found end of stream": where the unclosed thing began
        raise ExpectedFileError(path, f"invalid YAML: {e.problem or e.context}",
                                mark.line + 1 if mark else None) from None
    except yaml.YAMLError as e:
        raise ExpectedFileError(path, f"invalid YAML: {' '.join(str(e).split())}") from None
    if root is None:
        raise ExpectedFileError(path, "empty file; write 'listeners: []' to expect no listener")
    return root


class _YamlNodes:
    """Reads composed YAML nodes of one file into values, each error naming its line."""

    def __init__(self, yaml: Any, path: str) -> None:
        self.yaml, self.path = yaml, path
        self.constructor = yaml.SafeLoader("")

    @staticmethod
    def line(node: Any) -> int:
        return int(node.start_mark.line) + 1

    def scalar(self, node: Any) -> Any:
        if not isinstance(node, self.yaml.ScalarNode):
            raise ExpectedFileError(self.path, "expected a single value", self.line(node))
        try:
            return self.constructor.construct_object(node, deep=True)
        except self.yaml.YAMLError as e:
            raise ExpectedFileError(self.path, f"invalid value: {' '.join(str(e).split())}",
                                    self.line(node)) from None
        except (ValueError, TypeError, OverflowError) as e:  # e.g. the date 2024-13-45
            raise ExpectedFileError(self.path, f"invalid value: {e}", self.line(node)) from None

    def mapping(self, node: Any, what: str) -> Dict[str, Tuple[Any, int]]:
        """A mapping's keys, each with its value node and line."""
        if not isinstance(node, self.yaml.MappingNode):
            raise ExpectedFileError(self.path, f"{what} must be a mapping", self.line(node))
        out: Dict[str, Tuple[Any, int]] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node)
            if not isinstance(key, str):
                raise ExpectedFileError(self.path, f"key {key!r} is not a name",
                                        self.line(key_node))
            if key in out:
                raise ExpectedFileError(self.path, f"duplicate key {key!r}",
                                        self.line(key_node))
            out[key] = (value_node, self.line(key_node))
        return out


def _listeners_node(nodes: _YamlNodes, top: Dict[str, Tuple[Any, int]], root: Any) -> Any:
    """The sequence node of the file's one key, ``listeners``; None when it is null."""
    for key, (_node, ln) in top.items():
        if key != "listeners":
            raise ExpectedFileError(nodes.path, f"unknown key {key!r} (expected 'listeners')", ln)
    if "listeners" not in top:
        raise ExpectedFileError(nodes.path, "missing 'listeners'", nodes.line(root))
    listeners, _ = top["listeners"]
    if isinstance(listeners, nodes.yaml.ScalarNode) and nodes.scalar(listeners) is None:
        return None
    if not isinstance(listeners, nodes.yaml.SequenceNode):
        raise ExpectedFileError(nodes.path, "'listeners' must be a list", nodes.line(listeners))
    return listeners


def _toml_entries(text: str, path: str) -> List[_Entry]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - depends on the Python version
        try:
            import tomli as tomllib
        except ImportError:
            raise ExpectedFileError(path, "reading TOML needs Python 3.11 or the tomli "
                                          "package; or write the file in YAML") from None
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise ExpectedFileError(path, "invalid TOML: nested too deeply") from None
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\(at line (\d+), column \d+\)", msg)
        raise ExpectedFileError(path, "invalid TOML: " + msg.split(" (at line")[0],
                                int(m.group(1)) if m else None) from None
    # tomllib gives no positions: find each [[listeners]] header, and each key after it, in the
    # text. Exact for the layout the format is written in; line 0 (no line) if it is unusual.
    lines = text.splitlines()
    headers = [n for n, ln in enumerate(lines, 1) if re.match(r"\s*\[\[\s*listeners\s*\]\]", ln)]
    for key in data:
        if key != "listeners":
            raise ExpectedFileError(path, f"unknown key {key!r} (expected [[listeners]] tables)",
                                    _find_key(lines, key, 1, len(lines)))
    tables = data.get("listeners", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ExpectedFileError(path, "'listeners' must be an array of tables ([[listeners]])")
    entries: List[_Entry] = []
    for i, t in enumerate(tables):
        start = headers[i] if i < len(headers) else 0
        end = headers[i + 1] if i + 1 < len(headers) else len(lines) + 1
        entries.append((start, {k: (v, _find_key(lines, k, start, end) or start)
                                for k, v in t.items()}))
    return entries


def _find_key(lines: List[str], key: str, start: int, end: int) -> int:
    pat = re.compile(rf"\s*\"?{re.escape(key)}\"?\s*=")
    for n in range(max(start, 1), min(end, len(lines) + 1)):
        if pat.match(lines[n - 1]):
            return n
    return 0


def _rule(path: str, line: int, entry: Dict[str, Tuple[Any, int]]) -> Rule:
    for key, (_v, ln) in entry.items():
        if key not in KEYS:
            raise ExpectedFileError(path, f"unknown key {key!r} (known: {', '.join(KEYS)})", ln)
    for key in REQUIRED:
        if key not in entry:
            raise ExpectedFileError(path, f"listener entry without '{key}'", line)

    port, ln = entry["port"]
    low, high = _port_range(path, port, ln)
    proto, ln = entry["protocol"]
    if proto not in PROTOCOLS:
        raise ExpectedFileError(path, f"protocol {proto!r}: expected one of "
                                      f"{', '.join(PROTOCOLS)}", ln)
    address: Optional[Network] = None
    if "address" in entry:
        value, ln = entry["address"]
        try:
            address = ipaddress.ip_network(str(value), strict=False)
        except ValueError:
            raise ExpectedFileError(path, f"address {value!r} is not an IP address or "
                                          "network", ln) from None
    patterns: Dict[str, Optional[Pattern]] = {}
    for key in ("process", "executable", "user"):
        patterns[key] = None
        if key in entry:
            value, ln = entry[key]
            if not isinstance(value, str) or not value:
                raise ExpectedFileError(path, f"{key} must be a non-empty text", ln)
            try:
                patterns[key] = Pattern.parse(value)
            except re.error as e:
                raise ExpectedFileError(path, f"{key}: invalid regular expression "
                                              f"{value[3:]!r}: {regex_problem(e)}", ln) from None
    return Rule(line, low, high, proto, address, patterns["process"], patterns["executable"],
                patterns["user"])


def _port_range(path: str, value: Any, line: int) -> Tuple[int, int]:
    if isinstance(value, bool):
        raise ExpectedFileError(path, f"port {value!r} is not a number", line)
    if isinstance(value, int):
        low = high = value
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+\s*(-\s*\d+\s*)?", value):
        a, _, b = value.partition("-")
        low, high = int(a), int(b or a)
    else:
        raise ExpectedFileError(path, f"port {value!r}: expected a number or a range "
                                      "'low-high'", line)
    for p in (low, high):
        if not 1 <= p <= 65535:
            raise ExpectedFileError(path, f"port {p} out of range 1-65535", line)
    if low > high:
        raise ExpectedFileError(path, f"port range {low}-{high} is empty", line)
    return low, high

