"""The socket snapshot of one scrape, and the one place where the source is chosen.

A :class:`Snapshot` reads each socket table at most once, when a collector first asks for it,
and keeps what it decoded until it is closed at the end of the scrape. Sources, in the order
``auto`` tries them for each table: for a TCP table of ITERATE_FROM sockets or more (or
ITERATE_WITH_SCAN_FROM where the bound-socket scan serves) in the
calling thread's own namespace, a BPF program run by the kernel's TCP socket iterator
(:mod:`exporter.bpf.tcpiter`, with the bound-socket scan of :mod:`exporter.bpf.tcpbound`
and one small dump for listeners, or for listeners and bound sockets where the scan does not
serve); netlink
sock_diag; the /proc/net files; psutil (other operating systems: TCP and UDP only, no queues,
no unix sockets).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import struct
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Union, cast

from exporter.bpf import btf, tcpbound, tcpiter
from exporter.bpf import syscalls as bpf_sc
from exporter.netlink import inet as nl_inet
from exporter.netlink import requests as req
from exporter.netlink import unix as nl_unix
from exporter.netlink.transport import Channel, NetlinkError, SocketFactory
from exporter.procfs import net_sockets, sockstat, sysctl
from exporter.procfs.errors import ParseError
from exporter.procfs.sockstat import Sockstat
from exporter.sockets.onepass import InetPass, destination, ephemeral_range
from exporter.system.common import System
from exporter.vocabulary.model import Counts, EphemeralRange, InetTables, PortUse, UnixTables
from exporter.vocabulary.names import (
    FAMILIES,
    FAMILY_NAMES,
    LISTENER_CONNECTION_STATES,
    PROC_FILES,
    PROTOCOL_NUMBERS,
    TCP_BOUND_INACTIVE,
    TCP_CLOSE,
    TCP_LISTEN,
    TCP_TIME_WAIT,
)

log = logging.getLogger(__name__)

SOURCES = ("auto", "bpf", "netlink", "procfs", "psutil")
# TCP sockets (sockstat's inuse of both families and tw) from which "auto" counts the table with
# the socket iterator. Where the bound-socket scan does not serve, the iterator walks the
# established hash once more than a dump does (the dump for the bound-but-idle sockets), about
# 1.5 ms here at any size, and saves about 0.6 us of decoding a socket (bench_snapshot.py: even
# at about 1,500 sockets of the web mix): from ITERATE_FROM. Where the scan serves, there is no
# second walk, and the iterator costs less from a few hundred sockets (web mix, 1,000 sockets:
# 4.1 to 6.3 ms against 6.1 to 8.9; 200: about even): from ITERATE_WITH_SCAN_FROM.
ITERATE_FROM = 2000
ITERATE_WITH_SCAN_FROM = 500
# TIME_WAIT sockets (and as many others) from which TCP is dumped in two parts: see
# Snapshot._tcp_state_sets.
SPLIT_TIME_WAIT = 2000


@dataclass(frozen=True)
class Wants:
    """What the collectors of a scrape need beyond counts, so that one pass produces it all."""

    listeners: bool = False  # listening sockets, decoded
    connections: bool = False  # TCP connections per listening port and state
    ephemeral: bool = False  # ephemeral port use, overall and per destination

    def __or__(self, other: Wants) -> Wants:
        return Wants(self.listeners or other.listeners, self.connections or other.connections,
                     self.ephemeral or other.ephemeral)


_iterator_lock = threading.Lock()
# (the iterator, the bound-socket scan, why the iterator cannot be loaded)
_iterator: Optional[Tuple[Optional[tcpiter.TcpIterator], Optional[tcpbound.BoundScan], str]] = None


def tcp_iterator() -> Optional[tcpiter.TcpIterator]:
    """The process's TCP socket iterator program (:mod:`exporter.bpf.tcpiter`), loaded at the
    first call; None, for the life of the process, when it cannot be (no CAP_BPF and
    CAP_PERFMON, no BTF, a kernel before 5.9; :func:`tcp_iterator_problem` says why): the TCP
    table is then dumped through sock_diag. The bound-socket scan (:func:`bound_scan`) is
    loaded with it, from the same reading of the kernel's BTF."""
    global _iterator
    with _iterator_lock:
        if _iterator is None:
            try:
                types = btf.load()
                it = tcpiter.TcpIterator(types)
            except (bpf_sc.BpfError, btf.BtfError, OSError) as e:
                lacking = bpf_sc.missing_caps(bpf_sc.effective_caps())
                why = f"{e} (needs {lacking})" if lacking else str(e)
                log.debug("TCP sockets are dumped through sock_diag: no BPF socket iterator",
                          extra={"err": why})
                _iterator = (None, None, why)
            else:
                _iterator = (it, _load_bound_scan(types), "")
        return _iterator[0]


