"""Pure readers of /proc files: one module per file, no Prometheus imports.

Every reader takes the procfs root as a parameter (``--path.procfs``), splits I/O from
parsing (``read_x(root)`` reads, ``parse_x(text)`` is pure) and raises
:class:`~exporter.procfs.errors.ParseError` naming the file and line on malformed input.

One rule for missing files: a file that does not exist because a feature is off (IPv6
disabled, a module not loaded) is reported as ``None`` ("no data", :func:`read_parsed`); a
file that every Linux kernel has (``REQUIRED``), missing, is an error naming it
(:func:`read_required`), which fails the collector that needed it.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, List, Optional, TypeVar

from exporter.procfs import own_files
from exporter.procfs.errors import ParseError

__all__ = ["ENCODING", "ERRORS", "REQUIRED", "ParseError", "read_bytes", "read_path", "read_text",
           "read_optional_text", "read_parsed", "read_required", "not_a_procfs",
           "is_procfs_mount", "shows_live_net"]

# How every /proc and /sys file is decoded. The files are ASCII but for names the kernel copies
# from user space (interface names, unix socket paths), which may be UTF-8 or any bytes:
# surrogateescape keeps those bytes, so a name is never mangled or merged with another one, and
# exporter.labels turns it into a label value.
ENCODING, ERRORS = "utf-8", "surrogateescape"

T = TypeVar("T")


_CHUNK = 1 << 16


def read_bytes(path: str) -> bytes:
    """The whole of a file, read with plain system calls: open, read until end of file, close.
    A scrape reads dozens of small /proc and /sys files, and Python's buffered open() costs
    several times the kernel's work for each (an fstat, an ioctl, an lseek, a buffer and a
    decoder). Reading stops only at an empty read: a short read is not the end of a /proc file
    on every kernel (before Linux 5.10 a seq_file read returns at most one buffer's worth).
    Raises OSError if the file cannot be read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, _CHUNK)
        if not data:
            return data
        more = os.read(fd, _CHUNK)
        if not more:
            return data
        chunks = [data, more]
        while more:
            more = os.read(fd, _CHUNK)
            chunks.append(more)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_path(path: str, errors: str = ERRORS) -> str:
    """:func:`read_bytes` decoded as UTF-8 (``errors`` for what is not)."""
    return read_bytes(path).decode(ENCODING, errors)


def read_text(root: str, *parts: str) -> str:
    """Read ``<root>/<parts...>`` as text. Raises OSError if it cannot be read. The exporter's
    own net/ and sys/ files are read through descriptors kept open (:mod:`exporter.procfs.own_files`)
    once the scrape has asked for it."""
    path = os.path.join(root, *parts)
    if own_files.kept(root, parts[0]):
        return own_files.read(path, own_files.printed_whole(parts)).decode(ENCODING, ERRORS)
    return read_bytes(path).decode(ENCODING, ERRORS)


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


# Files of /proc that every Linux kernel with networking has, whatever its configuration (IPv4
# cannot be compiled out: net/ipv4/proc.c, net/core/net-procfs.c, net/ipv4/fib_trie.c, and the
# IPv4 TCP and UDP tables of net/ipv4/tcp_ipv4.c and udp.c).
REQUIRED = ("net/dev", "net/snmp", "net/netstat", "net/route", "net/tcp", "net/udp")


def read_required(root: str, parse: Callable[[str, str], T], *parts: str) -> Optional[T]:
    """``parse(text, path)`` of a file every Linux kernel has: missing, it raises ParseError
    naming it, so the collector fails rather than reporting no data. Only Linux's system
    (:mod:`exporter.system._linux`) reads procfs."""
    path = os.path.join(root, *parts)
    try:
        text = read_text(root, *parts)
    except FileNotFoundError:
        raise ParseError(path, "missing, though every Linux kernel has it (is --path.procfs "
                               "a procfs mount?)") from None
    return parse(text, path)


def not_a_procfs(root: str) -> Optional[str]:
    """Why ``root`` is not a procfs (as mounted at /proc, or a copy of one), or None.

    A procfs has ``net/`` (a link to ``self/net``); an empty or unrelated directory does not,
    and would otherwise give every collector nothing to read and no error to report."""
    if not os.path.isdir(os.path.join(root, "net")):
        return "has no net/ directory"
    return None


def _proc_mounts() -> List[str]:
    """Where procfs is mounted, per /proc/self/mountinfo (mountinfo(5): the mount point is the
    fifth field, the filesystem type follows " - ")."""
    try:
        text = read_path("/proc/self/mountinfo", "replace")
    except OSError:
        return []
    return [fields[4] for line in text.splitlines()
            if len(fields := line.split()) > 4 and " - proc " in line]


def is_procfs_mount(root: str) -> bool:
    """Whether ``root`` is where a procfs is mounted, not a copy of a /proc tree."""
    return os.path.realpath(root) in _proc_mounts()


@functools.lru_cache(maxsize=16)
def shows_live_net(root: str) -> bool:
    """Whether ``<root>/net`` is the kernel's own (it lies on a mounted procfs), not files copied
    from some host (test fixtures, a tarball). A mounted procfs's ``net`` shows the namespace of
    the process reading it (``/proc/net`` is a link to ``self/net``) or of the process it
    belongs to (``/proc/<pid>/net``): what netlink sock_diag dumps in that namespace. Asked once
    per root: what is mounted where does not change under a running exporter."""
    net = os.path.realpath(os.path.join(root, "net"))
    return any(net == m or net.startswith(m.rstrip("/") + "/") for m in _proc_mounts())
