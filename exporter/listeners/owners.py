"""Which processes hold which sockets: socket inodes mapped to processes through /proc/<pid>/fd,
with process identity (name, executable, user) cached across scrapes.

The kernel keeps no map from a socket to the processes holding it; ``ss -p``, ``netstat -p`` and
``lsof`` all read every descriptor of every process. :class:`OwnerCache` reads less:

* It is asked about a known set of inodes (the listening sockets) and walks the processes,
  newest first by start time (never by pid, which wraps), only until every inode it is
  looking for has been found; each process it opens is read whole, so several sockets of one
  program are found together. Ordering costs one read of /proc/<pid>/stat per process, made
  only when a walk is needed.
* A socket's holders are the newest process holding it and those of that process's ancestors
  that hold it too: the worker of a pre-fork server and its master, a service and the systemd
  that passed it the socket. Unrelated or older sibling holders are not looked for, which would
  take reading every process; the rule gives the same answer whatever else the walk met.
* It remembers where it found each socket (pid, start time, fd). On the next call a socket is
  confirmed with one readlink per holder, and a process with one read of /proc/<pid>/stat; only
  sockets that are new, or one of whose holders has gone, send it walking again.
* Identity is cached by (pid, start time), which names one process for good; it is re-read when
  the command name changes (an exec keeps pid and start time) and dropped when the process no
  longer holds a socket of interest.
* A socket searched for and not found (another user's process without the privilege to look,
  a process in another pid namespace, one that has just exited) stays "unknown" without making
  every later call walk again; it is picked up if a later walk, made for a new socket, meets it.

Processes come and go while this runs: any of their files may vanish (ENOENT, ESRCH) or refuse
(EACCES, EPERM) at any step, and that only ever makes an owner unknown, never an error.
Thread-safe: the HTTP server scrapes from several threads, so calls are serialised by a lock.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Collection, Deque, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from exporter import waits
from exporter.procfs import pid_fd, pid_stat, pid_status
from exporter.procfs.errors import ParseError

log = logging.getLogger(__name__)

# OSError covers FileNotFoundError (gone), ProcessLookupError (ESRCH: gone mid-read),
# PermissionError (EACCES/EPERM: not allowed); ParseError a file cut short by the exit.
_VANISHED = (OSError, ParseError)
# Threads reading fd tables during a walk (at most one per CPU).
READ_THREADS = 4
# A walk that has read this many processes without finding every socket asks whether the
# missing ones still exist (see OwnerCache.owners).
RECHECK_AFTER = 16


@dataclass(frozen=True)
class Identity:
    """Who a process is, as the labels show it. Empty strings where unknown."""

    name: str
    exe: str
    user: str


@dataclass(frozen=True)
class Owner:
    pid: int
    identity: Identity


@dataclass
class _Proc:
    starttime: int
    comm: str
    ppid: int
    identity: Optional[Identity] = None


@dataclass
class Stats:
    """What the last call did; for the log and the benchmark."""

    walked_processes: int = 0
    verified: int = 0
    searched: int = 0
    unknown: int = 0
    closed: int = 0  # looked for, and found closed by the time the walk asked


def newest_first(stats: Iterable[pid_stat.PidStat]) -> List[int]:
    """Pids ordered from the most recently started process to the oldest.

    By start time, not by pid: pids are handed out in a cycle (kernel/pid.c alloc_pid,
    idr_alloc_cyclic), so once they wrap a worker started after its parent has the lower pid.
    Start times are clock ticks (field 22 of /proc/<pid>/stat), so a parent and the child it
    forks in the same tick tie: a child is never older than its parent, so among equal start
    times the deeper process in the tree comes first; unrelated ties go by pid, highest first.
    """
    by_pid = {s.pid: s for s in stats}
    depth: Dict[int, int] = {}

    def depth_of(pid: int) -> int:
        chain: List[int] = []
        while pid in by_pid and pid not in depth and len(chain) < 4096:
            chain.append(pid)
            pid = by_pid[pid].ppid
        d = depth.get(pid, 0)
        for p in reversed(chain):
            d += 1
            depth[p] = d
        return d

    return sorted(by_pid, key=lambda p: (by_pid[p].starttime, depth_of(p), p), reverse=True)


class OwnerCache:
    def __init__(self, procfs: str) -> None:
        self.procfs = procfs
        self._lock = threading.Lock()
        # inode -> [(pid, fd)] where it was last seen
        self._holders: Dict[int, List[Tuple[int, int]]] = {}
        self._unknown: Set[int] = set()
        self._procs: Dict[int, _Proc] = {}
        self._users: Dict[int, str] = {}
        self._still_open: Optional[Callable[[Set[int]], Set[int]]] = None
        # Every process's stat, during a walk only.
        self._stats: Dict[int, pid_stat.PidStat] = {}
        self.stats = Stats()
        self._warned = False

    # --- public ------------------------------------------------------------------------------

    def owners(self, inodes: Collection[int],
               still_open: Optional[Callable[[Set[int]], Set[int]]] = None
               ) -> Dict[int, List[Owner]]:
        """The processes holding each of ``inodes`` ([] where none could be determined).

        ``still_open``, given a set of inodes, returns those whose sockets still exist. A
        socket whose process exits between the caller's listing and this walk is closed with
        it, and looking for it would read every process on the host; on a host where programs
        start and exit all the time that is nearly every call. So a walk over more than
        RECHECK_AFTER processes asks before it starts, and again once it has read that many
        (the newest, where a new socket's holder almost always is) without finding everything,
        and stops looking for what is gone.
        """
        # Time spent waiting here for another scrape's lookup is not this scrape's work.
        with waits.acquired(self._lock):
            self._still_open = still_open
            try:
                out = self._owners(set(inodes))
            finally:
                self._still_open = None
            if self.stats.unknown and not self._warned:
                self._warn_unprivileged(self.stats.unknown)
            return out

    def _warn_unprivileged(self, unknown: int) -> None:
        """Say once, when sockets go unattributed for lack of privilege, how many and what
        would fix it. Sockets of processes in other pid namespaces are unattributed whatever
        the privileges; that is documented, not warned about."""
        self._warned = True
        try:
            caps = pid_status.read_own_cap_eff(self.procfs)
        except (OSError, ParseError):
            return  # /proc/self of another pid namespace's procfs: nothing to say for sure
        missing = [name for bit, name in ((pid_status.CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"),
                                          (pid_status.CAP_SYS_PTRACE, "CAP_SYS_PTRACE"))
                   if not caps >> bit & 1]
        if not missing:
            return
        log.warning(
            "listening sockets of other users' processes cannot be attributed without privilege; "
            "run as root or grant CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE (systemd: "
            "AmbientCapabilities=CAP_DAC_READ_SEARCH CAP_SYS_PTRACE; docker: --cap-add "
            "DAC_READ_SEARCH --cap-add SYS_PTRACE)",
            extra={"unattributed": unknown, "missing_capabilities": ",".join(missing)})

    def user_name(self, uid: int) -> str:
        """The name of ``uid`` from the password database; the number itself if it has none."""
        name = self._users.get(uid)
        if name is None:
            import pwd  # Unix only: imported where a socket's uid is known, never on Windows

            try:
                name = pwd.getpwuid(uid).pw_name
            except (KeyError, OverflowError):
                name = str(uid)
            self._users[uid] = name
        return name

    # --- the work ----------------------------------------------------------------------------

    def _owners(self, current: Set[int]) -> Dict[int, List[Owner]]:
        stats = self.stats = Stats()
        for ino in list(self._holders):
            if ino not in current:
                del self._holders[ino]
        self._unknown &= current

        alive = self._check_processes({pid for hs in self._holders.values() for pid, _ in hs})
        links = self._links(alive)
        lost: Set[int] = set()
        for ino, holders in list(self._holders.items()):
            link = f"{pid_fd.SOCKET_PREFIX}{ino}]"
            kept = [(pid, fd) for pid, fd in holders if links.get(pid, {}).get(fd) == link]
            stats.verified += len(kept)
            if len(kept) < len(holders):
                # A holder went: look again, so that the answer is what a first look would give
                # (the newest holder now, e.g. the worker that replaced the one that exited).
                del self._holders[ino]
                lost.add(ino)

        wanted = (current - self._holders.keys() - self._unknown) | lost
        if wanted:
            stats.searched = len(wanted)
            self._walk(wanted)
            self._unknown |= wanted - self._holders.keys()

        out: Dict[int, List[Owner]] = {}
        used: Set[int] = set()
        for ino in current:
            owners = []
            for pid, _fd in self._holders.get(ino, ()):
                ident = self._identity(pid)
                if ident is not None:
                    owners.append(Owner(pid, ident))
                    used.add(pid)
            out[ino] = owners
            if not owners:
                stats.unknown += 1
        # Forget processes that hold nothing of interest any more (exited, or closed the socket).
        for pid in list(self._procs):
            if pid not in used:
                del self._procs[pid]
        return out

    def _check_processes(self, pids: Set[int]) -> Set[int]:
        """The cached processes among ``pids`` that still exist: same pid and start time."""
        alive = set()
        for pid in pids:
            cached = self._procs.get(pid)
            try:
                st = pid_stat.read_stat(self.procfs, pid)
            except _VANISHED:
                self._procs.pop(pid, None)
                continue
            if cached is None or cached.starttime != st.starttime:
                self._procs[pid] = _Proc(st.starttime, st.comm, st.ppid)  # new, or pid reused
            elif cached.comm != st.comm:
                cached.comm, cached.identity = st.comm, None  # exec'd: look again
            alive.add(pid)
        return alive

    def _links(self, alive: Set[int]) -> Dict[int, Dict[int, str]]:
        """What each cached holder's fds point to now, one directory open per process."""
        fds: Dict[int, List[int]] = {}
        for holders in self._holders.values():
            for pid, fd in holders:
                if pid in alive:
                    fds.setdefault(pid, []).append(fd)
        out: Dict[int, Dict[int, str]] = {}
        for pid, numbers in fds.items():
            with contextlib.suppress(OSError):  # gone since its stat was read
                out[pid] = pid_fd.read_fd_links(self.procfs, pid, numbers)
        return out

    def _walk(self, wanted: Set[int]) -> None:
        """Read processes' fds, newest first, until every inode in ``wanted`` has a holder."""
        missing = set(wanted)
        seek = wanted | self._unknown  # earlier unknown ones are taken if met on the way
        try:
            pids = pid_stat.list_pids(self.procfs)
        except OSError as e:
            log.warning("cannot list processes", extra={"path": self.procfs, "err": str(e)})
            return
        self._stats = self._read_stats(pids)
        try:
            tables: Dict[int, List[Tuple[int, int]]] = {}

            def closed() -> Set[int]:
                gone = missing - self._still_open(set(missing)) if self._still_open else set()
                self.stats.closed += len(gone)
                return gone

            if len(self._stats) > RECHECK_AFTER:  # a walk over fewer costs no more than asking
                gone = closed()
                missing -= gone
                seek -= gone
                if not missing:
                    return
            for n, (pid, fds) in enumerate(self._tables(newest_first(self._stats.values()),
                                                        tables)):
                if n == RECHECK_AFTER:
                    gone = closed()
                    missing -= gone
                    seek -= gone
                    if not missing:
                        return
                found = [(fd, ino) for fd, ino in fds if ino in seek]
                if not found or not self._remember(pid):
                    continue
                inodes = self._add(pid, found)
                seek -= inodes
                missing -= inodes
                self._unknown -= inodes
                self._ancestors(pid, inodes, tables)
                if not missing:
                    return
        finally:
            self._stats = {}

    def _read_stats(self, pids: List[int]) -> Dict[int, pid_stat.PidStat]:
        """The stat of every listed process that is still there: its start time orders the
        walk, its parent breaks ties. One small read each, against the many readlinks of an fd
        table, so this is a small part of a walk; later scrapes, which do not walk, skip it."""
        out: Dict[int, pid_stat.PidStat] = {}
        for pid in pids:
            try:
                out[pid] = pid_stat.read_stat(self.procfs, pid)
            except OSError:
                continue  # gone since the listing, or not ours to read
            except ParseError as e:
                log.warning("cannot parse a process's stat", extra={"err": str(e)})
        return out

    def _tables(self, pids: List[int], tables: Dict[int, List[Tuple[int, int]]]
                ) -> Iterator[Tuple[int, List[Tuple[int, int]]]]:
        """(pid, socket fds) in the order of ``pids``, read ahead by a few threads.

        Reading fd links is nearly all kernel time (d_path of each link), during which Python
        lets other threads run, so a few readers working ahead of the consumer cut the walk by
        about the number of CPUs. Results are still taken strictly in order, so what is found
        does not depend on timing; at most ``window`` processes are read beyond the one where
        the walk stops.
        """
        workers = min(READ_THREADS, os.cpu_count() or 1)
        if workers <= 1 or len(pids) < 2:
            for pid in pids:
                yield pid, self._fds(pid, tables)
            return
        window = 2 * workers
        pool = ThreadPoolExecutor(workers, thread_name_prefix="fd-walk")
        try:
            ahead: Deque[Tuple[int, Future[Optional[List[Tuple[int, int]]]]]] = deque()
            it = iter(pids)
            for pid in itertools.islice(it, window):
                ahead.append((pid, pool.submit(self._read, pid)))
            while ahead:
                pid, fut = ahead.popleft()
                nxt = next(it, None)
                if nxt is not None:
                    ahead.append((nxt, pool.submit(self._read, nxt)))
                fds = tables.get(pid)  # read already, as an ancestor of a holder
                yield pid, fds if fds is not None else self._count(pid, fut.result(), tables)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _read(self, pid: int) -> Optional[List[Tuple[int, int]]]:
        """One process's socket fds; None if gone or not ours to read. No shared state."""
        try:
            return pid_fd.socket_fds(self.procfs, pid)
        except _VANISHED:
            return None

    def _count(self, pid: int, fds: Optional[List[Tuple[int, int]]],
               tables: Dict[int, List[Tuple[int, int]]]) -> List[Tuple[int, int]]:
        if fds is not None:
            self.stats.walked_processes += 1
        tables[pid] = fds or []
        return tables[pid]

    def _ancestors(self, pid: int, inodes: Set[int], tables: Dict[int, List[Tuple[int, int]]]
                   ) -> None:
        """Add the ancestors of ``pid`` that hold the same sockets, nearest first."""
        for _ in range(64):  # pid namespaces nest at most 32 deep; chains are short
            ppid = self._procs[pid].ppid
            if ppid <= 0:
                return
            shared = [(fd, ino) for fd, ino in self._fds(ppid, tables) if ino in inodes]
            if not shared or not self._remember(ppid):
                return
            inodes = self._add(ppid, shared)
            pid = ppid

    def _fds(self, pid: int, tables: Dict[int, List[Tuple[int, int]]]) -> List[Tuple[int, int]]:
        """The socket fds of ``pid``, read once per walk; [] if gone or not ours to read."""
        fds = tables.get(pid)
        return fds if fds is not None else self._count(pid, self._read(pid), tables)

    def _remember(self, pid: int) -> bool:
        """Cache the process's stat (start time, name, parent); False if it has gone."""
        if pid in self._procs:
            return True  # read in this call already
        st = self._stats.get(pid)  # read for the walk's order a moment ago
        if st is None:
            try:
                st = pid_stat.read_stat(self.procfs, pid)
            except _VANISHED:
                return False
        self._procs[pid] = _Proc(st.starttime, st.comm, st.ppid)
        return True

    def _add(self, pid: int, found: List[Tuple[int, int]]) -> Set[int]:
        for fd, ino in found:
            holders = self._holders.setdefault(ino, [])
            if (pid, fd) not in holders:
                holders.append((pid, fd))
        return {ino for _fd, ino in found}

    def _identity(self, pid: int) -> Optional[Identity]:
        """Name, executable and user of a cached process; None if it vanished meanwhile."""
        proc = self._procs.get(pid)
        if proc is None:
            return None
        if proc.identity is None:
            user = ""
            try:
                user = self.user_name(pid_status.read_status(self.procfs, pid).euid)
            except OSError:
                return None  # gone
            except ParseError as e:
                # The process is there and holds the socket: a status we cannot read costs its
                # user, not its attribution, and is logged rather than taken for an exit.
                log.warning("cannot parse a process's status; its user is left empty",
                            extra={"pid": pid, "err": str(e)})
            try:
                exe = pid_fd.read_exe(self.procfs, pid)
            except OSError:
                exe = ""  # not allowed (another user's process without CAP_SYS_PTRACE), or gone
            proc.identity = Identity(proc.comm, exe, user)
        return proc.identity
