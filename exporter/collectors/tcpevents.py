"""Collector ``tcpevents`` (off by default): ``netstat -s`` per service. Every TCP state
transition host-wide, and per service port the retransmits, resets sent and received, failed
connects, peers closing first and connections established, counted exactly in the kernel by a
small BPF program on the classic tracepoints (:mod:`exporter.bpf.tcpevents`), with nothing to
compile and nothing pinned.

A port is the local port when it is a listening port here (the scrape's socket snapshot tells
the program which ports listen, and it also sees sockets enter LISTEN between scrapes), side
``local``, so ``port`` joins ``netstat_listener_info``; otherwise the remote port, side
``remote`` (this host as a client). Ephemeral ports never become labels. The host view is
the whole host: tracepoints fire in every network namespace, so a pod's events count too, on
its port.

Needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN), and tracefs (mounted at
/sys/kernel/tracing if it is not, which needs CAP_SYS_ADMIN) readable (root, or
CAP_DAC_READ_SEARCH). Without them the collector fails every scrape with one line saying
what is missing, tries again at the next scrape, and the other collectors are untouched. The
programs are loaded when the exporter starts, so the counters count from then.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from itertools import compress, repeat
from typing import Dict, Iterator, List, Optional, Tuple

from prometheus_client.core import Metric
from prometheus_client.samples import Sample

from exporter.bpf import tcpevents as bpf
from exporter.collectors.api import Flag, MetricDoc, SocketBase, register
from exporter.config import Config, ConfigError
from exporter.sockets.snapshot import Snapshot, Wants
from exporter.vocabulary.names import TCP_STATES

log = logging.getLogger(__name__)

UNKNOWN_PORT = "ephemeral"

M_TRANSITIONS = MetricDoc(
    "netstat_tcpevents_transitions_total", "counter",
    "TCP state transitions host-wide, every network namespace, since the exporter started "
    "(tracepoint sock:inet_sock_set_state, TCP only). A socket entering TIME_WAIT shows as "
    "fin_wait2 or closing to close (a time-wait socket replaces it); connections accepted "
    "show as listen to syn_recv. The common transitions are always present, others once seen.",
    ("from", "to"))
M_PORT = MetricDoc(
    "netstat_tcpevents_port_events_total", "counter",
    "TCP events per service port since the exporter started, host-wide: event is retransmit "
    "(tcp:tcp_retransmit_skb, successful ones, and tcp:tcp_retransmit_synack), reset_sent "
    "(tcp:tcp_send_reset), reset_received (tcp:tcp_receive_reset), connect_failed (syn_sent "
    "to close), peer_close (established to close_wait: the peer closed first) or established "
    "(a connection reached established); a port's event appears with its first one. "
    "side=local: port is a listening port of this host (joins netstat_listener_info on "
    "port), or the port a reset answered when no socket had it; "
    "side=remote: the peer's port, this host being the client; side=unknown, port=ephemeral: "
    "both ports ephemeral and neither listening.",
    ("port", "side", "event"))
M_OVERFLOW = MetricDoc(
    "netstat_tcpevents_port_overflow_total", "counter",
    "TCP events not counted per port because the per-port map was full "
    "(--collector.tcpevents.max-ports keys); they are still in the transitions.",
    ("event",))
M_MISSED = MetricDoc(
    "netstat_tcpevents_missed_total", "counter",
    "Tracepoint hits the kernel did not run the programs for, because a tracing BPF program "
    "was already running on that CPU (the same one for inet_sock_set_state's, any for the "
    "classic tracepoints'; the programs' recursion_misses).")
M_PORTS = MetricDoc(
    "netstat_tcpevents_ports", "gauge",
    "Keys (side, port) in the per-port map.")
M_PORTS_LIMIT = MetricDoc(
    "netstat_tcpevents_ports_limit", "gauge",
    "Keys the per-port map holds at most (--collector.tcpevents.max-ports); events of new keys "
    "beyond it are counted in netstat_tcpevents_port_overflow_total.")
METRICS = (M_TRANSITIONS, M_PORT, M_OVERFLOW, M_MISSED, M_PORTS, M_PORTS_LIMIT)

# Transitions the TCP state machine makes, always emitted (zero included) so that rate() sees
# the first one; any other pair appears once it has happened.
COMMON_TRANSITIONS: Tuple[Tuple[int, int], ...] = (
    (7, 2), (7, 10), (10, 7), (10, 3), (2, 1), (2, 7), (3, 1), (3, 7), (3, 4), (1, 4), (1, 8),
    (1, 7), (4, 5), (4, 11), (4, 7), (5, 7), (11, 7), (8, 9), (8, 7), (9, 7),
)


@dataclass(frozen=True)
class TcpEventsOptions:
    max_ports: int = bpf.DEFAULT_MAX_PORTS
    tracefs: str = ""

    def __post_init__(self) -> None:
        if not 16 <= self.max_ports <= 1 << 20:
            raise ConfigError(f"--collector.tcpevents.max-ports {self.max_ports}: between 16 "
                              "and 1048576")


FLAGS = (
    Flag("max_ports", "Keys (side, port) the tcpevents collector counts at most; the events "
                      "of further ports are counted in netstat_tcpevents_port_overflow_total.",
         min=16, max=1 << 20),
    Flag("tracefs", "Where tracefs is mounted; empty: found in /proc/self/mounts, or mounted "
                    "at /sys/kernel/tracing (needs CAP_SYS_ADMIN)."),
)


# Sample's fields after name, labels and value (timestamp, exemplar, and in newer
# prometheus_client native_histogram), all None here: one endless None for each.
_SAMPLE_TAIL_ITERS = [repeat(None)] * (len(Sample._fields) - 3)


def _state(n: int) -> str:
    return TCP_STATES.get(n, f"state_{n}")


def _port_samples(ports: Dict[Tuple[int, int], Tuple[int, ...]]) -> List[Sample]:
    """The samples of netstat_tcpevents_port_events_total, by side, port and event kind.

    Only the events a port has had: a port's series appear with its first event of each kind,
    which keeps the series few. A thousand ports make three thousand samples, and their
    dicts and Sample tuples are most of what the collector costs a scrape, so the loop does
    little else: the keys come sorted from the reader (sorting them again is one pass), only
    the kinds a port has had are visited, and the Sample tuples are made at the end in one
    pass in C (their namedtuple constructor, with its defaulted fields, took a third of the
    loop), the optional fields None."""
    name, kinds, sides, unknown = M_PORT.name, bpf.KINDS, bpf.SIDES, bpf.SIDE_UNKNOWN
    labels: List[Dict[str, str]] = []
    values: List[int] = []
    add_labels, add_value = labels.append, values.append
    for key in sorted(ports):
        side, port = key
        counts = ports[key]
        side_name = sides.get(side, "unknown")
        port_label = UNKNOWN_PORT if side == unknown else str(port)
        for kind, n in compress(zip(kinds, counts), counts):
            add_labels({"port": port_label, "side": side_name, "event": kind})
            add_value(n)
    return list(map(tuple.__new__, repeat(Sample),
                    zip(repeat(name), labels, map(float, values), *_SAMPLE_TAIL_ITERS)))


@register("tcpevents", default_enabled=False,
          metrics=METRICS, options=TcpEventsOptions, flags=FLAGS)
class TcpEventsCollector(SocketBase[TcpEventsOptions]):
    """TCP state transitions host-wide, and retransmits, resets, failed connects and peer closes
    per service port, counted by a BPF program on the kernel's tracepoints (needs CAP_BPF,
    CAP_PERFMON and tracefs)"""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._lock = threading.Lock()
        self.events: Optional[bpf.TcpEvents] = None
        self.error: Optional[str] = None
        self._try_load(self._start_ports())

    def _start_ports(self) -> Optional[bpf.Ports]:
        """The listening ports and the ephemeral range now, so that the programs know them
        before their first event; None if the snapshot fails (the first scrape loads them)."""
        try:
            with self.snapshot() as snap:
                return self._ports(snap)
        except Exception as e:  # noqa: BLE001 - the first scrape tries again
            log.debug("tcpevents: no socket snapshot at start", extra={"err": str(e)})
            return None

    def _try_load(self, ports: Optional[bpf.Ports]) -> Optional[bpf.TcpEvents]:
        """Load and attach the programs, told ``ports`` before they attach: an event classified
        without them would make its ephemeral port a label."""
        with self._lock:
            if self.events is None and ports is not None:
                try:
                    self.events = bpf.TcpEvents(self.opts.max_ports, self.opts.tracefs or None,
                                                ports=ports)
                    self.error = None
                except (bpf.LoadError, OSError) as e:
                    self.error = " ".join(str(e).split())
            return self.events

    def close(self) -> None:
        with self._lock:
            if self.events is not None:
                self.events.close()
                self.events = None

    def socket_wants(self) -> Wants:
        return Wants(listeners=True)

    @staticmethod
    def _ports(snap: Snapshot) -> bpf.Ports:
        tcp = snap.inet("tcp")
        listening = [x.port for x in tcp.listeners if x.protocol == "tcp"] if tcp else []
        rng = snap.ephemeral()
        return listening, (rng.ports if rng is not None else ())

    def collect_snapshot(self, snap: Snapshot) -> Iterator[Metric]:
        ports = self._ports(snap)
        events = self._try_load(ports)
        if events is None:
            raise RuntimeError(self.error)
        events.set_ports(*ports)
        r = events.read()
        yield from self._families(r)

    def _families(self, r: bpf.Reading) -> List[Metric]:
        tr = M_TRANSITIONS.family()
        pairs = list(COMMON_TRANSITIONS) + sorted(k for k in r.transitions
                                                  if k not in COMMON_TRANSITIONS)
        for old, new in pairs:
            M_TRANSITIONS.add(tr, {"from": _state(old), "to": _state(new)},
                              float(r.transitions.get((old, new), 0)))
        pf = M_PORT.family()
        pf.samples = _port_samples(r.ports)
        of = M_OVERFLOW.family()
        for kind, n in zip(bpf.KINDS, r.overflow):
            M_OVERFLOW.add(of, {"event": kind}, float(n))
        missed = M_MISSED.family()
        M_MISSED.add(missed, {}, float(r.missed))
        used = M_PORTS.family()
        M_PORTS.add(used, {}, float(r.map_entries))
        limit = M_PORTS_LIMIT.family()
        M_PORTS_LIMIT.add(limit, {}, float(self.opts.max_ports))
        return [tr, pf, of, missed, used, limit]
