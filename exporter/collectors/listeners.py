"""Collector ``listeners``: who listens where, as ``netstat -tulnp`` / ``ss -tulnp`` show it; how
full each TCP listener's accept queue is; how many connections each listening port has per
state; and, with an expected-listeners file, which listeners nobody expected.

Listeners are TCP sockets in LISTEN and UDP sockets that are bound to a port and not connected
(state TCP_CLOSE, which ``ss`` prints as UNCONN), read from netlink sock_diag, or /proc/net where
netlink is refused, or psutil elsewhere. Their processes come from /proc/<pid>/fd through
:class:`exporter.listeners.owners.OwnerCache`, which, unlike everything else a collector holds, keeps what
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

import functools
import logging
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Set, Tuple

from prometheus_client.core import Metric

from exporter.collectors.api import LINUX, Flag, MetricDoc, SocketBase, register
from exporter.config import Config, ConfigError
from exporter.listeners import expected as expected_file
from exporter.listeners.owners import Identity, Owner, OwnerCache
from exporter.netlink import sockdiag as nl
from exporter.netlink.transport import Channel
from exporter.rows import GaugeRows
from exporter.sockets.snapshot import SOURCES, Snapshot, Wants
from exporter.system import PsutilOwners
from exporter.vocabulary.model import Listener
from exporter.vocabulary.names import FAMILIES, LISTENER_CONNECTION_STATES

log = logging.getLogger(__name__)

PROTOCOLS = ("tcp", "udp")
# The states a connection accepted on a listening port can be in: eight of the eleven that
# netstat_sockets names (see names.LISTENER_CONNECTION_STATES).
TCP_STATES = LISTENER_CONNECTION_STATES
OTHER_PORT = "other"
# The states every listening port gets in netstat_listener_connections, zeros included: those
# the bundled alerts and dashboards read (a SYN flood, load, a CLOSE_WAIT leak, TIME_WAIT held
# by a server that closes first). The other four (fin_wait1, fin_wait2, closing, last_ack)
# appear for a port only while it has connections in them: at 100 listening ports, 400 series
# that are zero on almost every scrape of almost every host.
ZERO_STATES = "syn_recv,established,close_wait,time_wait"

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
    ("family", "address", "port"), note="absent with the psutil source", systems=LINUX)
M_LIMIT = MetricDoc(
    "netstat_listener_accept_queue_limit", "gauge",
    "The accept queue's limit, the backlog given to listen() capped by net.core.somaxconn "
    "(idiag_wqueue of a LISTEN socket, sk_max_ack_backlog; Send-Q in ss -tln). Summed over an "
    "SO_REUSEPORT group.",
    ("family", "address", "port"), note="netlink source only", systems=LINUX)
M_CONN = MetricDoc(
    "netstat_listener_connections", "gauge",
    "TCP sockets whose local port is a listening TCP port, by state, in the states a "
    "connection accepted on a listening port can be in (syn_recv, established, fin_wait1, "
    "fin_wait2, closing, close_wait, last_ack, time_wait; zeros included; from the scrape's "
    "one TCP dump, sock_diag or /proc/net/tcp). A socket bound to that port that connects out "
    "(syn_sent) or only holds it (close) is not counted; once such a connection is "
    "established it is. Ports beyond --collector.listeners.max-ports, lowest numbers first, "
    "are summed under port=\"other\". Every port has the states of "
    "--collector.listeners.zero-states (syn_recv, established, close_wait, time_wait by "
    "default), zeros included; the others only while it has connections in them.",
    ("port", "state"), note="not with --no-collector.listeners.connections")
M_COUNT = MetricDoc(
    "netstat_listener_sockets", "gauge",
    "Listening sockets: TCP in LISTEN, UDP bound and not connected.",
    ("protocol", "family"))
M_UNATTRIBUTED = MetricDoc(
    "netstat_listener_unattributed", "gauge",
    "Listening sockets whose process could not be determined: another user's process without "
    "CAP_SYS_PTRACE or CAP_DAC_READ_SEARCH, a process in another pid namespace, one that "
    "exited, or a socket the kernel holds itself (inode 0).",
    ("protocol",))
M_UNEXPECTED = MetricDoc(
    "netstat_listener_unexpected", "gauge",
    "Listening sockets that match no entry of the expected-listeners file.",
    ("protocol",), note="only with --collector.listeners.expected-file")
M_OMITTED = MetricDoc(
    "netstat_listener_omitted", "gauge",
    "Listeners (distinct protocol, family, address and port) left out of netstat_listener_info "
    "and the accept queue gauges by --collector.listeners.max-listeners. Unexpected listeners "
    "are kept first, then the lowest ports; netstat_listener_sockets, _unattributed and "
    "_unexpected count every listener.",
    ("protocol",))
M_RELOAD_OK = MetricDoc(
    "netstat_listener_expected_file_reload_success", "gauge",
    "1 if the last (re)load of the expected-listeners file succeeded; 0 if the last reload "
    "(SIGHUP) failed and the previous file is still in use.",
    note="only with --collector.listeners.expected-file")
M_RELOAD_TS = MetricDoc(
    "netstat_listener_expected_file_reload_timestamp_seconds", "gauge",
    "When the expected-listeners file in use was loaded, in seconds since the epoch.",
    note="only with --collector.listeners.expected-file")
METRICS = (M_INFO, M_QUEUE, M_LIMIT, M_CONN, M_COUNT, M_UNATTRIBUTED, M_UNEXPECTED, M_OMITTED,
           M_RELOAD_OK, M_RELOAD_TS)


class SourceError(RuntimeError):
    pass


@dataclass(frozen=True)
class ListenersOptions:
    source: str = "auto"
    pid_label: bool = False
    max_ports: int = 100
    max_listeners: int = 500
    connections: bool = True
    zero_states: str = ZERO_STATES
    expected_file: str = ""

    def __post_init__(self) -> None:
        zero_state_numbers(self.zero_states)  # a bad list stops the start


def zero_state_numbers(text: str) -> Tuple[int, ...]:
    """The state numbers of a --collector.listeners.zero-states list, in TCP_STATES' order:
    comma-separated names of TCP_STATES, "all", or empty for none."""
    names = {n.strip() for n in text.split(",") if n.strip()}
    if names == {"all"}:
        return tuple(TCP_STATES)
    unknown = sorted(names - set(TCP_STATES.values()))
    if unknown:
        raise ConfigError(
            f"--collector.listeners.zero-states: {', '.join(map(repr, unknown))} is not a "
            f"state a connection to a listening port can be in; use some of "
            f"{', '.join(TCP_STATES.values())}, or all")
    return tuple(st for st, name in TCP_STATES.items() if name in names)


FLAGS = (
    Flag("source", "Where the listeners collector reads sockets: bpf (connections counted in "
                   "the kernel, listeners through netlink), netlink sock_diag (with accept "
                   "queues), /proc/net (queue length only), or psutil (no queues); auto tries "
                   "them in that order, bpf only for TCP tables of 2,000 sockets or more "
                   "(500 where bound sockets are found through the open files).",
         choices=SOURCES),
    Flag("pid_label", "Add a pid label to netstat_listener_info (the lowest pid per process "
                      "identity); pids change on every restart."),
    Flag("max_ports", "Listening TCP ports named in netstat_listener_connections, lowest first; "
                      "the connections of the others are summed under port=\"other\".", min=1),
    Flag("max_listeners", "Listeners (distinct protocol, family, address and port) given "
                          "netstat_listener_info and accept queue series: unexpected ones "
                          "first, then the lowest ports; the others are counted in "
                          "netstat_listener_omitted.", min=1),
    Flag("connections", "Count connections per listening port (netstat_listener_connections), "
                        "from the TCP socket table that the scrape reads once for every "
                        "collector."),
    Flag("zero_states", "States of netstat_listener_connections that every listening port "
                        "gets, zeros included (comma-separated, or all); a port has the "
                        "other states only while it has connections in them."),
    Flag("expected_file", "YAML or TOML (*.toml) file of expected listeners; every other "
                          "listener is reported as unexpected. Re-read on SIGHUP."),
)


@dataclass
class _Judged:
    """The listeners of a scrape judged: their indexes in output order, each one's holders and
    expected verdict ("true", "false", or "" without a file), and the counts."""

    order: List[int]
    holders: Dict[int, List[Owner]] = field(default_factory=dict)
    verdicts: Dict[int, str] = field(default_factory=dict)
    per_family: Counter[Tuple[str, str]] = field(default_factory=Counter)
    unattributed: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)


def _family(doc: MetricDoc, values: Dict[Tuple[str, ...], int]) -> Metric:
    """``doc``'s family with one sample per label values."""
    family = doc.family()
    for key, value in values.items():
        family.add_metric(key, float(value))
    return family


