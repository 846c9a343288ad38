"""Collector ``listeners``: who listens where, as ``netstat -tulnp`` / ``ss -tulnp`` show it; how
full each TCP listener's accept queue is; how many connections each listening port has per
state; and, with an expected-listeners file, which listeners nobody expected.

Listeners are TCP sockets in LISTEN and UDP sockets that are bound to a port and not connected
(state TCP_CLOSE, which ``ss`` prints as UNCONN), read from netlink sock_diag, or /proc/net where
netlink is refused, or psutil elsewhere. Their processes come from /proc/<pid>/fd through
:class:`exporter.owners.OwnerCache`, which, unlike everything else a collector holds, keeps what
it learnt between scrapes: finding the owner of a socket means reading other processes'
descriptors, and doing that on every scrape would cost more than everything else together.

A socket held by several processes (a pre-fork server's workers share the parent's listening
socket; systemd passes its sockets to the services it starts) gives one info series per distinct
(process name, executable, user) among the holders found, so the workers of one program are
one series. Holders are looked for newest process first and the search stops once every
socket has one, so a socket is normally shown with the program that serves it rather than the
supervisor that created it. SO_REUSEPORT groups are separate sockets with the same address and
port: they share info series, and their accept queues are summed.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Set, Tuple

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter import expected as expected_file
from exporter.config import Config
from exporter.netlink import sockdiag as nl
from exporter.owners import Identity, Owner, OwnerCache
from exporter.procfs import net_sockets
from exporter.registry import MetricDoc, register

log = logging.getLogger(__name__)

FAMILIES = [(socket.AF_INET, "ipv4"), (socket.AF_INET6, "ipv6")]
FAMILY_NAMES = dict(FAMILIES)
PROTOCOLS = ("tcp", "udp")
# include/net/tcp_states.h, named as ss names them. Every state but listen is a connection
# state; new_syn_recv is internal (inet_diag reports request sockets as syn_recv).
TCP_STATES: Dict[int, str] = {
    1: "established", 2: "syn_sent", 3: "syn_recv", 4: "fin_wait1", 5: "fin_wait2",
    6: "time_wait", 7: "close", 8: "close_wait", 9: "last_ack", 11: "closing",
    13: "bound_inactive",
}
OTHER_PORT = "other"
_LISTEN_STATES = 1 << nl.TCP_LISTEN
# Connections: every state but listen, in one dump (one pass over the established hash).
_CONNECTED = nl.ALL_STATES & ~_LISTEN_STATES
_PSUTIL_STATES = {name.upper(): num for num, name in TCP_STATES.items()}
_PSUTIL_STATES.update({"SYN_RECV": 3, "NONE": 7})

M_INFO = MetricDoc(
    "netstat_listener_info", "gauge",
    "A listening socket and who holds it; value 1. TCP sockets in LISTEN and UDP sockets bound "
    "and not connected, from netlink sock_diag (or /proc/net); process (the 15-character "
    "command name from /proc/<pid>/stat), executable (/proc/<pid>/exe) and user (the process's "
    "effective user, or the socket's owner when no process was found) of each distinct program "
    "holding it, so the workers of a pre-fork server are one series. service is the port's name "
    "in the services database; expected is the verdict of the expected-listeners file "
    "(empty without one).",
    ("protocol", "family", "address", "port", "service", "process", "executable", "user",
     "expected"),
    note="with --collector.listeners.pid-label also `pid`, the lowest pid of that program")
M_QUEUE = MetricDoc(
    "netstat_listener_accept_queue_length", "gauge",
    "Connections waiting in a TCP listener's accept queue (idiag_rqueue of a LISTEN socket, "
    "sk_ack_backlog; the rx_queue column of /proc/net/tcp; Recv-Q in ss -tln). Summed over "
    "an SO_REUSEPORT group.",
    ("family", "address", "port"), note="absent with the psutil source")
M_LIMIT = MetricDoc(
    "netstat_listener_accept_queue_limit", "gauge",
    "The accept queue's limit, the backlog given to listen() capped by net.core.somaxconn "
    "(idiag_wqueue of a LISTEN socket, sk_max_ack_backlog; Send-Q in ss -tln). Summed over an "
    "SO_REUSEPORT group.",
    ("family", "address", "port"), note="netlink source only")
M_CONN = MetricDoc(
    "netstat_listener_connections", "gauge",
    "TCP sockets whose local port is a listening TCP port, by state (every state but listen, "
    "zeros included; from sock_diag filtered by port in the kernel, or /proc/net/tcp). Ports "
    "beyond --collector.listeners.max-ports, lowest numbers first, are summed under "
    "port=\"other\".",
    ("port", "state"), note="not with --no-collector.listeners.connections")
M_COUNT = MetricDoc(
    "netstat_listeners", "gauge",
    "Listening sockets: TCP in LISTEN, UDP bound and not connected.",
    ("protocol", "family"))
M_UNATTRIBUTED = MetricDoc(
    "netstat_listeners_unattributed", "gauge",
    "Listening sockets whose process could not be determined: another user's process without "
    "CAP_SYS_PTRACE or CAP_DAC_READ_SEARCH, a process in another pid namespace, one that "
    "exited, or a socket the kernel holds itself (inode 0).",
    ("protocol",))
M_UNEXPECTED = MetricDoc(
    "netstat_listeners_unexpected", "gauge",
    "Listening sockets that match no entry of the expected-listeners file.",
    ("protocol",), note="only with --collector.listeners.expected-file")
M_RELOAD_OK = MetricDoc(
    "netstat_listeners_expected_file_reload_success", "gauge",
    "1 if the last (re)load of the expected-listeners file succeeded; 0 if the last reload "
    "(SIGHUP) failed and the previous file is still in use.",
    note="only with --collector.listeners.expected-file")
M_RELOAD_TS = MetricDoc(
    "netstat_listeners_expected_file_reload_timestamp_seconds", "gauge",
    "When the expected-listeners file in use was loaded, in seconds since the epoch.",
    note="only with --collector.listeners.expected-file")
METRICS = (M_INFO, M_QUEUE, M_LIMIT, M_CONN, M_COUNT, M_UNATTRIBUTED, M_UNEXPECTED,
           M_RELOAD_OK, M_RELOAD_TS)


@dataclass
class Listener:
    """One listening socket, whatever the source."""

    protocol: str
    family: str
    address: str
    port: int
    inode: int = 0  # 0: unknown (psutil) or a socket without a file (held by the kernel)
    uid: Optional[int] = None  # the socket's owner
    queue: Optional[int] = None
    limit: Optional[int] = None
    pids: Tuple[int, ...] = ()  # psutil only: the holders it found


@dataclass
class Snapshot:
    listeners: List[Listener] = field(default_factory=list)
    families: Set[str] = field(default_factory=set)
    connections: Counter[Tuple[int, int]] = field(default_factory=Counter)  # (port, state)
    source: str = "netlink"


class SourceError(RuntimeError):
    pass


def _address(addr: str, ifindex: int) -> str:
    """The address as ss prints it, with ``%<device>`` for a socket bound to one."""
    if not ifindex:
        return addr
    try:
        return f"{addr}%{socket.if_indextoname(ifindex)}"
    except OSError:
        return f"{addr}%{ifindex}"


_ADDRESSES: Dict[Tuple[int, bytes, int], str] = {}


def _format(family: int, raw: bytes, ifindex: int) -> str:
    """Raw inet_diag address bytes as text; memoised, listeners share few addresses."""
    key = (family, raw, ifindex)
    text = _ADDRESSES.get(key)
    if text is None:
        if len(_ADDRESSES) > 4096:
            _ADDRESSES.clear()
        ip = socket.inet_ntop(family, raw[:4] if family == socket.AF_INET else raw)
        text = _ADDRESSES[key] = _address(ip, ifindex)
    return text


def read_netlink(connections: bool = True) -> Snapshot:
    snap = Snapshot(source="netlink")
    s = nl._open()
    try:
        for fam_num, fam in FAMILIES:
            try:
                tcp = nl.list_inet_brief(fam_num, nl.IPPROTO_TCP, _LISTEN_STATES, sock=s)
                udp = nl.list_inet_brief(fam_num, nl.IPPROTO_UDP, 1 << nl.TCP_CLOSE, sock=s)
            except nl.NetlinkError as e:
                if e.absent and fam_num == socket.AF_INET6:
                    continue  # IPv6 off
                raise
            snap.families.add(fam)
            add = snap.listeners.append
            for _f, _st, sp, src, ifindex, rq, wq, uid, inode in tcp:
                add(Listener("tcp", fam, _format(fam_num, src, ifindex),
                             (sp & 0xFF) << 8 | sp >> 8, inode, uid, rq, wq))
            for _f, _st, sp, src, ifindex, _rq, _wq, uid, inode in udp:
                if sp:
                    add(Listener("udp", fam, _format(fam_num, src, ifindex),
                                 (sp & 0xFF) << 8 | sp >> 8, inode, uid))
        ports = {x.port for x in snap.listeners if x.protocol == "tcp"}
        if ports and connections:
            snap.connections = nl.count_by_port(socket.AF_UNSPEC, nl.IPPROTO_TCP,
                                                _CONNECTED, ports, sock=s)
    finally:
        s.close()
    return snap


def _still_listening(inodes: Set[int]) -> Set[int]:
    """Which of ``inodes`` are listening sockets still: one dump of listeners only, far cheaper
    than reading every process's descriptors for a socket whose process has exited."""
    try:
        snap = read_netlink(connections=False)
    except nl.NetlinkError:
        return inodes
    return inodes & {x.inode for x in snap.listeners}


