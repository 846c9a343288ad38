"""The one error type that every /proc reader raises for content it cannot parse."""

from __future__ import annotations

from typing import Optional


class ParseError(ValueError):
    """A /proc (or netlink) payload that does not have the expected shape.

    Carries the file and, where it makes sense, the 1-based line number, so that a log line
    says exactly where to look: ``/proc/net/snmp:4: expected 17 values, got 3``.
    """

    def __init__(self, path: str, message: str, line: Optional[int] = None) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")