def _load_bound_scan(types: btf.Btf) -> Optional[tcpbound.BoundScan]:
    """The bound-socket scan, where it finds what sock_diag would: on a kernel that reports
    bound-but-idle sockets (6.5) and in the initial pid namespace (every task's files)."""
    if not _bound_inactive_dumps() or not tcpbound.initial_pid_namespace():
        return None
    try:
        return tcpbound.BoundScan(types)
    except (bpf_sc.BpfError, btf.BtfError, OSError) as e:
        log.debug("bound TCP sockets are dumped through sock_diag", extra={"err": str(e)})
        return None


def bound_scan() -> Optional[tcpbound.BoundScan]:
    """The process's bound-socket scan (:mod:`exporter.bpf.tcpbound`), or None."""
    tcp_iterator()
    assert _iterator is not None
    return _iterator[1]


def tcp_iterator_problem() -> str:
    """Why the TCP socket iterator cannot be loaded, or "" when it can."""
    tcp_iterator()
    assert _iterator is not None
    return _iterator[2]


@functools.lru_cache(maxsize=1)
def _bound_inactive_dumps() -> bool:
    """Whether sock_diag reports bound-but-idle TCP sockets when asked (Linux 6.5), from the
    running kernel's release (read once: it cannot change)."""
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return m is None or (int(m.group(1)), int(m.group(2))) >= (6, 5)


@functools.lru_cache(maxsize=4)
def _ephemeral(low: int, high: int, reserved: Tuple[Tuple[int, int], ...]) -> EphemeralRange:
    return ephemeral_range(low, high, reserved)


def read_ephemeral_range(procfs: str) -> Optional[EphemeralRange]:
    """net.ipv4.ip_local_port_range minus ip_local_reserved_ports under ``procfs`` (both apply
    to IPv6 too); None when the range file is absent. The set is cached by the sysctl values."""
    rng = sysctl.read_ints(procfs, "net/ipv4/ip_local_port_range")
    if rng is None:
        return None
    if len(rng) != 2:
        raise sysctl.parse_error(procfs, "net/ipv4/ip_local_port_range",
                                 f"expected two ports, got {len(rng)}")
    reserved = sysctl.read_port_ranges(procfs, "net/ipv4/ip_local_reserved_ports")
    return _ephemeral(rng[0], rng[1], tuple(reserved or ()))


