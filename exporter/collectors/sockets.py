"""Collector ``sockets``: every socket of the host's (the exporter's) network namespace counted by
protocol, address family and state, as ``ss -s`` / ``netstat -an`` would count them; queue bytes
of non-listening sockets; and the kernel's /proc/net/sockstat totals.

Sources, in the order ``--collector.sockets.source=auto`` tries them per protocol: netlink
sock_diag (streamed, flat memory), the /proc/net tables, psutil (other operating systems: TCP and
UDP states only, no queue bytes, no unix sockets). The source used is reported in
``netstat_sockets_source_info``.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections import Counter
from typing import Dict, Iterator, List, Optional, Tuple

from prometheus_client.core import Metric

from exporter.config import Config
from exporter.netlink import sockdiag as nl
from exporter.procfs import net_sockets, sockstat
from exporter.registry import MetricDoc, register

log = logging.getLogger(__name__)

# include/net/tcp_states.h, named as ss names them, in lower snake case.
TCP_STATES: Dict[int, str] = {
    1: "established", 2: "syn_sent", 3: "syn_recv", 4: "fin_wait1", 5: "fin_wait2",
    6: "time_wait", 7: "close", 8: "close_wait", 9: "last_ack", 10: "listen", 11: "closing",
    12: "new_syn_recv", 13: "bound_inactive",
}
# Always emitted, zero included. new_syn_recv is internal: inet_diag reports request sockets as
# syn_recv. bound_inactive (13) is only a request bit: since Linux 6.5 asking for it makes
# inet_diag walk the bind hash too, and the bound-but-idle sockets found there are reported with
# their real state, TCP_CLOSE. So "close" counts sockets that hold a port without listening or
# connecting, which `ss` lists only with -B (iproute2 6.5+) and /proc/net/tcp never shows.
TCP_EMITTED = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
# Datagram and raw sockets only have "connected" (TCP_ESTABLISHED) or not (TCP_CLOSE);
# ss calls these ESTAB and UNCONN.
DGRAM_STATES: Dict[int, str] = {1: "established", 7: "unconnected", 10: "listen"}
DGRAM_EMITTED = [1, 7]
UNIX_TYPES: Dict[int, str] = {1: "stream", 2: "dgram", 5: "seqpacket"}
UNIX_EMITTED: Dict[int, List[int]] = {1: [1, 7, 10], 2: [1, 7], 5: [1, 7, 10]}

FAMILIES = [(socket.AF_INET, "ipv4"), (socket.AF_INET6, "ipv6")]
FAMILY_NAMES: Dict[int, str] = {int(num): name for num, name in FAMILIES}
PROTOCOLS: List[Tuple[str, int]] = [("tcp", nl.IPPROTO_TCP), ("udp", nl.IPPROTO_UDP),
                                    ("udplite", nl.IPPROTO_UDPLITE), ("raw", nl.IPPROTO_RAW)]
PROC_FILES = {("tcp", "ipv4"): "tcp", ("tcp", "ipv6"): "tcp6", ("udp", "ipv4"): "udp",
              ("udp", "ipv6"): "udp6", ("udplite", "ipv4"): "udplite",
              ("udplite", "ipv6"): "udplite6", ("raw", "ipv4"): "raw", ("raw", "ipv6"): "raw6"}

# TCP is dumped in three groups so that each dump is one kind of socket with one message length
# and the reader can take its fast path: listeners (the listening hash only), time-wait and
# request minisockets, and full sockets.
# Request sockets are TCP_NEW_SYN_RECV (12) in the hash and reported as SYN_RECV; the kernel
# adds bit 12 itself when SYN_RECV is asked for (inet_diag_dump_icsk), so bit 12 must not be
# asked for again in another group or each request socket is counted twice.
_LISTEN = 1 << 10
_MINI = (1 << 6) | (1 << 3) | (1 << 12)
TCP_GROUPS = [_LISTEN, _MINI, nl.ALL_STATES & ~(_LISTEN | _MINI)]



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
    ("type", "state"))
M_RXQ = MetricDoc(
    "netstat_sockets_receive_queue_bytes", "gauge",
    "Bytes queued for receiving, summed over non-listening sockets (idiag_rqueue, "
    "UNIX_DIAG_RQLEN, or rx_queue in /proc/net/<proto>). A listener's queue fields are its "
    "accept queue, reported by the listeners collector.",
    ("protocol", "family"), note="absent for unix sockets read from /proc/net/unix")
M_TXQ = MetricDoc(
    "netstat_sockets_send_queue_bytes", "gauge",
    "Bytes queued for sending, summed over non-listening sockets (idiag_wqueue, "
    "UNIX_DIAG_RQLEN, or tx_queue in /proc/net/<proto>).",
    ("protocol", "family"), note="absent for unix sockets read from /proc/net/unix")
M_SOURCE = MetricDoc(
    "netstat_sockets_source_info", "gauge",
    "Which reader the sockets collector used for each protocol in this scrape "
    "(netlink, procfs or psutil); value 1.",
    ("protocol", "source"))
M_USED = MetricDoc(
    "netstat_sockstat_sockets_used", "gauge",
    "Sockets in use in this network namespace, all protocols (/proc/net/sockstat "
    "'sockets: used').")
M_INUSE = MetricDoc(
    "netstat_sockstat_inuse_sockets", "gauge",
    "Sockets in use per protocol in this network namespace (/proc/net/sockstat and "
    "sockstat6 'inuse').",
    ("protocol", "family"))
M_ORPHAN = MetricDoc(
    "netstat_sockstat_tcp_orphan_sockets", "gauge",
    "TCP sockets no longer attached to a process, host-wide, all namespaces "
    "(/proc/net/sockstat 'TCP: orphan'); limited by net.ipv4.tcp_max_orphans.")
M_TW = MetricDoc(
    "netstat_sockstat_tcp_time_wait_sockets", "gauge",
    "TCP sockets in TIME_WAIT in this network namespace (/proc/net/sockstat 'TCP: tw'); "
    "limited by net.ipv4.tcp_max_tw_buckets.")
M_ALLOC = MetricDoc(
    "netstat_sockstat_tcp_allocated_sockets", "gauge",
    "TCP sockets allocated, host-wide, all namespaces (/proc/net/sockstat 'TCP: alloc').")
M_MEM = MetricDoc(
    "netstat_sockstat_memory_bytes", "gauge",
    "Memory used by socket buffers, host-wide, all namespaces (/proc/net/sockstat 'mem', "
    "pages times the page size); compare with net.ipv4.tcp_mem.",
    ("protocol",))
M_FRAG_Q = MetricDoc(
    "netstat_sockstat_fragment_queues", "gauge",
    "IP reassembly queues in use in this network namespace (/proc/net/sockstat "
    "'FRAG: inuse', sockstat6 'FRAG6: inuse').",
    ("family",))
M_FRAG_M = MetricDoc(
    "netstat_sockstat_fragment_memory_bytes", "gauge",
    "Memory used by IP reassembly in this network namespace (/proc/net/sockstat "
    "'FRAG: memory', sockstat6 'FRAG6: memory').",
    ("family",))
METRICS = (M_SOCKETS, M_UNIX, M_RXQ, M_TXQ, M_SOURCE, M_USED, M_INUSE, M_ORPHAN, M_TW,
           M_ALLOC, M_MEM, M_FRAG_Q, M_FRAG_M)


class Table:
    """Counts of one (protocol, family): states, queue bytes (None when the source lacks them)."""

    __slots__ = ("states", "rx", "tx")

    def __init__(self, states: Counter[int], rx: Optional[int], tx: Optional[int]) -> None:
        self.states, self.rx, self.tx = states, rx, tx


def _netlink_inet(proto: str, number: int, family: int) -> Table:
    c = nl.count_inet(family, number)
    return Table(c.states, c.rx_queue, c.tx_queue)


def _netlink_tcp() -> Dict[str, Table]:
    """TCP of both families: one dump per group for both families at once."""
    states: Dict[str, Counter[int]] = {fam: Counter() for _, fam in FAMILIES}
    queues: Dict[str, List[int]] = {fam: [0, 0] for _, fam in FAMILIES}
    s = nl.open_socket()
    try:
        for group in TCP_GROUPS:
            for fam_num, c in nl.count_tcp_families(group, sock=s).items():
                fam = FAMILY_NAMES[fam_num]
                states[fam].update(c.states)
                queues[fam][0] += c.rx_queue
                queues[fam][1] += c.tx_queue
    finally:
        s.close()
    return {fam: Table(states[fam], *queues[fam]) for fam in states}


def _procfs_inet(root: str, proto: str, fam: str) -> Optional[Table]:
    t = net_sockets.read_inet(root, PROC_FILES[(proto, fam)])
    return None if t is None else Table(t.states, t.rx_queue, t.tx_queue)


_PSUTIL_STATUS = {v.upper(): k for k, v in TCP_STATES.items()}


def _psutil_tables() -> Dict[Tuple[str, str], Table]:
    import psutil

    out: Dict[Tuple[str, str], Table] = {}
    for kind, proto in (("tcp", "tcp"), ("udp", "udp")):
        for _, fam in FAMILIES:
            out[(proto, fam)] = Table(Counter(), None, None)
        for c in psutil.net_connections(kind=kind):
            fam = "ipv6" if c.family == socket.AF_INET6 else "ipv4"
            # psutil names TCP states as the kernel does (ESTABLISHED, SYN_SENT, ...); for UDP
            # it has no state, only whether there is a remote address.
            st = _PSUTIL_STATUS.get(c.status, 7) if proto == "tcp" else (1 if c.raddr else 7)
            out[(proto, fam)].states[st] += 1
    return out


@register("sockets", default_enabled=True,
          description="socket counts per protocol, family and state; queue bytes; sockstat",
          metrics=METRICS)
class SocketsCollector:
    def __init__(self, config: Config) -> None:
        self.procfs = config.procfs
        self.source = config.sockets_source
        if self.source == "auto" and not sys.platform.startswith("linux"):
            self.source = "psutil"
        self.page_size = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    # --- reading -----------------------------------------------------------------------------

    def _inet_tables(self) -> Tuple[Dict[Tuple[str, str], Table], Dict[str, str]]:
        """Tables per (protocol, family) and the source used per protocol."""
        if self.source == "psutil":
            t = _psutil_tables()
            return t, {p: "psutil" for p, _ in t}
        tables: Dict[Tuple[str, str], Table] = {}
        used: Dict[str, str] = {}
        for proto, number in PROTOCOLS:
            by_family, src = self._read_protocol(proto, number)
            for fam, table in by_family.items():
                tables[(proto, fam)] = table
            if by_family:
                used[proto] = src
        return tables, used

    def _read_protocol(self, proto: str, number: int) -> Tuple[Dict[str, Table], str]:
        if self.source in ("auto", "netlink"):
            try:
                return self._netlink_protocol(proto, number), "netlink"
            except nl.NetlinkError as e:
                if self.source == "netlink" or not e.falls_back:
                    if e.absent:
                        return {}, "netlink"  # protocol not in this kernel: no data
                    raise
                log.debug("netlink refused, reading /proc/net",
                          extra={"protocol": proto, "err": str(e)})
        out: Dict[str, Table] = {}
        for _, fam in FAMILIES:
            t = _procfs_inet(self.procfs, proto, fam)
            if t is not None:
                out[fam] = t
        return out, "procfs"

    def _netlink_protocol(self, proto: str, number: int) -> Dict[str, Table]:
        if proto == "tcp":
            t = _netlink_tcp()
            if not os.path.exists(os.path.join(self.procfs, "net", "tcp6")):
                t.pop("ipv6", None)  # IPv6 disabled: no data, not zeros
            return t
        out: Dict[str, Table] = {}
        for fam_num, fam in FAMILIES:
            try:
                out[fam] = _netlink_inet(proto, number, fam_num)
            except nl.NetlinkError as e:
                if fam == "ipv6" and out and e.absent:
                    continue  # IPv6 off
                raise
        return out

    def _unix(self) -> Tuple[Optional[Counter[Tuple[int, int]]], Optional[int], Optional[int], str]:
        if self.source in ("auto", "netlink"):
            try:
                counts, rx, tx, _ = nl.count_unix()
                return counts, rx, tx, "netlink"
            except nl.NetlinkError as e:
                if self.source == "netlink" or not e.falls_back:
                    raise
        if self.source == "psutil":
            # psutil cannot tell a unix socket's state (no peer, no listening flag on Linux),
            # so unix counts are left out rather than guessed.
            return None, None, None, "psutil"
        return net_sockets.read_unix(self.procfs), None, None, "procfs"

    # --- metrics -----------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        tables, used = self._inet_tables()
        sockets, rxq, txq = M_SOCKETS.family(), M_RXQ.family(), M_TXQ.family()
        for (proto, fam), t in tables.items():
            names = TCP_STATES if proto == "tcp" else DGRAM_STATES
            emitted = TCP_EMITTED if proto == "tcp" else DGRAM_EMITTED
            for st in emitted:
                sockets.add_metric([proto, fam, names[st]], float(t.states.get(st, 0)))
            for st, n in sorted(t.states.items()):
                if st not in emitted:
                    sockets.add_metric([proto, fam, names.get(st, f"state_{st}")], float(n))
            if t.rx is not None and t.tx is not None:
                rxq.add_metric([proto, fam], float(t.rx))
                txq.add_metric([proto, fam], float(t.tx))

        unix, urx, utx, usrc = self._unix()
        unix_m = M_UNIX.family()
        if unix is not None:
            used["unix"] = usrc
            for typ, states in UNIX_EMITTED.items():
                for st in states:
                    unix_m.add_metric([UNIX_TYPES[typ], DGRAM_STATES[st]],
                                      float(unix.get((typ, st), 0)))
            for (typ, st), n in sorted(unix.items()):
                if st not in UNIX_EMITTED.get(typ, []):
                    unix_m.add_metric([UNIX_TYPES.get(typ, f"type_{typ}"),
                                       DGRAM_STATES.get(st, TCP_STATES.get(st, f"state_{st}"))],
                                      float(n))
            if urx is not None and utx is not None:
                rxq.add_metric(["unix", "unix"], float(urx))
                txq.add_metric(["unix", "unix"], float(utx))

        source = M_SOURCE.family()
        for proto, src in used.items():
            source.add_metric([proto, src], 1.0)
        yield from (sockets, unix_m, rxq, txq, source)
        yield from self._sockstat()

    def _sockstat(self) -> Iterator[Metric]:
        v4 = sockstat.read_sockstat(self.procfs, "sockstat")
        v6 = sockstat.read_sockstat(self.procfs, "sockstat6")
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
        yield from (m for m in (used, inuse, *tcp.values(), mem, frag_q, frag_m) if m.samples)
