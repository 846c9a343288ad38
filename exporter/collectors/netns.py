"""Collector ``netns``: socket trouble per network namespace, every pod and container on the
node and the host, each namespace once.

Namespaces are found and named by :mod:`exporter.procfs.namespaces` (processes' ns/net
deduplicated, plus pinned nsfs mounts; pod UID from cgroup paths, container id, ``ip netns``
name, host). Each namespace's series carry ``netns`` (that name: the pod UID for a pod) and
``kind``; pod and namespace names come from a join with kube-state-metrics'
``kube_pod_info{uid}`` in the shipped recording rules, not from the exporter (no Kubernetes API
access, no pid or IP labels).

Tier 1, no capability needed: a curated set of the ``netstat -s`` counters and the sockstat
gauges that explain socket trouble, read from /proc/<pid>/net/{snmp,netstat,sockstat,sockstat6},
which show the namespace of <pid> (:mod:`exporter.procfs.namespace_counters`). The
four files are kept open between scrapes and read again from offset 0
(:class:`exporter.procfs.reread.HeldFiles`), which prints them afresh at half the cost of opening
them; like tier 2's sockets they are closed as soon as their namespace is no longer found.
sockstat's ``orphan``, ``alloc`` and ``mem`` are host-wide and left out: summed over pods they
would count the host many times.

Tier 2, ``--collector.netns.sockets``, needs CAP_SYS_ADMIN and CAP_SYS_PTRACE: TCP sockets by
state and listeners with their accept queues, dumped with sock_diag through a socket opened
inside each namespace (:mod:`exporter.netlink.namespace_sockets`) and read through the same
socket snapshot the host's collectors use (:mod:`exporter.sockets.namespace_tcp`: one dump of
both families with the listeners decoded in the same pass). Unlike other collectors
this one keeps state between scrapes, deliberately: the sockets stay open (opening one costs a
thread and a setns) and are closed as soon as their namespace is no longer found, since an
open socket keeps a namespace alive. Every dump walks the kernel's host-wide socket hashes,
whatever the namespace holds, so tier 2 costs in proportion to the host's socket count per
namespace (bench/README.md): hence the bounds.

Bounds: at most ``--collector.netns.max-namespaces`` namespaces (host first, then by lowest pid,
so the same ones every scrape) and ``--collector.netns.time-budget`` seconds per scrape; tier 1
runs for every namespace before tier 2 starts, so a tier 2 that runs out of time leaves the
counters intact. Whatever is left out is counted in ``netstat_netns_skipped{tier,reason}``. A
namespace that cannot be read is counted there every scrape but logged at warn once every
ten minutes while it keeps failing (at debug in between), so one broken pod does not fill the
log.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Hashable, Iterator, List, Optional, Tuple

from prometheus_client.core import Metric
from prometheus_client.samples import Sample

from exporter.collectors.api import Base, Flag, MetricDoc, register
from exporter.collectors.protocols.table import lookup
from exporter.config import Config
from exporter.netlink import namespace_sockets as nlns
from exporter.procfs import namespaces as pns
from exporter.procfs import pid_status
from exporter.procfs.errors import ParseError
from exporter.procfs.namespace_counters import (
    COUNTER_FILES,
    NamespaceCounters,
    parse_counters,
    read_counters,
)
from exporter.procfs.reread import HeldFiles
from exporter.sockets.namespace_tcp import NamespaceTcp, read_namespace_tcp
from exporter.vocabulary.names import TCP_EMITTED, TCP_STATES

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class NetnsOptions:
    sockets: bool = False
    max_namespaces: int = 500
    time_budget: float = 0.5
    max_listeners: int = 20


FLAGS = (
    Flag("sockets", "Also count TCP sockets by state and listeners' accept queues in every "
                    "network namespace (tier 2): needs CAP_SYS_ADMIN and CAP_SYS_PTRACE; one "
                    "sock_diag socket per namespace is kept open. Without it the netns "
                    "collector exports the netstat -s counters (tier 1)."),
    Flag("max_namespaces", "Network namespaces read per scrape at most (host first, then by "
                           "lowest pid); the rest are counted in netstat_netns_skipped.", min=1),
    Flag("time_budget", "Seconds the netns collector may spend per scrape; namespaces not "
                        "reached in time are counted in netstat_netns_skipped.",
         min=0.001, max=60),
    Flag("max_listeners", "Listening TCP ports per namespace whose accept queue is exported "
                          "(lowest first), with --collector.netns.sockets.", min=0),
)

LABELS = ("netns", "kind")
KINDS = ("host", "pod", "container", "named", "anonymous")

# The netstat -s fields that explain socket trouble: connection churn and failures, resets,
# retransmissions, accept-queue overflows, TIME_WAIT turnover and the current connections.
SNMP_FIELDS: Tuple[Tuple[str, str], ...] = (
    ("Tcp", "ActiveOpens"), ("Tcp", "PassiveOpens"), ("Tcp", "AttemptFails"),
    ("Tcp", "EstabResets"), ("Tcp", "OutRsts"), ("Tcp", "OutSegs"), ("Tcp", "RetransSegs"),
    ("Tcp", "CurrEstab"),
)
NETSTAT_FIELDS: Tuple[Tuple[str, str], ...] = (
    ("TcpExt", "ListenOverflows"), ("TcpExt", "ListenDrops"), ("TcpExt", "TW"),
    ("TcpExt", "TCPTimeWaitOverflow"), ("TcpExt", "TCPTimeouts"),
    ("TcpExt", "TCPAbortOnTimeout"), ("TcpExt", "SyncookiesSent"),
)
_SOURCE = {"Tcp": "/proc/<pid>/net/snmp", "TcpExt": "/proc/<pid>/net/netstat"}


def _field_doc(group: str, name: str) -> MetricDoc:
    f = lookup(group, name)
    return MetricDoc("netstat_netns_" + f.name[len("netstat_"):],
                     "gauge" if f.kind == "gauge" else "counter",
                     f"{f.help} Per network namespace ({_SOURCE[group]}).", LABELS)


FIELD_DOCS: Dict[Tuple[str, str], MetricDoc] = {
    k: _field_doc(*k) for k in SNMP_FIELDS + NETSTAT_FIELDS}

M_USED = MetricDoc(
    "netstat_netns_sockstat_sockets_used", "gauge",
    "Sockets in use in the namespace, all protocols (/proc/<pid>/net/sockstat 'sockets: "
    "used').", LABELS)
M_INUSE = MetricDoc(
    "netstat_netns_sockstat_inuse_sockets", "gauge",
    "Sockets in use per protocol in the namespace (/proc/<pid>/net/sockstat and sockstat6 "
    "'inuse').", LABELS + ("protocol", "family"))
M_TW = MetricDoc(
    "netstat_netns_sockstat_tcp_time_wait_sockets", "gauge",
    "TCP time-wait minisockets in the namespace (/proc/<pid>/net/sockstat 'TCP: tw'): the "
    "TIME_WAIT sockets plus the orphaned FIN_WAIT2 ones, which the kernel also keeps as "
    "time-wait minisockets (tcp_time_wait(sk, TCP_FIN_WAIT2, ...) in net/ipv4/tcp.c) and ss "
    "shows as FIN-WAIT-2.", LABELS)
M_INFO = MetricDoc(
    "netstat_netns_info", "gauge",
    "A network namespace read in this scrape and what names it; value 1. kind is host, pod "
    "(pod_uid from the cgroup path of a process in it), container (container_id from the cgroup "
    "path), named (name of its nsfs mount, as ip netns names it) or anonymous; netns is the pod "
    "UID, container id, name, 'host' or inode-<n>.",
    LABELS + ("pod_uid", "container_id", "name"))
M_FOUND = MetricDoc(
    "netstat_netns_namespaces", "gauge",
    "Network namespaces found in this scrape (processes' /proc/<pid>/ns/net deduplicated by "
    "device and inode, plus nsfs mounts in /proc/1/mountinfo), read or skipped, by kind. "
    "Those beyond --collector.netns.max-namespaces are not named, only counted in "
    "netstat_netns_skipped{reason=\"max_namespaces\"}.", ("kind",))
M_SKIPPED = MetricDoc(
    "netstat_netns_skipped", "gauge",
    "Network namespaces left out of this scrape, by tier (1: counters, 2: socket states) and "
    "reason: max_namespaces and time_budget (the bounds), permission (tier 2 without "
    "CAP_SYS_ADMIN and CAP_SYS_PTRACE; tier 1 for a pinned namespace that cannot be matched "
    "to processes without CAP_SYS_PTRACE), no_process (a pinned namespace with no process, "
    "readable only by entering it, with tier 2), vanished (gone while being read), error (see "
    "the log).", ("tier", "reason"))
M_STATES = MetricDoc(
    "netstat_netns_tcp_sockets", "gauge",
    "TCP sockets in the namespace by state, both address families (inet_diag_msg.idiag_state "
    "from a sock_diag socket opened inside the namespace; what ss -ta shows there). State "
    "close includes sockets bound but idle (Linux 6.5+; ss -B lists them).",
    LABELS + ("state",),
    note="with --collector.netns.sockets")
M_LISTENERS = MetricDoc(
    "netstat_netns_tcp_listeners", "gauge",
    "TCP sockets in LISTEN in the namespace (sock_diag).", LABELS,
    note="with --collector.netns.sockets")
M_QUEUE = MetricDoc(
    "netstat_netns_listener_accept_queue_length", "gauge",
    "Connections waiting in the accept queues of a listening TCP port of the namespace "
    "(idiag_rqueue of its LISTEN sockets, summed over addresses and families; Recv-Q in "
    "ss -tln).", LABELS + ("port",),
    note="with --collector.netns.sockets; lowest --collector.netns.max-listeners ports")
M_LIMIT = MetricDoc(
    "netstat_netns_listener_accept_queue_limit", "gauge",
    "The accept queue limits of a listening TCP port of the namespace (idiag_wqueue of its "
    "LISTEN sockets, the listen() backlog capped by net.core.somaxconn, summed like the "
    "length; Send-Q in ss -tln).", LABELS + ("port",),
    note="with --collector.netns.sockets; lowest --collector.netns.max-listeners ports")
M_OPEN = MetricDoc(
    "netstat_netns_sockdiag_sockets", "gauge",
    "sock_diag sockets the exporter holds open, one per namespace read by tier 2; each keeps "
    "its namespace alive and is closed when the namespace is no longer found.",
    note="with --collector.netns.sockets")
METRICS = (tuple(FIELD_DOCS.values())
           + (M_USED, M_INUSE, M_TW, M_INFO, M_FOUND, M_SKIPPED, M_STATES, M_LISTENERS,
              M_QUEUE, M_LIMIT, M_OPEN))

# A namespace that keeps failing is logged at warn this often (debug in between).
REPEAT_WARNING_SECONDS = 600.0

# The values of the tier label: tier 1 reads each namespace's counters, tier 2 its sockets.
COUNTERS_TIER, SOCKETS_TIER = "1", "2"
REASONS = {COUNTERS_TIER: ("max_namespaces", "time_budget", "permission", "no_process",
                           "vanished", "error"),
           SOCKETS_TIER: ("max_namespaces", "time_budget", "permission", "vanished", "error")}


_SNMP_WANTED = frozenset(f for _, f in SNMP_FIELDS)
_NETSTAT_WANTED = frozenset(f for _, f in NETSTAT_FIELDS)


class _Families:
    """The families of one scrape."""

    def __init__(self, read_sockets: bool) -> None:
        self.fields = {k: d.family() for k, d in FIELD_DOCS.items()}
        self.field_list = [(g == "TcpExt", n, FIELD_DOCS[(g, n)].name, fam.samples)
                           for (g, n), fam in self.fields.items()]
        self.used, self.inuse, self.tw = M_USED.family(), M_INUSE.family(), M_TW.family()
        self.info, self.found = M_INFO.family(), M_FOUND.family()
        self.states, self.listeners = M_STATES.family(), M_LISTENERS.family()
        self.queue, self.limit = M_QUEUE.family(), M_LIMIT.family()
        self.skipped: Dict[Tuple[str, str], int] = {
            (tier, reason): 0 for tier, reasons in REASONS.items() for reason in reasons
            if read_sockets or tier == COUNTERS_TIER}

    def families(self, open_sockets: Optional[int] = None) -> List[Metric]:
        """Every family of the scrape, in the order of the exposition; tier 2's when
        ``open_sockets`` (the sock_diag sockets held) is given."""
        skipped = M_SKIPPED.family()
        for (tier, reason), n in self.skipped.items():
            skipped.add_metric([tier, reason], float(n))
        out: List[Metric] = [self.info, self.found, skipped, *self.fields.values(), self.used,
                             self.inuse, self.tw]
        if open_sockets is not None:
            opened = M_OPEN.family()
            opened.add_metric([], float(open_sockets))
            out += [self.states, self.listeners, self.queue, self.limit, opened]
        return out

    def skip(self, tier: str, reason: str, n: int = 1) -> None:
        if (tier, reason) in self.skipped:
            self.skipped[(tier, reason)] += n

    def add_counters(self, labels: List[str], t: NamespaceCounters) -> None:
        # One label dict for every sample of the namespace (MetricDoc.add shares it).
        common = dict(zip(LABELS, labels))
        groups = (t.tcp, t.tcp_ext)
        for which, name, sample_name, samples in self.field_list:
            value = groups[which].get(name)
            if value is not None:
                # MetricDoc.add, inlined: 15 samples a namespace, hundreds of namespaces.
                samples.append(Sample(sample_name, common, float(value), None))
        if t.sockstat is not None:
            if "used" in t.sockstat.get("sockets", {}):
                M_USED.add(self.used, common, float(t.sockstat["sockets"]["used"]))
            if "tw" in t.sockstat.get("TCP", {}):
                M_TW.add(self.tw, common, float(t.sockstat["TCP"]["tw"]))
        for data, family, suffix in ((t.sockstat, "ipv4", ""), (t.sockstat6, "ipv6", "6")):
            for proto in ("TCP", "UDP"):
                row = (data or {}).get(proto + suffix, {})
                if "inuse" in row:
                    M_INUSE.add(self.inuse, {**common, "protocol": proto.lower(),
                                             "family": family}, float(row["inuse"]))

    def add_sockets(self, labels: List[str], t: NamespaceTcp) -> None:
        for st in TCP_EMITTED:
            self.states.add_metric(labels + [TCP_STATES[st]], float(t.states.get(st, 0)))
        self.listeners.add_metric(labels, float(t.listeners))
        for port, (length, limit) in t.ports.items():
            self.queue.add_metric(labels + [str(port)], float(length))
            self.limit.add_metric(labels + [str(port)], float(limit))


@register("netns", default_enabled=False, metrics=METRICS, options=NetnsOptions, flags=FLAGS)
class NetnsCollector(Base[NetnsOptions]):
    """netstat -s counters (and, with --collector.netns.sockets, TCP states and accept queues)
    per network namespace: every pod and container, each namespace once, named by pod UID,
    container id or ip netns name"""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.pool = nlns.SocketPool()
        # Tier 1's files of each namespace, kept open between scrapes (a re-read from offset 0
        # costs half a fresh open's) and closed, like the pool's sockets, when the namespace
        # is no longer found: an open file keeps its namespace alive.
        self.files = HeldFiles(COUNTER_FILES, single_record=True)
        # The names of last scrape's namespaces, by what decided them (their first processes
        # and mounts): a namespace whose processes are the same is named by the same cgroups.
        self._names: Dict[Hashable, pns.Identity] = {}
        # (tier, namespace) -> when its failure was last logged at warn.
        self._failing: Dict[Tuple[str, pns.NsKey], float] = {}
        self._lock = threading.Lock()  # scrapes may run concurrently; the pool is shared
        self._warned = False
        if self.opts.sockets:
            missing = self.missing_capabilities()
            if missing:
                self._warn(f"missing {' and '.join(missing)}")

    def missing_capabilities(self) -> List[str]:
        try:
            caps = pid_status.read_own_cap_eff(self.procfs)
        except (OSError, ParseError):
            return []  # cannot tell: try, and report what the kernel says
        return [name for bit, name in ((pid_status.CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
                                       (pid_status.CAP_SYS_PTRACE, "CAP_SYS_PTRACE"))
                if not caps >> bit & 1]

    def _failed(self, what: str, key: Tuple[str, pns.NsKey], ident: pns.Identity,
                e: BaseException) -> None:
        """Log a namespace's failure: at warn the first time and then once every
        REPEAT_WARNING_SECONDS while it keeps failing (at debug in between); a namespace that
        reads again and fails anew warns at once. Every failure is counted in
        netstat_netns_skipped{reason="error"} whatever the log says."""
        now = time.monotonic()
        last = self._failing.get(key)
        repeat = last is not None and now - last < REPEAT_WARNING_SECONDS
        if not repeat:
            self._failing[key] = now
        log.log(logging.DEBUG if repeat else logging.WARNING, what,
                extra={"collector": "netns", "netns": ident.netns, "err": str(e)})

    def _warn(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("--collector.netns.sockets needs CAP_SYS_ADMIN and CAP_SYS_PTRACE to "
                        "enter other network namespaces; TCP states per namespace are skipped "
                        "(counted in netstat_netns_skipped{tier=\"2\",reason=\"permission\"}), "
                        "the netstat -s counters per namespace are still exported",
                        extra={"collector": "netns", "err": why})

    def close(self) -> None:
        with self._lock:
            self.pool.close()
            self.files.close()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield from self._collect()

    def _collect(self) -> List[Metric]:
        deadline = time.monotonic() + self.opts.time_budget
        found = pns.discover(self.procfs)
        if not found.namespaces:
            raise RuntimeError(f"no network namespace found under {self.procfs}")
        out = _Families(self.opts.sockets)
        chosen = self._choose(found, out)
        self._read_all_counters(chosen, deadline, out)
        # Close the files of namespaces not read any more (they would keep them alive).
        self.files.sweep(ns.key for ns, _ in chosen)
        found_keys = {ns.key for ns in found.namespaces}
        for key in [key for key in self._failing if key[1] not in found_keys]:
            del self._failing[key]
        if not self.opts.sockets:
            return out.families()
        self._read_all_sockets(chosen, pns.own_key(self.procfs), deadline, out)
        # Close the sockets of namespaces no longer found (they would keep them alive).
        self.pool.sweep(found_keys)
        return out.families(open_sockets=len(self.pool))

    def _choose(self, found: pns.Discovery, out: _Families
                ) -> List[Tuple[pns.Namespace, pns.Identity]]:
        """The namespaces within --collector.netns.max-namespaces, named; counts the others
        and every namespace found by kind. Only those within the cap are named: naming reads
        files too."""
        out.skip(COUNTERS_TIER, "permission", found.unmatched_mounts)
        within = found.namespaces[: self.opts.max_namespaces]
        over = len(found.namespaces) - len(within)
        out.skip(COUNTERS_TIER, "max_namespaces", over)
        out.skip(SOCKETS_TIER, "max_namespaces", over)
        idents = pns.unique_labels(self._name_all(within), [ns.key for ns in within])
        kinds = Counter(ident.kind for ident in idents)
        for kind in KINDS:
            out.found.add_metric([kind], float(kinds.get(kind, 0)))
        return list(zip(within, idents))

    # --- tier 1: counters ----------------------------------------------------------------

    def _name_all(self, within: List[pns.Namespace]) -> List[pns.Identity]:
        names: Dict[Hashable, pns.Identity] = {}
        out = []
        for ns in within:
            key = (ns.key, ns.host, tuple(ns.pids[:pns.NAMING_PIDS]), tuple(ns.mounts))
            ident = self._names.get(key)
            if ident is None:
                ident = pns.name_namespace(self.procfs, ns)
            names[key] = ident
            out.append(ident)
        self._names = names
        return out

    def _read_all_counters(self, chosen: List[Tuple[pns.Namespace, pns.Identity]],
                           deadline: float, out: _Families) -> None:
        for i, (ns, ident) in enumerate(chosen):
            if time.monotonic() > deadline:
                out.skip(COUNTERS_TIER, "time_budget", len(chosen) - i)
                return
            try:
                counters = self._read_counters(ns)
            except nlns.EnterError as e:
                out.skip(COUNTERS_TIER, "permission" if e.permission else "vanished")
                continue
            except Exception as e:  # noqa: BLE001 - one namespace's failure is not the scrape's
                self.files.drop(ns.key)
                self._failed("cannot read namespace counters", (COUNTERS_TIER, ns.key), ident, e)
                out.skip(COUNTERS_TIER, "error")
                continue
            self._failing.pop((COUNTERS_TIER, ns.key), None)
            if counters is None:
                self.files.drop(ns.key)
                out.skip(COUNTERS_TIER, "no_process" if not ns.pids else "vanished")
                continue
            M_INFO.add(out.info, {"netns": ident.netns, "kind": ident.kind,
                                  "pod_uid": ident.pod_uid, "container_id": ident.container_id,
                                  "name": ident.name}, 1.0)
            out.add_counters([ident.netns, ident.kind], counters)

    def _read_counters(self, ns: pns.Namespace) -> Optional[NamespaceCounters]:
        for pid in ns.pids[:3]:  # the first may exit while being read
            directory = f"{self.procfs}/{pid}/net"
            try:
                texts = self.files.read(ns.key, directory)
            except OSError:
                if os.path.exists(os.path.join(directory, "snmp")):
                    raise  # a real error of this namespace
                continue  # the process exited while being read
            counters = parse_counters(texts, directory, _SNMP_WANTED, _NETSTAT_WANTED)
            if counters is not None:
                return counters
            self.files.drop(ns.key)
        if ns.pids or not self.opts.sockets:
            return None
        # A pinned namespace with no process: only readable from a thread inside it, through
        # /proc/thread-self/net (/proc/self/net shows the main thread's namespace).
        root = os.path.join(self.procfs, "thread-self")
        return nlns.run_in(self._mount_path(ns),
                           lambda: read_counters(root, _SNMP_WANTED, _NETSTAT_WANTED),
                           (ns.key[1], ns.key[2]))

    def _mount_path(self, ns: pns.Namespace) -> str:
        """A path to a pinned namespace's nsfs mount: through pid 1's root when the procfs
        root is the host's seen from a container, else as mounted here."""
        mount = ns.mounts[0]
        via_init = os.path.join(self.procfs, "1", "root", mount.lstrip("/"))
        try:
            os.stat(via_init)
            return via_init
        except OSError:
            return mount

    # --- tier 2: sockets -----------------------------------------------------------------

    def _read_all_sockets(self, chosen: List[Tuple[pns.Namespace, pns.Identity]],
                   own: Optional[pns.NsKey], deadline: float, out: _Families) -> None:
        for i, (ns, ident) in enumerate(chosen):
            if time.monotonic() > deadline:
                out.skip(SOCKETS_TIER, "time_budget", len(chosen) - i)
                return
            if ns.key[0] != "nsfs":
                self._warn("no ptrace access to /proc/<pid>/ns/net")
                out.skip(SOCKETS_TIER, "permission")
                continue
            try:
                sock = self.pool.get(ns.key, self._ns_path(ns, own), (ns.key[1], ns.key[2]))
                root = (os.path.join(self.procfs, str(ns.pids[0])) if ns.pids
                        else self.procfs)
                tcp = read_namespace_tcp(sock, root, self.opts.max_listeners)
            except nlns.EnterError as e:
                if e.permission:
                    self._warn(str(e))
                out.skip(SOCKETS_TIER, "permission" if e.permission else "vanished")
                continue
            except (OSError, ParseError) as e:
                self.pool.drop(ns.key)  # reopened next scrape
                self._failed("cannot dump namespace sockets", (SOCKETS_TIER, ns.key), ident, e)
                out.skip(SOCKETS_TIER, "error")
                continue
            self._failing.pop((SOCKETS_TIER, ns.key), None)
            out.add_sockets([ident.netns, ident.kind], tcp)

    def _ns_path(self, ns: pns.Namespace, own: Optional[pns.NsKey]) -> Optional[str]:
        if ns.key == own:
            return None  # the exporter's own namespace: no need to enter it
        for pid in ns.pids[:3]:
            path = os.path.join(self.procfs, str(pid), "ns", "net")
            if os.path.exists(path):
                return path
        if ns.mounts:
            return self._mount_path(ns)
        raise nlns.EnterError(2, "namespace has no process or mount left")