class Snapshot:
    """The sockets of one network namespace, read at most once per table.

    ``procfs`` is the /proc root whose ``net/`` and ``sys/net/`` are the namespace's (``/proc``,
    or ``/proc/<pid>`` for another namespace); ``netlink`` is an open NETLINK_SOCK_DIAG socket
    of that namespace (left open) or a factory for one (default: open one in the calling thread's
    namespace, closed by :meth:`close`); ``source`` is one of :data:`SOURCES`; ``wants`` says
    what to decode beyond counts; ``system`` is the :class:`~exporter.system.System` whose
    ``connections`` the psutil source reads (on macOS without root, the system's own table) and
    which says whether there is a /proc/net/sockstat (default: this host's procfs, and
    psutil).
    """

    def __init__(self, procfs: str = "/proc", source: str = "auto", *,
                 netlink: Union[socket.socket, SocketFactory, None] = None,
                 wants: Wants = Wants(), system: Optional[System] = None) -> None:
        if source not in SOURCES:
            raise ValueError(f"unknown socket source {source!r}")
        self.procfs = procfs
        self.source = source
        self.wants = wants
        self.system = system
        self._chan = Channel(netlink)
        # the calling thread's namespace, read through its own /proc: the TCP iterator's
        self._own_namespace = netlink is None and procfs == "/proc"
        self._lock = threading.Lock()
        self._inet: Dict[str, Optional[InetTables]] = {}
        self._failed: Dict[str, Exception] = {}
        self._unix: Optional[Tuple[Optional[UnixTables]]] = None
        # Files read at most once per snapshot (_read_once): key -> (value, what reading raised)
        self._once: Dict[str, Tuple[Any, Optional[Exception]]] = {}

    @property
    def dumps(self) -> int:
        """Netlink dumps made so far."""
        return self._chan.dumps

    @property
    def channel(self) -> Channel:
        """The netlink channel, for a collector's own small dump (counted in :attr:`dumps`)."""
        return self._chan

    def close(self) -> None:
        self._chan.close()

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what collectors ask for -------------------------------------------------------------

    def inet(self, protocol: str) -> Optional[InetTables]:
        """The tables of ``protocol`` (tcp, udp, udplite, raw), both families; None when the
        kernel (or the source) has no such table: no data."""
        with self._lock:
            if protocol in self._failed:
                raise self._failed[protocol]  # failed once: not read again in this snapshot
            if protocol not in self._inet:
                try:
                    self._inet[protocol] = self._read_inet(protocol)
                except Exception as e:
                    self._failed[protocol] = e
                    raise
            return self._inet[protocol]

    def unix(self) -> Optional[UnixTables]:
        """AF_UNIX sockets; None when the source cannot tell (psutil) or /proc/net/unix is
        absent."""
        with self._lock:
            if "unix" in self._failed:
                raise self._failed["unix"]
            if self._unix is None:
                try:
                    self._unix = (self._read_unix(),)
                except Exception as e:
                    self._failed["unix"] = e
                    raise
            return self._unix[0]

    def unix_inuse(self) -> Optional[Dict[str, int]]:
        """Unix sockets in this namespace by the kernel's own in-use counts, without visiting
        any socket: ``{"UNIX-STREAM": n, "UNIX": m}`` from /proc/net/protocols (stream sockets
        have a protocol of their own since Linux 5.15; before, UNIX counts them all). Read once
        per snapshot; None where the file is absent or the system has no procfs; raises what
        reading it raised."""
        with self._lock:
            if self.system is not None and not self.system.has_procfs:
                return None
            return cast(Optional[Dict[str, int]],
                        self._read_once("protocols", self._read_unix_inuse))

    def _read_unix_inuse(self) -> Optional[Dict[str, int]]:
        table = sockstat.read_protocols(self.procfs)
        return None if table is None else {k: v for k, v in table.items() if k.startswith("UNIX")}

    def _read_once(self, key: str, read: Callable[[], Any]) -> Any:
        """``read()`` the first time ``key`` is asked for in this snapshot; after that, what it
        returned, or what it raised (ParseError, OSError) raised again. The caller holds
        ``_lock``."""
        got = self._once.get(key)
        if got is None:
            try:
                got = (read(), None)
            except (ParseError, OSError) as e:
                got = (None, e)
            self._once[key] = got
        value, err = got
        if err is not None:
            raise err
        return value

    def ephemeral(self) -> Optional[EphemeralRange]:
        """The ephemeral port range (read once per snapshot); raises what reading it raised."""
        with self._lock:
            return self._ephemeral_locked()

    def sockstat(self) -> Tuple[Optional[Sockstat], Optional[Sockstat]]:
        """/proc/net/sockstat and sockstat6 (None when absent), read once per snapshot;
        raises what reading them raised."""
        with self._lock:
            return self._sockstat_locked()

    def _sockstat_locked(self) -> Tuple[Optional[Sockstat], Optional[Sockstat]]:
        if self.system is not None and not self.system.has_procfs:
            return None, None  # a system without /proc/net/sockstat: no data
        return cast(Tuple[Optional[Sockstat], Optional[Sockstat]], self._read_once(
            "sockstat", lambda: (sockstat.read_sockstat(self.procfs, "sockstat"),
                                 sockstat.read_sockstat(self.procfs, "sockstat6"))))

    def _inuse(self, protocol: str, fam: str) -> Optional[int]:
        """Sockets of ``protocol`` in this namespace by the kernel's own count (sockstat
        'inuse', sock_prot_inuse_get), None when unknown. Not for TCP: it leaves out TIME_WAIT."""
        try:
            v4, v6 = self._sockstat_locked()
        except (ParseError, OSError):
            return None  # the sockets collector reports it
        table = v4 if fam == "ipv4" else v6
        if table is None:
            return None
        row = table.get(protocol.upper() + ("6" if fam == "ipv6" else ""), {})
        return row.get("inuse")

    def _ephemeral_locked(self) -> Optional[EphemeralRange]:
        return cast(Optional[EphemeralRange],
                    self._read_once("ephemeral", lambda: read_ephemeral_range(self.procfs)))

    # --- choosing the source -----------------------------------------------------------------

    def _pass(self, protocol: str) -> InetPass:
        eph: Optional[EphemeralRange] = None
        if self.wants.ephemeral and protocol in ("tcp", "udp"):
            try:
                eph = self._ephemeral_locked()
            except (ParseError, OSError):
                eph = None  # the ports collector reports it; the others go on
        both = protocol in ("tcp", "udp")
        return InetPass(protocol, listeners=both and self.wants.listeners,
                        connections=protocol == "tcp" and self.wants.connections,
                        ephemeral=eph)

    def _read_inet(self, protocol: str) -> Optional[InetTables]:
        if protocol == "tcp" and self._iterates():
            tables = self._iterate_tcp()
            if tables is not None:
                return tables
        if self.source == "psutil":
            return self._psutil(protocol) if protocol in ("tcp", "udp") else None
        if self.source in ("auto", "bpf", "netlink"):
            try:
                return self._netlink(protocol)
            except NetlinkError as e:
                if self.source in ("bpf", "netlink") or not e.falls_back:
                    if e.absent:
                        return None  # the protocol is not in this kernel: no data
                    raise
                log.debug("netlink refused, reading /proc/net",
                          extra={"protocol": protocol, "err": str(e)})
        return self._procfs(protocol)

    def _read_unix(self) -> Optional[UnixTables]:
        if self.source == "psutil":
            # psutil cannot tell a unix socket's state (no peer, no listening flag on Linux),
            # so unix counts are left out rather than guessed.
            return None
        if self.source in ("auto", "bpf", "netlink"):
            try:
                counts, rx, tx, _ = nl_unix.count_unix(sock=self._chan)
                return UnixTables("netlink", counts, rx, tx)
            except NetlinkError as e:
                if self.source in ("bpf", "netlink") or not e.falls_back:
                    raise
                log.debug("netlink refused, reading /proc/net/unix", extra={"err": str(e)})
        table = net_sockets.read_unix(self.procfs)
        return None if table is None else UnixTables("procfs", table)

    # --- the TCP socket iterator --------------------------------------------------------------

    def _iterates(self) -> bool:
        """Whether TCP is counted with the socket iterator: always for source "bpf", for
        "auto" from ITERATE_FROM sockets on; only in the calling thread's own namespace."""
        if not self._own_namespace or self.source not in ("auto", "bpf"):
            return False
        if self.source == "bpf":
            return True
        size = self._tcp_size()
        return size >= ITERATE_FROM or (size >= ITERATE_WITH_SCAN_FROM
                                        and bound_scan() is not None and self._scan_worth_it())

    def _scan_worth_it(self) -> bool:
        """tcpbound.worth_it for this namespace, once per snapshot."""
        return bool(self._read_once("scan_worth",
                                    lambda: tcpbound.worth_it(self.procfs, self._tcp_size())))

    def _tcp_size(self) -> int:
        """TCP sockets in the namespace by sockstat: inuse of TCP and of TCP6, and tw (both
        families' time-wait sockets); 0 when unknown."""
        try:
            v4, v6 = self._sockstat_locked()
        except (ParseError, OSError):
            return 0
        row4, row6 = (v4 or {}).get("TCP", {}), (v6 or {}).get("TCP6", {})
        return row4.get("inuse", 0) + row4.get("tw", 0) + row6.get("inuse", 0)

    def _scan_bound(self) -> Optional[tcpbound.Bound]:
        """The bound-but-idle TCP sockets found through the host's open files, where that
        costs less than asking sock_diag; None: ask sock_diag."""
        scan = bound_scan()
        if scan is None or not self._scan_worth_it():
            return None
        try:
            return scan.read()
        except (tcpiter.Incomplete, bpf_sc.BpfError, OSError) as e:
            log.debug("bound TCP sockets dumped through sock_diag", extra={"err": str(e)})
            return None

    def _iterate_tcp(self) -> Optional[InetTables]:
        """The TCP table counted in the kernel by the socket iterator program, plus what it
        does not see: sockets bound but neither listening nor connecting (reported as
        "close"), from the bound-socket scan where it serves, and the listeners' details,
        from one small sock_diag dump that takes the bound sockets too where the scan does
        not serve. None when there is no iterator or a run did not fit it: the table is then
        dumped whole."""
        it = tcp_iterator()
        if it is None:
            if self.source == "bpf":
                raise OSError(f"socket source 'bpf': {tcp_iterator_problem()}")
            return None
        rng: Optional[EphemeralRange] = None
        if self.wants.ephemeral:
            try:
                rng = self._ephemeral_locked()
            except (ParseError, OSError):
                rng = None  # the ports collector reports it; the others go on
        try:
            got = it.read(rng.ports if rng is not None else None)
        except (tcpiter.Incomplete, bpf_sc.BpfError) as e:
            log.debug("TCP sockets dumped through sock_diag", extra={"err": str(e)})
            return None
        sink = InetPass("tcp", listeners=self.wants.listeners or self.wants.connections,
                        connections=False, ephemeral=rng)
        bound = self._scan_bound()
        states = 1 << TCP_LISTEN
        if bound is None and _bound_inactive_dumps():
            states |= 1 << TCP_BOUND_INACTIVE
        try:
            intr = nl_inet.dump_records(req.tcp_request_both_families(states), sink,
                                        sock=self._chan, msg_type=req.TCPDIAG_GETSOCK)
        except NetlinkError:
            return None  # the whole dump tells what went wrong
        out = InetTables("tcp", "bpf", interrupted=intr)
        out.listeners = sink.listeners
        families = self._tcp_families()
        for num, fam in FAMILIES:
            if fam not in families:
                continue
            counts = got.states.get(num, Counter())
            idle = (bound.counts[num] if bound is not None
                    else sink.states.get(num, Counter())[TCP_CLOSE])
            if idle:
                counts[TCP_CLOSE] += idle
            rx, tx = got.queues.get(num, (0, 0))
            out.counts[fam] = Counts(counts, rx, tx)
        for (port, state), n in got.connections.items():
            if state in LISTENER_CONNECTION_STATES:
                out.connections[(port, state)] += n
        if rng is not None:
            # the ports of bound-but-idle sockets are in use too (the iterator does not see
            # them; they have no peer, so no destination)
            bits = got.used_bits
            for port in sink.used_ports():
                bits |= 1 << port
            if bound is not None:
                for port in bound.ports:
                    if port in rng.ports:
                        bits |= 1 << port
            out.ports = PortUse(used=bits.bit_count())
            for fam_num, raw, n in got.destinations:
                out.ports.destinations[destination(fam_num, raw)] += n
        return out

    # --- netlink -----------------------------------------------------------------------------

    def _netlink(self, protocol: str) -> InetTables:
        number = PROTOCOL_NUMBERS[protocol]
        sink = self._pass(protocol)
        if protocol == "tcp":
            try:
                intr = False
                for states in self._tcp_state_sets():
                    intr |= nl_inet.dump_records(req.tcp_request_both_families(states), sink,
                                                 sock=self._chan, msg_type=req.TCPDIAG_GETSOCK)
                return sink.result("netlink", self._tcp_families(), interrupted=intr)
            except NetlinkError as e:
                if not e.unsupported_request:
                    raise
                sink = self._pass(protocol)  # a kernel without the older request: per family
        fams, intr = [], False
        for fam_num, fam in FAMILIES:
            if protocol != "tcp" and self._inuse(protocol, fam) == 0:
                # The kernel counts none in this namespace: the table is empty, and walking
                # its hash (every slot, sized by the machine's memory) would find nothing.
                fams.append(fam)
                continue
            try:
                intr |= nl_inet.dump_records(req.inet_request(fam_num, number), sink,
                                             sock=self._chan)
            except NetlinkError as e:
                if fam == "ipv6" and fams and e.absent and not self._has_ipv6():
                    continue  # IPv6 off
                raise
            fams.append(fam)
        return sink.result("netlink", fams, interrupted=intr)

    def _tcp_state_sets(self) -> Tuple[int, ...]:
        """The state masks of the TCP dumps: every state in one dump, or, when the namespace
        holds at least SPLIT_TIME_WAIT sockets in TIME_WAIT and as many others (sockstat "tw"
        and "inuse"), the others first and then TIME_WAIT alone. In one dump the kernel
        interleaves full sockets and time-wait minisockets, whose records differ in length,
        bucket by bucket of the established hash, and every chunk must be cut message by
        message; apart, each dump's records share one length and are read by stride. The
        second dump walks the established hash again (about 12 ms at 100,000 sockets), which
        only a large table repays. The others come first so that the listening ports are known
        before the time-wait sockets on them; a socket that enters TIME_WAIT between the two
        dumps is counted in both, as a socket that moves during any dump may be."""
        try:
            v4, _v6 = self._sockstat_locked()
        except (ParseError, OSError):
            return (req.ALL_STATES,)
        row = (v4 or {}).get("TCP", {})
        if min(row.get("tw", 0), row.get("inuse", 0)) < SPLIT_TIME_WAIT:
            return (req.ALL_STATES,)
        tw = 1 << TCP_TIME_WAIT
        return (req.ALL_STATES & ~tw, tw)

    def _tcp_families(self) -> List[str]:
        """The families of a TCP table read from the kernel whole: IPv6 only where its table
        exists (else IPv6 is off: no data, not zeros)."""
        if os.path.exists(os.path.join(self.procfs, "net", "tcp6")):
            return ["ipv4", "ipv6"]
        return ["ipv4"]

    def _has_ipv6(self) -> bool:
        return os.path.exists(os.path.join(self.procfs, "net", "sockstat6"))

    # --- /proc/net ---------------------------------------------------------------------------

    def _procfs(self, protocol: str) -> Optional[InetTables]:
        sink = self._pass(protocol)
        fams: List[str] = []
        for fam_num, fam in FAMILIES:
            rows = net_sockets.read_socket_rows(self.procfs, PROC_FILES[(protocol, fam)])
            if rows is None:
                continue  # IPv6 or the protocol off: no data
            fams.append(fam)
            for i in range(0, len(rows), 512):
                recs = b"".join(_record(fam_num, r.state, r.local, r.local_port, r.remote,
                                        r.remote_port, r.rx_queue, r.tx_queue, r.uid, r.inode)
                                for r in rows[i:i + 512])
                sink(recs, 0, len(recs), nl_inet.INET_MSG_LEN)
        if not fams:
            return None
        out = sink.result("procfs", fams)
        for x in out.listeners:
            x.limit = None  # a listener's backlog limit is not in /proc/net/tcp
        return out

    # --- psutil ------------------------------------------------------------------------------

    def _psutil(self, protocol: str) -> InetTables:
        # psutil gives one entry per (process, descriptor): the entries of one socket are
        # merged here, their pids kept for the listeners collector.
        pids: Dict[Tuple[str, int, str, int, str, int], List[int]] = defaultdict(list)
        # The socket's owner, where the system gives it without a pid (macOS's pcblist_n).
        uids: Dict[Tuple[str, int, str, int, str, int], int] = {}
        for c in (self.system or _PORTABLE).connections(protocol):
            key = (c.family, c.state, c.local, c.lport, c.remote, c.rport)
            if c.pid is not None:
                pids[key].append(c.pid)
            else:
                pids.setdefault(key, [])
            if c.uid is not None:
                uids.setdefault(key, c.uid)
        sink = self._pass(protocol)
        data = b"".join(_record(_FAMILY_NUMBERS[fam], state, local, lport, remote, rport,
                                0, 0, 0, 0)
                        for (fam, state, local, lport, remote, rport) in pids)
        sink(data, 0, len(data), nl_inet.INET_MSG_LEN)
        out = sink.result("psutil", ("ipv4", "ipv6"), queues=False)
        by_listener: Dict[Tuple[str, str, int], List[int]] = defaultdict(list)
        uid_of: Dict[Tuple[str, str, int], int] = {}
        listening = TCP_LISTEN if protocol == "tcp" else TCP_CLOSE
        for key, p in pids.items():
            fam, state, local, lport, _remote, _rport = key
            if lport:
                by_listener[(fam, local, lport)] += p
                if state == listening and key in uids:
                    uid_of.setdefault((fam, local, lport), uids[key])
        for x in out.listeners:
            where = (x.family, x.address, x.port)
            x.pids = tuple(sorted(set(by_listener.get(where, ()))))
            # The records carry no uid: unknown unless the system said (not root's 0).
            x.uid = uid_of.get(where)
            x.queue = x.limit = None
        return out


