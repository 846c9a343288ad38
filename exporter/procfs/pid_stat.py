"""/proc/<pid>/stat: a process's command name and start time; and the list of pids in /proc.

Format (fs/proc/array.c do_task_stat): ``pid (comm) state ppid pgrp ... starttime ...``. ``comm``
is the task's 15-character name as ``ps`` and ``ss -p`` show it; it may contain spaces and
parentheses, so it runs up to the *last* ``)`` of the line. ``starttime`` (field 22) is in clock
ticks since boot; with the pid it names one process for good, since pids are reused but never
at the same start time.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import List

from exporter.procfs import read_path
from exporter.procfs.errors import ParseError

# Field 22 counted from 1, i.e. index 19 of the fields after "pid (comm)".
_STARTTIME = 19


@dataclass(frozen=True)
class PidStat:
    pid: int
    comm: str
    state: str
    ppid: int
    starttime: int


def parse_stat(text: str, path: str) -> PidStat:
    """Parse the one line of /proc/<pid>/stat."""
    line = text.split("\n", 1)[0]
    open_ = line.find(" (")
    close = line.rfind(")")
    if open_ < 0 or close < open_:
        raise ParseError(path, "expected 'pid (comm) state ...'", 1)
    try:
        pid = int(line[:open_])
    except ValueError:
        raise ParseError(path, f"pid is not a number: {line[:open_]!r}", 1) from None
    rest = line[close + 1:].split()
    if len(rest) <= _STARTTIME:
        raise ParseError(path, f"expected at least {_STARTTIME + 3} fields, got {len(rest) + 2}", 1)
    try:
        ppid, starttime = int(rest[1]), int(rest[_STARTTIME])
    except ValueError:
        raise ParseError(path, "ppid or starttime is not a number", 1) from None
    return PidStat(pid, line[open_ + 2:close], rest[0], ppid, starttime)


def read_stat(root: str, pid: int) -> PidStat:
    """Read ``<root>/<pid>/stat``.

    Raises OSError when the process is gone (FileNotFoundError, or ProcessLookupError for a
    read that comes back empty because the task exited after the open) or not readable.
    """
    path = os.path.join(root, str(pid), "stat")
    # A command name is any bytes a program set; escaped, it is safe as a label and distinct.
    text = read_path(path, "backslashreplace")
    if not text:
        raise ProcessLookupError(errno.ESRCH, "process exited while being read", path)
    return parse_stat(text, path)


def list_pids(root: str) -> List[int]:
    """Every pid in ``<root>`` (the numeric directory names), highest first.

    The order is only a stable one: the highest pid is not the newest process once pids have
    wrapped, so whoever needs age orders by start time (exporter.listeners.owners.newest_first).
    """
    return sorted((int(n) for n in os.listdir(root) if n.isdigit()), reverse=True)
