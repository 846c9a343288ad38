"""/proc/<pid>/fd and /proc/<pid>/exe: which sockets a process holds, and what it runs.

Each entry of /proc/<pid>/fd is a symbolic link whose target, for a socket, reads
``socket:[<inode>]`` (net/socket.c sockfs_dname); the inode is the one sock_diag reports as
``idiag_inode`` and /proc/net/tcp as ``inode``. /proc/<pid>/exe links to the executable.

Reading another user's /proc/<pid>/fd or exe needs ptrace read access to that process
(fs/proc/base.c proc_fd_access_allowed, ptrace_may_access with PTRACE_MODE_READ_FSCREDS):
root, CAP_SYS_PTRACE, or CAP_DAC_READ_SEARCH for the directory listing. Without it these
readers raise PermissionError, which callers treat as "owner unknown".
"""

from __future__ import annotations

import contextlib
import os
from typing import Dict, Iterable, List, Optional, Tuple

from exporter.procfs.errors import ParseError

SOCKET_PREFIX = "socket:["
_DELETED = " (deleted)"


def parse_socket_link(target: str, path: str = "fd") -> Optional[int]:
    """The inode of a ``socket:[N]`` link target; None for any other kind of file."""
    if not target.startswith(SOCKET_PREFIX):
        return None
    if not target.endswith("]"):
        raise ParseError(path, f"malformed socket link {target!r}")
    try:
        return int(target[len(SOCKET_PREFIX):-1])
    except ValueError:
        raise ParseError(path, f"malformed socket link {target!r}") from None


def socket_fds(root: str, pid: int) -> List[Tuple[int, int]]:
    """(fd, socket inode) for every socket the process holds.

    Raises OSError if the directory cannot be read (process gone: FileNotFoundError or
    ProcessLookupError; not allowed: PermissionError). A descriptor closed between the listing
    and its readlink is skipped.
    """
    path = os.path.join(root, str(pid), "fd")
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        names = os.listdir(dfd)
        readlink = os.readlink
        # Relative readlinks against the open directory resolve one path component instead of
        # four; the comprehension keeps the Python work per descriptor small (this loop is the
        # cost of attributing sockets on a host with many descriptors).
        try:
            targets = [readlink(name, dir_fd=dfd) for name in names]
        except FileNotFoundError:  # one was closed since the listing: take them one by one
            targets = []
            for name in names:
                try:
                    targets.append(readlink(name, dir_fd=dfd))
                except FileNotFoundError:
                    targets.append("")
    finally:
        os.close(dfd)
    try:
        return [(int(name), int(t[8:-1])) for name, t in zip(names, targets)
                if t[:8] == SOCKET_PREFIX]
    except ValueError:  # not "socket:[<number>]": name the culprit
        for name, t in zip(names, targets):
            parse_socket_link(t, f"{path}/{name}")
        raise ParseError(path, "an entry that is not a descriptor number") from None


def read_fd_links(root: str, pid: int, fds: Iterable[int]) -> Dict[int, str]:
    """The targets of several of a process's fds, with one open of its fd directory. An fd that
    is no longer open is left out; OSError when the directory cannot be read."""
    dfd = os.open(os.path.join(root, str(pid), "fd"), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    out: Dict[int, str] = {}
    try:
        for fd in fds:
            with contextlib.suppress(FileNotFoundError):  # closed meanwhile: left out
                out[fd] = os.readlink(str(fd), dir_fd=dfd)
    finally:
        os.close(dfd)
    return out


def parse_exe_link(target: str) -> str:
    """The executable path, without the `` (deleted)`` that d_path appends once the file has
    been replaced (fs/d_path.c); a package upgrade must not change who a listener belongs to."""
    return target[: -len(_DELETED)] if target.endswith(_DELETED) else target


def read_exe(root: str, pid: int) -> str:
    """The executable of the process; OSError when gone, not allowed, or a kernel thread."""
    return parse_exe_link(os.readlink(os.path.join(root, str(pid), "exe")))
