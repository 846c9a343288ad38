"""tracefs: where it is mounted, and what a tracepoint's ``format`` file says (its id, and the
name, offset and size of every field of its record).

A classic tracepoint's BPF program reads the record the kernel fills for that event; the
offsets of its fields differ between kernel versions and configurations, so they are read here
from ``events/<system>/<event>/format`` when the program is built, never hard-coded.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

DEFAULT_MOUNT = "/sys/kernel/tracing"
LEGACY_MOUNT = "/sys/kernel/debug/tracing"


class TracefsError(RuntimeError):
    """tracefs cannot be used; the message is one line naming what is missing."""


@dataclass(frozen=True)
class Field:
    name: str
    ctype: str  # as the format file gives it: "__u16", "int", "const void *", "__u8"
    offset: int
    size: int  # of the whole field (an array's total size)
    signed: bool
    array: int = 0  # element count for an array field, 0 otherwise


@dataclass(frozen=True)
class Format:
    system: str
    name: str
    id: int
    fields: Dict[str, Field]

    def field(self, name: str) -> Field:
        f = self.fields.get(name)
        if f is None:
            raise TracefsError(f"tracepoint {self.system}:{self.name} has no field {name!r} "
                               f"(fields: {', '.join(self.fields)})")
        return f

    def has(self, name: str) -> bool:
        return name in self.fields


_FIELD = re.compile(r"^\s*field:(?P<decl>[^;]+);\s*offset:(?P<off>\d+);\s*size:(?P<size>\d+);"
                    r"\s*signed:(?P<signed>\d+);")
_DECL = re.compile(r"^(?P<type>.*?)\s*\b(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?:\[(?P<n>\d*)\])?$")


def parse_format(text: str, system: str = "", name: str = "") -> Format:
    """Parse a tracepoint's ``format`` file. Raises TracefsError on a file without an id."""
    tp_id: Optional[int] = None
    fields: Dict[str, Field] = {}
    for line in text.splitlines():
        if line.startswith("name:") and not name:
            name = line.split(":", 1)[1].strip()
        elif line.startswith("ID:"):
            try:
                tp_id = int(line.split(":", 1)[1])
            except ValueError:
                raise TracefsError(f"tracepoint {system}:{name}: malformed ID line {line!r}"
                                   ) from None
        else:
            m = _FIELD.match(line)
            if not m:
                continue
            d = _DECL.match(m.group("decl").strip())
            if not d:
                continue
            n = d.group("n")
            fields[d.group("name")] = Field(
                d.group("name"), d.group("type").strip(), int(m.group("off")),
                int(m.group("size")), m.group("signed") == "1",
                int(n) if n else 0)
    if tp_id is None:
        raise TracefsError(f"tracepoint {system}:{name}: format file has no ID")
    return Format(system, name, tp_id, fields)


def mounted(mounts: str = "/proc/self/mounts") -> Optional[str]:
    """The first tracefs mount point in ``mounts`` whose events directory exists, or the
    tracing directory of a mounted debugfs (older systems), or None."""
    try:
        with open(mounts, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    candidates = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "tracefs":
            candidates.append(parts[1].replace("\\040", " "))
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "debugfs":
            candidates.append(os.path.join(parts[1].replace("\\040", " "), "tracing"))
    for path in candidates:
        try:
            os.stat(os.path.join(path, "events"))
        except PermissionError:
            return path  # tracefs is mode 0700: there, but not for this process
        except OSError:
            continue
        return path
    return None


def _mount_tracefs(target: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                           ctypes.c_void_p)
    if libc.mount(b"nodev", target.encode(), b"tracefs", 0, None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def find(mount_if_missing: bool = True, target: str = DEFAULT_MOUNT,
         mounts: str = "/proc/self/mounts") -> str:
    """Where tracefs is. If it is not mounted, mount it at ``target`` (needs CAP_SYS_ADMIN in
    the initial user namespace; the mount stays after the exporter exits, as systemd's own
    sys-kernel-tracing.mount would). Raises TracefsError with one line saying what is missing."""
    path = mounted(mounts)
    if path is not None:
        try:
            os.stat(os.path.join(path, "events"))
        except PermissionError:
            raise TracefsError(f"tracefs at {path} is readable by root only: run as root or "
                               "give the exporter CAP_DAC_READ_SEARCH") from None
        return path
    if os.path.isdir(os.path.join(target, "events")):
        return target  # mounted but not listed (another mount namespace's view)
    if not mount_if_missing:
        raise TracefsError(f"tracefs is not mounted (mount -t tracefs nodev {target})")
    if not os.path.isdir(target):
        raise TracefsError(f"tracefs is not mounted and {target} does not exist (a kernel "
                           "without CONFIG_TRACING, or /sys not mounted)")
    try:
        _mount_tracefs(target)
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EACCES):
            raise TracefsError(f"tracefs is not mounted and mounting it at {target} needs "
                               f"CAP_SYS_ADMIN: mount -t tracefs nodev {target} (or give the "
                               "exporter a host /sys/kernel/tracing)") from None
        raise TracefsError(f"tracefs is not mounted and mounting it at {target} failed: "
                           f"{e.strerror}") from None
    if not os.path.isdir(os.path.join(target, "events")):
        raise TracefsError(f"tracefs mounted at {target} has no events directory")
    return target


def read_format(root: str, system: str, event: str) -> Format:
    """The format of tracepoint ``system:event`` under tracefs ``root``."""
    path = os.path.join(root, "events", system, event, "format")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        raise TracefsError(f"the kernel has no tracepoint {system}:{event} ({path})") from None
    except PermissionError:
        raise TracefsError(f"cannot read {path}: tracefs is readable by root only (run as "
                           "root, or give the exporter CAP_DAC_READ_SEARCH)") from None
    return parse_format(text, system, event)


def read_formats(root: str, events: Sequence[str], optional: Sequence[str] = ()
                 ) -> Dict[str, Format]:
    """Formats of ``system:event`` names; an ``optional`` one the kernel lacks is left out."""
    out: Dict[str, Format] = {}
    for ev in list(events) + list(optional):
        system, event = ev.split(":", 1)
        try:
            out[ev] = read_format(root, system, event)
        except TracefsError:
            if ev in optional and not os.path.isdir(os.path.join(root, "events", system, event)):
                continue
            raise
    return out
