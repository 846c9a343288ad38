"""Pure readers of /proc files: one module per file, no Prometheus imports.

Every reader takes the procfs root as a parameter (``--path.procfs``), splits I/O from
parsing (``read_x(root)`` reads, ``parse_x(text)`` is pure) and raises
:class:`~exporter.procfs.errors.ParseError` naming the file and line on malformed input.
A file that does not exist because a feature is off (IPv6 disabled, a module not loaded)
is reported as ``None`` ("no data"), never as an error.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, TypeVar

from exporter.procfs.errors import ParseError

__all__ = ["ENCODING", "ERRORS", "ParseError", "read_text", "read_optional_text",
           "read_parsed"]

# How every /proc and /sys file is decoded. The files are ASCII but for names the kernel copies
# from user space (interface names, unix socket paths), which may be UTF-8 or any bytes:
# surrogateescape keeps those bytes, so a name is never mangled or merged with another one, and
# exporter.labels turns it into a label value.
ENCODING, ERRORS = "utf-8", "surrogateescape"

T = TypeVar("T")


def read_text(root: str, *parts: str) -> str:
    """Read ``<root>/<parts...>`` as text. Raises OSError if it cannot be read."""
    with open(os.path.join(root, *parts), encoding=ENCODING, errors=ERRORS) as f:
        return f.read()


def read_optional_text(root: str, *parts: str) -> Optional[str]:
    """Like :func:`read_text`, but a missing file is ``None`` (the feature is off)."""
    try:
        return read_text(root, *parts)
    except FileNotFoundError:
        return None


def read_parsed(root: str, parse: Callable[[str, str], T], *parts: str) -> Optional[T]:
    """``parse(text, path)`` of ``<root>/<parts...>``; None when the file is absent."""
    text = read_optional_text(root, *parts)
    return None if text is None else parse(text, os.path.join(root, *parts))
