"""psutil's answers in the seam's vocabulary: the portable half of every system.

psutil (https://github.com/giampaolo/psutil) reads the socket tables, processes and interface
counters of Linux, Windows, macOS and the BSDs through one API; this module turns its results
into :class:`~exporter.system.common.Conn` and :class:`~exporter.system.common.Link`. psutil is
imported on first use, not at import time, so that a Linux exporter that never asks pays
nothing for it.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Callable, Dict, List, Sequence, Tuple

from exporter.listeners.owners import Identity, Owner
from exporter.system.common import Conn, Link
from exporter.vocabulary.names import PSUTIL_STATES, TCP_CLOSE, TCP_ESTABLISHED

log = logging.getLogger(__name__)

_FAMILIES = {int(socket.AF_INET): "ipv4", int(socket.AF_INET6): "ipv6"}

# psutil.net_io_counters field -> /proc/net/dev column. psutil folds Linux's FIFO, frame,
# carrier and collision columns away; Windows's and macOS's counters have no such columns.
_COLUMNS = {
    "bytes_recv": "receive_bytes", "packets_recv": "receive_packets",
    "errin": "receive_errs", "dropin": "receive_drop",
    "bytes_sent": "transmit_bytes", "packets_sent": "transmit_packets",
    "errout": "transmit_errs", "dropout": "transmit_drop",
}


def connections(protocol: str) -> List[Conn]:
    """psutil.net_connections of ``protocol``: one entry per (process, descriptor), as psutil
    gives them; the snapshot merges the entries of one socket. Raises psutil.AccessDenied where
    the system wants a privilege for it (macOS without root)."""
    import psutil

    out: List[Conn] = []
    for c in psutil.net_connections(kind=protocol):
        fam = _FAMILIES.get(int(c.family))
        if fam is None:
            continue
        if protocol == "tcp":
            state = PSUTIL_STATES.get(c.status, TCP_CLOSE)
        else:  # UDP has no state, only whether there is a remote address
            state = TCP_ESTABLISHED if c.raddr else TCP_CLOSE
        any_addr = "::" if fam == "ipv6" else "0.0.0.0"
        local, lport = (c.laddr[0], c.laddr[1]) if c.laddr else (any_addr, 0)
        remote, rport = (c.raddr[0], c.raddr[1]) if c.raddr else (any_addr, 0)
        out.append(Conn(fam, state, local, lport, remote, rport, c.pid))
    return out


def interfaces(wanted: Callable[[str], bool]) -> Dict[str, Link]:
    """net_io_counters(pernic=True) with net_if_stats (up, MTU, speed in Mbit/s; 0 where the
    system does not know it)."""
    import psutil

    counters = psutil.net_io_counters(pernic=True, nowrap=True)
    stats = psutil.net_if_stats()
    out: Dict[str, Link] = {}
    for name, io in counters.items():
        if not wanted(name):
            continue
        values = io._asdict()
        st = stats.get(name)
        out[name] = Link(
            {col: int(values[f]) for f, col in _COLUMNS.items() if f in values},
            up=None if st is None else bool(st.isup),
            mtu=None if st is None or not st.mtu else int(st.mtu),
            speed_bytes=None if st is None or not st.speed else float(st.speed) * 125000.0)
    return out


class Owners:
    """The programs behind psutil's pids (``netstat -b``), their identity cached by (pid,
    creation time), which names one process for good.

    A process the exporter may not read (another user's, without root on macOS; a service's,
    without Administrator on Windows) leaves its sockets unattributed: counted, not named. The
    first time that happens the log says so once, with ``grant`` (what would fix it)."""

    def __init__(self, grant: str) -> None:
        self.grant = grant
        self._ids: Dict[Tuple[int, float], Identity] = {}
        self._lock = threading.Lock()
        self._warned = False

    def owners(self, pids: Sequence[int]) -> List[Owner]:
        import psutil

        out: List[Owner] = []
        denied = 0
        with self._lock:
            for pid in pids:
                try:
                    p = psutil.Process(pid)
                    key = (pid, p.create_time())
                    ident = self._ids.get(key)
                    if ident is None:
                        with p.oneshot():
                            try:
                                exe = p.exe()
                            except psutil.AccessDenied:
                                exe = ""
                            ident = Identity(p.name(), exe, p.username())
                        if len(self._ids) > 65536:
                            self._ids.clear()  # bounded: pids are reused, entries are not
                        self._ids[key] = ident
                except psutil.AccessDenied:
                    denied += 1
                    continue
                except (psutil.Error, OSError):
                    continue  # exited since the table was read
                out.append(Owner(pid, ident))
            if denied and not self._warned:
                self._warned = True
                log.warning("listening sockets of other users' processes cannot be attributed "
                            f"without privilege; {self.grant}", extra={"denied_pids": denied})
        return out