# A record as the kernel lays out struct inet_diag_msg (exporter.netlink.inet), for the rows
# of /proc/net and psutil: family, state, sport, dport (network byte order), src, dst,
# ifindex, cookie, expires, rqueue, wqueue, uid, inode.
_RECORD = struct.Struct("<BB2x2s2s16s16sI8xIIIII")
_PACKED: Dict[Tuple[int, str], bytes] = {}


def _packed(family: int, text: str) -> bytes:
    raw = _PACKED.get((family, text))
    if raw is None:
        if len(_PACKED) > 65536:
            _PACKED.clear()
        raw = _PACKED[(family, text)] = socket.inet_pton(family, text).ljust(16, b"\0")
    return raw


def _record(family: int, state: int, local: str, lport: int, remote: str, rport: int,
            rq: int, wq: int, uid: int, inode: int) -> bytes:
    return _RECORD.pack(family, state, lport.to_bytes(2, "big"), rport.to_bytes(2, "big"),
                        _packed(family, local), _packed(family, remote), 0, 0, rq, wq, uid,
                        inode)


_PORTABLE = System()
_FAMILY_NUMBERS = {name: num for num, name in FAMILY_NAMES.items()}
ScrapeKey = Tuple[str, str]


class ScrapeSockets:
    """The snapshots of one scrape, one per (procfs root, source) that its collectors use.

    Built by the scrape with the merged :class:`Wants` of every collector taking part; each
    snapshot is created on first use and closed by :meth:`close`. Nothing is shared with another
    scrape, so concurrent scrapes never see each other's half-read tables.
    """

    def __init__(self, wants: Wants = Wants(),
                 netlink: Optional[Callable[[], socket.socket]] = None) -> None:
        self.wants = wants
        self._netlink = netlink
        self._snaps: Dict[ScrapeKey, Snapshot] = {}

    def get(self, procfs: str, source: str, system: Optional[System] = None) -> Snapshot:
        key = (procfs, source)
        snap = self._snaps.get(key)
        if snap is None:
            snap = self._snaps[key] = Snapshot(procfs, source, netlink=self._netlink,
                                               wants=self.wants, system=system)
        return snap

    @property
    def dumps(self) -> int:
        return sum(s.dumps for s in self._snaps.values())

    @property
    def used(self) -> bool:
        return bool(self._snaps)

    def close(self) -> None:
        for s in self._snaps.values():
            s.close()