def read_procfs(root: str) -> Snapshot:
    snap = Snapshot(source="procfs")
    tcp_rows: List[net_sockets.SocketRow] = []
    for proto in PROTOCOLS:
        for name, fam in ((proto, "ipv4"), (proto + "6", "ipv6")):
            rows = net_sockets.read_socket_rows(root, name)
            if rows is None:
                continue
            snap.families.add(fam)
            for r in rows:
                if proto == "tcp" and r.state == nl.TCP_LISTEN:
                    snap.listeners.append(Listener("tcp", fam, r.local, r.local_port, r.inode,
                                                   r.uid, r.rx_queue))
                elif proto == "tcp":
                    tcp_rows.append(r)
                elif r.state == nl.TCP_CLOSE and r.local_port:
                    snap.listeners.append(Listener("udp", fam, r.local, r.local_port, r.inode,
                                                   r.uid))
    if not snap.families:
        raise SourceError(f"no /proc/net/tcp or udp under {root}")
    ports = {x.port for x in snap.listeners if x.protocol == "tcp"}
    snap.connections.update((r.local_port, r.state) for r in tcp_rows if r.local_port in ports)
    return snap


def read_psutil() -> Snapshot:
    import psutil

    snap = Snapshot(source="psutil", families={"ipv4", "ipv6"})
    seen: Dict[Tuple[str, str, str, int], Listener] = {}
    conns: List[Tuple[int, int]] = []
    for kind in PROTOCOLS:
        for c in psutil.net_connections(kind=kind):
            fam = "ipv6" if c.family == socket.AF_INET6 else "ipv4"
            if not c.laddr:
                continue
            addr, port = c.laddr[0], c.laddr[1]
            listening = c.status == "LISTEN" if kind == "tcp" else not c.raddr and port
            if not listening:
                if kind == "tcp":
                    conns.append((port, _PSUTIL_STATES.get(c.status, nl.TCP_CLOSE)))
                continue
            # psutil gives one row per (process, descriptor): rows of one socket merge here.
            key = (kind, fam, addr, port)
            x = seen.get(key)
            if x is None:
                x = seen[key] = Listener(kind, fam, addr, port)
                snap.listeners.append(x)
            if c.pid is not None and c.pid not in x.pids:
                x.pids += (c.pid,)
    ports = {x.port for x in snap.listeners if x.protocol == "tcp"}
    snap.connections.update(pc for pc in conns if pc[0] in ports)
    return snap


