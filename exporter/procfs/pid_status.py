"""/proc/<pid>/status: the user ids of a process, and its effective capabilities.

Format (fs/proc/array.c task_state): ``Key:\\tvalue`` lines (lines of any other shape, which
kernels or patches may add, are skipped: only Name and Uid are read); ``Uid:`` carries the
real, effective, saved and filesystem uids, tab separated. The effective uid is the one
``ps -o user`` shows and the one that decides what the process may do, so it names the
process's user.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Tuple

from exporter.procfs import read_path
from exporter.procfs.errors import ParseError


@dataclass(frozen=True)
class PidStatus:
    name: str
    uids: Tuple[int, int, int, int]  # real, effective, saved, filesystem

    @property
    def euid(self) -> int:
        return self.uids[1]


def parse_status(text: str, path: str) -> PidStatus:
    name = ""
    for n, line in enumerate(text.splitlines(), start=1):
        key, sep, value = line.partition(":")
        if not sep:
            continue  # only Name and Uid are read; a line of another shape is not theirs
        if key == "Name":
            name = value.strip()
        elif key == "Uid":
            f = value.split()
            if len(f) != 4:
                raise ParseError(path, f"Uid: expected 4 values, got {len(f)}", n)
            try:
                uids = (int(f[0]), int(f[1]), int(f[2]), int(f[3]))
            except ValueError:
                raise ParseError(path, f"Uid: not numbers: {value.strip()!r}", n) from None
            return PidStatus(name, uids)
    raise ParseError(path, "no Uid: line")


def read_status(root: str, pid: int) -> PidStatus:
    """Read ``<root>/<pid>/status``; OSError when the process is gone or not readable."""
    path = os.path.join(root, str(pid), "status")
    # A command name is any bytes a program set; escaped, it is safe as a label and distinct.
    text = read_path(path, "backslashreplace")
    if not text:
        raise ProcessLookupError(errno.ESRCH, "process exited while being read", path)
    return parse_status(text, path)


# Capability bits (include/uapi/linux/capability.h).
CAP_DAC_READ_SEARCH = 2
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21


def parse_cap_eff(text: str, path: str) -> int:
    """The effective capability set, ``CapEff:`` in hexadecimal (fs/proc/array.c
    task_cap)."""
    for n, line in enumerate(text.splitlines(), start=1):
        key, sep, value = line.partition(":")
        if sep and key == "CapEff":
            try:
                return int(value.strip(), 16)
            except ValueError:
                raise ParseError(path, f"CapEff: not hexadecimal: {value.strip()!r}", n) from None
    raise ParseError(path, "no CapEff: line")


def read_own_cap_eff(root: str) -> int:
    """The effective capabilities of the reading process, from ``<root>/self/status``."""
    path = os.path.join(root, "self", "status")
    return parse_cap_eff(read_path(path, "backslashreplace"), path)