def _per_protocol(doc: MetricDoc, counts: Counter[str]) -> Metric:
    """``doc``'s family with one sample per protocol, zeros included."""
    family = doc.family()
    for protocol in PROTOCOLS:
        family.add_metric([protocol], float(counts[protocol]))
    return family


def _still_listening(inodes: Set[int], channel: Optional[Channel] = None) -> Set[int]:
    """Which of ``inodes`` are listening sockets still: dumps of listening TCP and unconnected
    UDP sockets only, far cheaper than reading every process's descriptors for a socket whose
    process has exited. On any netlink error, all of them (the caller then keeps looking)."""
    found: Set[int] = set()
    for fam in (socket.AF_INET, socket.AF_INET6):
        for proto, state in ((nl.IPPROTO_TCP, nl.TCP_LISTEN), (nl.IPPROTO_UDP, nl.TCP_CLOSE)):
            try:
                found.update(x.inode for x in nl.list_inet(fam, proto, 1 << state,
                                                           sock=channel))
            except nl.NetlinkError as e:
                if fam == socket.AF_INET6 and e.absent:
                    continue  # IPv6 off
                return inodes
    return inodes & found


@register("listeners", default_enabled=True, metrics=METRICS, options=ListenersOptions, flags=FLAGS)
class ListenersCollector(SocketBase[ListenersOptions]):
    """who listens where (TCP and UDP), accept queues, connections per listening port,
    unexpected listeners"""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.zero_states = zero_state_numbers(self.opts.zero_states)
        self.owners = OwnerCache(config.procfs)  # reads /proc only when asked
        self.psutil_owners = PsutilOwners(self.system.grant)
        self._services: Dict[Tuple[int, str], str] = {}
        # The expected-listeners file: loaded here (a bad file stops the start with a one-line
        # error), re-read by reload() on SIGHUP, which keeps the old rules if the new file is bad.
        self.expected: Optional[expected_file.ExpectedListeners] = None
        self.reload_success = 1.0
        self.reload_time = 0.0
        if self.opts.expected_file:
            self.expected = expected_file.load(self.opts.expected_file)
            self.reload_time = time.time()

    # --- the expected-listeners file ---------------------------------------------------------

    def reload(self) -> None:
        """Re-read the expected-listeners file; keep the previous rules if it is bad."""
        if not self.opts.expected_file:
            return
        try:
            new = expected_file.load(self.opts.expected_file)
        except expected_file.ExpectedFileError as e:
            self.reload_success = 0.0
            log.error("expected-listeners file not reloaded, keeping the previous one",
                      extra={"err": str(e)})
            return
        self.expected, self.reload_success, self.reload_time = new, 1.0, time.time()
        log.info("expected-listeners file reloaded",
                 extra={"file": self.opts.expected_file, "entries": len(new.rules)})

    # --- reading -----------------------------------------------------------------------------

    def socket_wants(self) -> Wants:
        return Wants(listeners=True, connections=self.opts.connections)

    def _listeners(self, snap: Snapshot) -> Tuple[List[Listener], List[str], Counter[Tuple[int, int]], str]:
        """Listeners, the families that have socket tables, connections per (port, state), and
        the source (that of the TCP table)."""
        listeners: List[Listener] = []
        families: List[str] = []
        connections: Counter[Tuple[int, int]] = Counter()
        source = ""
        for proto in PROTOCOLS:
            tables = snap.inet(proto)
            if tables is None:
                continue
            source = source or tables.source
            listeners += tables.listeners
            families += [f for f in tables.families if f not in families]
            connections.update(tables.connections)
        if not families:
            raise SourceError(f"no TCP or UDP socket table ({snap.source}) under {snap.procfs}")
        return listeners, families, connections, source

    def _owners(self, listeners: List[Listener], source: str,
                snap: Snapshot) -> Dict[int, List[Owner]]:
        """Owners per listener, keyed by the listener's position in ``listeners``."""
        if source == "psutil":
            return {i: self.psutil_owners.owners(x.pids) for i, x in enumerate(listeners)}
        still = functools.partial(_still_listening, channel=snap.channel)
        by_inode = self.owners.owners({x.inode for x in listeners if x.inode},
                                      still if source == "netlink" else None)
        return {i: by_inode.get(x.inode, []) if x.inode else []
                for i, x in enumerate(listeners)}

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

    def collect_snapshot(self, snap: Snapshot) -> Iterator[Metric]:
        listeners, families, connections, source = self._listeners(snap)
        rules = self.expected  # one file for the whole scrape, whatever a reload does meanwhile
        judged = self._judge(listeners, self._owners(listeners, source, snap), rules)
        shown, omitted = self._cap(listeners, judged.order, judged.verdicts)
        series, queues, limits = self._series(listeners, judged, shown)
        yield self._info(series)
        if queues:
            yield _family(M_QUEUE, queues)
        if limits:
            yield _family(M_LIMIT, limits)
        if self.opts.connections:
            yield self._connections(listeners, connections)
        listening = M_COUNT.family()
        for protocol in PROTOCOLS:
            for _num, family in FAMILIES:
                if family in families:
                    listening.add_metric([protocol, family],
                                         float(judged.per_family[(protocol, family)]))
        yield listening
        yield _per_protocol(M_UNATTRIBUTED, judged.unattributed)
        yield _per_protocol(M_OMITTED, omitted)
        if rules is not None:
            yield _per_protocol(M_UNEXPECTED, judged.unexpected)
            success = M_RELOAD_OK.family()
            success.add_metric([], self.reload_success)
            yield success
            reloaded = M_RELOAD_TS.family()
            reloaded.add_metric([], self.reload_time)
            yield reloaded

    def _judge(self, listeners: List[Listener], owners: Dict[int, List[Owner]],
               rules: Optional[expected_file.ExpectedListeners]) -> _Judged:
        """Each listener's holders (its owner, by uid only, when no process was found) and
        verdict against the expected-listeners file, in output order, with the counts."""
        judged = _Judged(sorted(range(len(listeners)), key=lambda i: (
            listeners[i].protocol, listeners[i].family, listeners[i].port,
            listeners[i].address)))
        for i in judged.order:
            listener = listeners[i]
            judged.per_family[(listener.protocol, listener.family)] += 1
            held = owners.get(i, [])
            if not held:
                judged.unattributed[listener.protocol] += 1
                user = self.owners.user_name(listener.uid) if listener.uid is not None else ""
                held = [Owner(0, Identity("", "", user))]
            judged.holders[i] = held
            verdict = ""
            if rules is not None:
                ok = any(rules.matches(listener.protocol, listener.address, listener.port,
                                       o.identity.name, o.identity.exe, o.identity.user)
                         for o in held)
                verdict = "true" if ok else "false"
                if not ok:
                    judged.unexpected[listener.protocol] += 1
            judged.verdicts[i] = verdict
        return judged

    def _series(self, listeners: List[Listener], judged: _Judged,
                shown: Set[Tuple[str, str, str, int]]
                ) -> Tuple[Dict[Tuple[str, ...], int], Dict[Tuple[str, ...], int],
                           Dict[Tuple[str, ...], int]]:
        """Of the listeners shown: the info series (labels without pid -> the lowest pid), and
        the accept queue lengths and limits of TCP listeners by (family, address, port), summed
        over an SO_REUSEPORT group."""
        series: Dict[Tuple[str, ...], int] = {}
        queues: Dict[Tuple[str, ...], int] = {}
        limits: Dict[Tuple[str, ...], int] = {}
        for i in judged.order:
            listener = listeners[i]
            if (listener.protocol, listener.family, listener.address, listener.port) not in shown:
                continue
            port = str(listener.port)
            service = self.service(listener.port, listener.protocol)
            for o in judged.holders[i]:
                key = (listener.protocol, listener.family, listener.address, port, service,
                       o.identity.name, o.identity.exe, o.identity.user, judged.verdicts[i])
                prev = series.get(key)
                if prev is None or (o.pid and (not prev or o.pid < prev)):
                    series[key] = o.pid
            if listener.protocol == "tcp" and listener.queue is not None:
                where = (listener.family, listener.address, port)
                queues[where] = queues.get(where, 0) + listener.queue
                if listener.limit is not None:
                    limits[where] = limits.get(where, 0) + listener.limit
        return series, queues, limits

    def _info(self, series: Dict[Tuple[str, ...], int]) -> Metric:
        labels = list(M_INFO.labels) + (["pid"] if self.opts.pid_label else [])
        info = GaugeRows(M_INFO.name, M_INFO.help, labels)
        for key, pid in series.items():
            info.add_metric(key + ((str(pid) if pid else "",) if self.opts.pid_label else ()),
                            1.0)
        return info

    def _cap(self, listeners: List[Listener], order: List[int], verdicts: Dict[int, str]
             ) -> Tuple[Set[Tuple[str, str, str, int]], Counter[str]]:
        """The listeners (protocol, family, address, port) to show, at most max_listeners of
        them: those the expected-listeners file did not expect first, so that the cap never
        hides one while there is room, then the lowest ports (of either protocol); and how many
        were left out per protocol. An SO_REUSEPORT group is one listener."""
        keys: Dict[Tuple[str, str, str, int], bool] = {}  # in order; True: unexpected
        for i in order:
            x = listeners[i]
            k = (x.protocol, x.family, x.address, x.port)
            keys[k] = keys.get(k, False) or verdicts[i] == "false"
        omitted: Counter[str] = Counter()
        if len(keys) <= self.opts.max_listeners:
            return set(keys), omitted
        ranked = sorted(keys, key=lambda k: (not keys[k], k[3], k))  # unexpected, low ports
        for k in ranked[self.opts.max_listeners:]:
            omitted[k[0]] += 1
        return set(ranked[:self.opts.max_listeners]), omitted

    def _connections(self, listeners: List[Listener],
                     connections: Counter[Tuple[int, int]]) -> Metric:
        ports = sorted({x.port for x in listeners if x.protocol == "tcp"})
        named = ports[: self.opts.max_ports]
        overflow = set(ports[self.opts.max_ports:])
        per_port: Dict[int, Counter[int]] = {port: Counter() for port in named}
        other: Counter[int] = Counter()
        for (port, st), n in connections.items():
            if port in overflow:
                other[st] += n
            elif port in per_port:
                per_port[port][st] += n
        rows = [(str(port), counts) for port, counts in per_port.items()]
        if overflow:
            rows.append((OTHER_PORT, other))
        fam = M_CONN.family()
        for text, counts in rows:
            for st, name in TCP_STATES.items():
                n = counts.get(st, 0)
                if n or st in self.zero_states:
                    fam.add_metric((text, name), float(n))
        return fam