@register("listeners", default_enabled=True,
          description="who listens where (TCP and UDP), accept queues, connections per "
                      "listening port, unexpected listeners",
          metrics=METRICS)
class ListenersCollector:
    def __init__(self, config: Config) -> None:
        self.procfs = config.procfs
        self.source = config.listeners_source
        if self.source == "auto" and not sys.platform.startswith("linux"):
            self.source = "psutil"
        self.pid_label = config.listeners_pid_label
        self.max_ports = config.listeners_max_ports
        self.connections = config.listeners_connections
        self.owners = OwnerCache(config.procfs)
        self._services: Dict[Tuple[int, str], str] = {}
        self._psutil_ids: Dict[Tuple[int, float], Identity] = {}
        self._psutil_lock = threading.Lock()
        # The expected-listeners file: loaded here (a bad file stops the start with a one-line
        # error), re-read by reload() on SIGHUP, which keeps the old rules if the new file is bad.
        self.expected_path = config.listeners_expected_file
        self.expected: Optional[expected_file.ExpectedListeners] = None
        self.reload_success = 1.0
        self.reload_time = 0.0
        if self.expected_path:
            self.expected = expected_file.load(self.expected_path)
            self.reload_time = time.time()

    # --- the expected-listeners file ---------------------------------------------------------

    def reload(self) -> None:
        """Re-read the expected-listeners file; keep the previous rules if it is bad."""
        if not self.expected_path:
            return
        try:
            new = expected_file.load(self.expected_path)
        except expected_file.ExpectedFileError as e:
            self.reload_success = 0.0
            log.error("expected-listeners file not reloaded, keeping the previous one",
                      extra={"err": str(e)})
            return
        self.expected, self.reload_success, self.reload_time = new, 1.0, time.time()
        log.info("expected-listeners file reloaded",
                 extra={"file": self.expected_path, "entries": len(new.rules)})

    # --- reading -----------------------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        if self.source == "psutil":
            return read_psutil()
        if self.source in ("auto", "netlink"):
            try:
                return read_netlink(self.connections)
            except nl.NetlinkError as e:
                if self.source == "netlink" or not e.falls_back:
                    raise
                log.debug("netlink refused, reading /proc/net", extra={"err": str(e)})
        return read_procfs(self.procfs)

    def _owners(self, snap: Snapshot) -> Dict[int, List[Owner]]:
        """Owners per listener, keyed by the listener's position in ``snap.listeners``."""
        if snap.source == "psutil":
            return {i: self._psutil_owners(x.pids) for i, x in enumerate(snap.listeners)}
        by_inode = self.owners.owners({x.inode for x in snap.listeners if x.inode},
                                      _still_listening if snap.source == "netlink" else None)
        return {i: by_inode.get(x.inode, []) if x.inode else []
                for i, x in enumerate(snap.listeners)}

    def _psutil_owners(self, pids: Tuple[int, ...]) -> List[Owner]:
        import psutil

        out = []
        with self._psutil_lock:
            for pid in pids:
                try:
                    p = psutil.Process(pid)
                    key = (pid, p.create_time())
                    ident = self._psutil_ids.get(key)
                    if ident is None:
                        with p.oneshot():
                            try:
                                exe = p.exe()
                            except psutil.AccessDenied:
                                exe = ""
                            ident = Identity(p.name(), exe, p.username())
                        self._psutil_ids[key] = ident
                except (psutil.Error, OSError):
                    continue  # exited or not ours to read
                out.append(Owner(pid, ident))
        return out

    def service(self, port: int, protocol: str) -> str:
        key = (port, protocol)
        name = self._services.get(key)
        if name is None:
            try:
                name = socket.getservbyport(port, protocol)
            except (OSError, OverflowError):
                name = ""
            self._services[key] = name
        return name

    # --- metrics -----------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        owners = self._owners(snap)
        rules = self.expected

        labels = list(M_INFO.labels) + (["pid"] if self.pid_label else [])
        info = GaugeMetricFamily(M_INFO.name, M_INFO.help, labels=labels)
        series: Dict[Tuple[str, ...], int] = {}  # labels (without pid) -> lowest pid
        queue: Dict[Tuple[str, str, str], int] = {}
        limit: Dict[Tuple[str, str, str], int] = {}
        count: Counter[Tuple[str, str]] = Counter()
        unattributed: Counter[str] = Counter()
        unexpected: Counter[str] = Counter()

        order = sorted(range(len(snap.listeners)), key=lambda i: (
            snap.listeners[i].protocol, snap.listeners[i].family, snap.listeners[i].port,
            snap.listeners[i].address))
        for i in order:
            x = snap.listeners[i]
            count[(x.protocol, x.family)] += 1
            held = owners.get(i, [])
            if not held:
                unattributed[x.protocol] += 1
                user = self.owners.user_name(x.uid) if x.uid is not None else ""
                held = [Owner(0, Identity("", "", user))]
            verdict = ""
            if rules is not None:
                ok = any(rules.matches(x.protocol, x.address, x.port, o.identity.name,
                                       o.identity.exe, o.identity.user) for o in held)
                verdict = "true" if ok else "false"
                if not ok:
                    unexpected[x.protocol] += 1
            port = str(x.port)
            svc = self.service(x.port, x.protocol)
            for o in held:
                key: Tuple[str, ...] = (x.protocol, x.family, x.address, port, svc, o.identity.name,
                       o.identity.exe, o.identity.user, verdict)
                prev = series.get(key)
                if prev is None or (o.pid and (not prev or o.pid < prev)):
                    series[key] = o.pid
            if x.protocol == "tcp" and x.queue is not None:
                qk = (x.family, x.address, port)
                queue[qk] = queue.get(qk, 0) + x.queue
                if x.limit is not None:
                    limit[qk] = limit.get(qk, 0) + x.limit

        for key, pid in series.items():
            info.add_metric(list(key) + ([str(pid) if pid else ""] if self.pid_label else []),
                            1.0)
        yield info

        if queue:
            qf = M_QUEUE.family()
            for k, v in queue.items():
                qf.add_metric(list(k), float(v))
            yield qf
        if limit:
            lf = M_LIMIT.family()
            for k, v in limit.items():
                lf.add_metric(list(k), float(v))
            yield lf

        if self.connections:
            yield self._connections(snap)

        cf = M_COUNT.family()
        for proto in PROTOCOLS:
            for _num, fam in FAMILIES:
                if fam in snap.families:
                    cf.add_metric([proto, fam], float(count[(proto, fam)]))
        yield cf
        uf = M_UNATTRIBUTED.family()
        for proto in PROTOCOLS:
            uf.add_metric([proto], float(unattributed[proto]))
        yield uf

        if rules is not None:
            xf = M_UNEXPECTED.family()
            for proto in PROTOCOLS:
                xf.add_metric([proto], float(unexpected[proto]))
            yield xf
            success = M_RELOAD_OK.family()
            success.add_metric([], self.reload_success)
            yield success
            ts = M_RELOAD_TS.family()
            ts.add_metric([], self.reload_time)
            yield ts

    def _connections(self, snap: Snapshot) -> Metric:
        ports = sorted({x.port for x in snap.listeners if x.protocol == "tcp"})
        named = ports[: self.max_ports]
        overflow = set(ports[self.max_ports:])
        fam = M_CONN.family()
        for port in named:
            for st, name in TCP_STATES.items():
                fam.add_metric([str(port), name], float(snap.connections.get((port, st), 0)))
        if overflow:
            other: Counter[int] = Counter()
            for (port, st), n in snap.connections.items():
                if port in overflow:
                    other[st] += n
            for st, name in TCP_STATES.items():
                fam.add_metric([OTHER_PORT, name], float(other.get(st, 0)))
        return fam
