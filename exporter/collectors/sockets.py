"""Collector ``sockets``: every socket of the host's (the exporter's) network namespace counted by
protocol, address family and state, as ``ss -s`` / ``netstat -an`` would count them; queue bytes
of non-listening sockets; and the kernel's /proc/net/sockstat totals.

Sockets come from the scrape's socket snapshot (:mod:`exporter.sockets`), shared with the
listeners and ports collectors: each table is read once per scrape. Sources, in the order
``--collector.sockets.source=auto`` tries them per protocol: for a TCP table of 2,000 sockets or
more (500 where the bound sockets are found through the open files), a BPF program run by the
kernel's socket iterator counting it in the kernel (when it can be loaded: CAP_BPF and
CAP_PERFMON); netlink sock_diag; the /proc/net tables; psutil (other
operating systems: TCP and UDP states only, no queue bytes, no unix sockets). The source used is
reported in ``netstat_sockets_source_info``.

Unix sockets by type and state take a dump of every unix socket, about 0.2 microseconds each:
above ``--collector.sockets.unix-states-max`` of them (by the kernel's own count, which costs
nothing per socket) only that count is reported, by kernel protocol.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Dict, Iterator, Optional

from prometheus_client.core import Metric

from exporter.collectors.api import LINUX, Flag, MetricDoc, SocketBase, register
from exporter.config import Config
from exporter.rows import has_samples
from exporter.sockets.snapshot import SOURCES, Snapshot
from exporter.vocabulary.names import (
    DGRAM_EMITTED,
    DGRAM_STATES,
    PROTOCOLS,
    TCP_EMITTED,
    TCP_STATES,
    UNIX_EMITTED,
    UNIX_TYPES,
    state_name,
)

M_SOCKETS = MetricDoc(
    "netstat_sockets", "gauge",
    "Sockets in this network namespace by protocol, address family and state "
    "(inet_diag_msg.idiag_state over netlink, or the st column of /proc/net/<proto>). "
    "TCP state close includes sockets that are bound but idle (netlink, Linux 6.5+).",
    ("protocol", "family", "state"))
M_UNIX = MetricDoc(
    "netstat_sockets_unix", "gauge",
    "Unix domain sockets by type and state (unix_diag_msg udiag_type and udiag_state, "
    "or /proc/net/unix), as netstat -x shows them.",
    ("type", "state"), note="absent while the namespace holds more unix sockets than "
    "--collector.sockets.unix-states-max (netstat_sockstat_unix_inuse_sockets counts them)",
    systems=LINUX)
M_RXQ = MetricDoc(
    "netstat_sockets_receive_queue_bytes", "gauge",
    "Bytes queued for receiving, summed over non-listening sockets (idiag_rqueue, "
    "UNIX_DIAG_RQLEN, or rx_queue in /proc/net/<proto>). A listener's queue fields are its "
    "accept queue, reported by the listeners collector.",
    ("protocol", "family"), note="absent for unix sockets read from /proc/net/unix", systems=LINUX)
M_TXQ = MetricDoc(
    "netstat_sockets_send_queue_bytes", "gauge",
    "Bytes queued for sending, summed over non-listening sockets (idiag_wqueue, "
    "UNIX_DIAG_RQLEN, or tx_queue in /proc/net/<proto>).",
    ("protocol", "family"), note="absent for unix sockets read from /proc/net/unix", systems=LINUX)
M_SOURCE = MetricDoc(
    "netstat_sockets_source_info", "gauge",
    "Which reader the sockets collector used for each protocol in this scrape "
    "(bpf: TCP counted in the kernel by a socket iterator program; netlink, procfs or "
    "psutil; protocols: unix sockets only counted, by the kernel, above "
    "--collector.sockets.unix-states-max); value 1.",
    ("protocol", "source"))
M_UNIX_INUSE = MetricDoc(
    "netstat_sockstat_unix_inuse_sockets", "gauge",
    "Unix domain sockets in use in this network namespace by the kernel's own count "
    "(/proc/net/protocols, sockets column): type stream (protocol UNIX-STREAM, Linux 5.15+) "
    "and dgram_seqpacket (UNIX), or all (UNIX, older kernels). Read whatever the number of "
    "sockets; netstat_sockets_unix splits them by state up to "
    "--collector.sockets.unix-states-max.",
    ("type",), systems=LINUX)
M_USED = MetricDoc(
    "netstat_sockstat_sockets_used", "gauge",
    "Sockets in use in this network namespace, all protocols (/proc/net/sockstat "
    "'sockets: used').", systems=LINUX)
M_INUSE = MetricDoc(
    "netstat_sockstat_inuse_sockets", "gauge",
    "Sockets in use per protocol in this network namespace (/proc/net/sockstat and "
    "sockstat6 'inuse').",
    ("protocol", "family"), systems=LINUX)
M_ORPHAN = MetricDoc(
    "netstat_sockstat_tcp_orphan_sockets", "gauge",
    "TCP sockets no longer attached to a process, host-wide, all namespaces "
    "(/proc/net/sockstat 'TCP: orphan'); limited by net.ipv4.tcp_max_orphans.", systems=LINUX)
M_TW = MetricDoc(
    "netstat_sockstat_tcp_time_wait_sockets", "gauge",
    "TCP sockets in TIME_WAIT in this network namespace (/proc/net/sockstat 'TCP: tw'); "
    "limited by net.ipv4.tcp_max_tw_buckets.", systems=LINUX)
M_ALLOC = MetricDoc(
    "netstat_sockstat_tcp_allocated_sockets", "gauge",
    "TCP sockets allocated, host-wide, all namespaces (/proc/net/sockstat 'TCP: alloc').", systems=LINUX)
M_MEM = MetricDoc(
    "netstat_sockstat_memory_bytes", "gauge",
    "Memory used by socket buffers, host-wide, all namespaces (/proc/net/sockstat 'mem', "
    "pages times the page size); compare with net.ipv4.tcp_mem.",
    ("protocol",), systems=LINUX)
M_FRAG_Q = MetricDoc(
    "netstat_sockstat_fragment_queues", "gauge",
    "IP reassembly queues in use in this network namespace (/proc/net/sockstat "
    "'FRAG: inuse', sockstat6 'FRAG6: inuse').",
    ("family",), systems=LINUX)
M_FRAG_M = MetricDoc(
    "netstat_sockstat_fragment_memory_bytes", "gauge",
    "Memory used by IP reassembly in this network namespace (/proc/net/sockstat "
    "'FRAG: memory', sockstat6 'FRAG6: memory').",
    ("family",), systems=LINUX)
METRICS = (M_SOCKETS, M_UNIX, M_RXQ, M_TXQ, M_SOURCE, M_UNIX_INUSE, M_USED, M_INUSE, M_ORPHAN,
           M_TW, M_ALLOC, M_MEM, M_FRAG_Q, M_FRAG_M)
log = logging.getLogger(__name__)
# UNIX-STREAM is the stream sockets' protocol since Linux 5.15; UNIX the rest, or all before.
UNIX_PROTOCOL_TYPES = {"UNIX-STREAM": "stream", "UNIX": "dgram_seqpacket"}


@dataclass(frozen=True)
class SocketsOptions:
    source: str = "auto"
    unix_states_max: int = 20000


FLAGS = (
    Flag("source", "Where the sockets collector reads sockets: bpf (TCP counted in the kernel "
                   "by a socket iterator program, the rest through netlink; needs CAP_BPF and "
                   "CAP_PERFMON), netlink sock_diag, /proc/net, or psutil; auto tries them in "
                   "that order, bpf only for TCP tables of 2,000 sockets or more (500 where "
                   "bound sockets are found through the open files).",
         choices=SOURCES),
    Flag("unix_states_max", "Count unix sockets by type and state (netstat_sockets_unix, and "
                            "their queue bytes) while this network namespace holds at most "
                            "this many, by the kernel's own count; that takes a dump of every "
                            "unix socket (about 0.2 us each). Above it, only "
                            "netstat_sockstat_unix_inuse_sockets is reported. 0: always count.",
         min=0),
)


@register("sockets", default_enabled=True, metrics=METRICS, options=SocketsOptions, flags=FLAGS)
class SocketsCollector(SocketBase[SocketsOptions]):
    """socket counts per protocol, family and state; queue bytes; sockstat"""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.page_size = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._unix_skipped = False

    def collect_snapshot(self, snap: Snapshot) -> Iterator[Metric]:
        sockets, rxq, txq = M_SOCKETS.family(), M_RXQ.family(), M_TXQ.family()
        used = {}
        for proto, _number in PROTOCOLS:
            tables = snap.inet(proto)
            if tables is None:
                continue
            if tables.counts:
                used[proto] = tables.source
            emitted = TCP_EMITTED if proto == "tcp" else DGRAM_EMITTED
            for fam, t in tables.counts.items():
                for st in emitted:
                    sockets.add_metric([proto, fam, state_name(proto, st)],
                                       float(t.states.get(st, 0)))
                for st, n in sorted(t.states.items()):
                    if st not in emitted:
                        sockets.add_metric([proto, fam, state_name(proto, st)], float(n))
                if t.rx_queue is not None and t.tx_queue is not None:
                    rxq.add_metric([proto, fam], float(t.rx_queue))
                    txq.add_metric([proto, fam], float(t.tx_queue))

        inuse = snap.unix_inuse()
        unix_m = M_UNIX.family()
        unix = None if self._unix_over_limit(inuse) else snap.unix()
        if unix is None and inuse:
            used["unix"] = "protocols"
        if unix is not None:
            used["unix"] = unix.source
            for typ, states in UNIX_EMITTED.items():
                for st in states:
                    unix_m.add_metric([UNIX_TYPES[typ], DGRAM_STATES[st]],
                                      float(unix.counts.get((typ, st), 0)))
            for (typ, st), n in sorted(unix.counts.items()):
                if st not in UNIX_EMITTED.get(typ, []):
                    unix_m.add_metric([UNIX_TYPES.get(typ, f"type_{typ}"),
                                       DGRAM_STATES.get(st, TCP_STATES.get(st, f"state_{st}"))],
                                      float(n))
            if unix.rx_queue is not None and unix.tx_queue is not None:
                rxq.add_metric(["unix", "unix"], float(unix.rx_queue))
                txq.add_metric(["unix", "unix"], float(unix.tx_queue))

        source = M_SOURCE.family()
        for proto, src in used.items():
            source.add_metric([proto, src], 1.0)
        yield from (sockets, unix_m, rxq, txq, source)
        if inuse:
            yield self._unix_inuse(inuse)
        yield from self._sockstat(snap)

    def _unix_over_limit(self, inuse: Optional[Dict[str, int]]) -> bool:
        """Whether the namespace holds more unix sockets than unix_states_max (never when the
        count is unknown); said once in the log each time it becomes true or false."""
        limit = self.opts.unix_states_max
        total = sum(max(n, 0) for n in inuse.values()) if inuse else None
        over = bool(limit) and total is not None and total > limit
        if over != self._unix_skipped:
            self._unix_skipped = over
            if over:
                log.info("unix sockets are no longer counted by type and state: "
                         "netstat_sockstat_unix_inuse_sockets counts them",
                         extra={"sockets": total, "unix_states_max": limit})
            else:
                log.info("unix sockets are counted by type and state again",
                         extra={"sockets": total, "unix_states_max": limit})
        return over

    @staticmethod
    def _unix_inuse(inuse: Dict[str, int]) -> Metric:
        m = M_UNIX_INUSE.family()
        split = "UNIX-STREAM" in inuse
        for proto, n in sorted(inuse.items()):
            typ = UNIX_PROTOCOL_TYPES.get(proto) if split else "all"
            if typ is not None and n >= 0:
                m.add_metric([typ], float(n))
        return m

    def _sockstat(self, snap: Snapshot) -> Iterator[Metric]:
        v4, v6 = snap.sockstat()
        if v4 is None and v6 is None:
            return
        used, inuse, mem = M_USED.family(), M_INUSE.family(), M_MEM.family()
        tcp = {"orphan": M_ORPHAN.family(), "tw": M_TW.family(), "alloc": M_ALLOC.family()}
        frag_q, frag_m = M_FRAG_Q.family(), M_FRAG_M.family()
        for data, fam, suffix in ((v4, "ipv4", ""), (v6, "ipv6", "6")):
            if data is None:
                continue
            for proto in ("TCP", "UDP", "UDPLITE", "RAW"):
                row = data.get(proto + suffix)
                if row and "inuse" in row:
                    inuse.add_metric([proto.lower(), fam], float(row["inuse"]))
            frag = data.get("FRAG" + suffix)
            if frag:
                if "inuse" in frag:
                    frag_q.add_metric([fam], float(frag["inuse"]))
                if "memory" in frag:
                    frag_m.add_metric([fam], float(frag["memory"]))
        if v4 is not None:
            if "used" in v4.get("sockets", {}):
                used.add_metric([], float(v4["sockets"]["used"]))
            for key, family in tcp.items():
                if key in v4.get("TCP", {}):
                    family.add_metric([], float(v4["TCP"][key]))
            for proto in ("TCP", "UDP"):
                row = v4.get(proto, {})
                if "mem" in row:
                    mem.add_metric([proto.lower()], float(row["mem"] * self.page_size))
        yield from (m for m in (used, inuse, *tcp.values(), mem, frag_q, frag_m) if has_samples(m))
