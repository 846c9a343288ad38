"""Collector ``protocols``: the kernel's protocol counters, what ``netstat -s`` and ``nstat``
show, from /proc/net/snmp, /proc/net/netstat and /proc/net/snmp6 (on macOS, from the
net.inet.*.stats sysctls under the same names, :mod:`exporter.darwin.decode`).

Every field is one metric named ``netstat_<group>_<field>`` in snake case (``TcpExt
ListenOverflows`` -> ``netstat_tcp_ext_listen_overflows_total``, ``TcpExt DelayedACKs`` ->
``netstat_tcp_ext_delayed_acks_total``; octets are ``_bytes``, milliseconds ``_seconds``), typed
by the table in
:mod:`exporter.collectors.protocols.table`; HELP names the kernel field, so ``nstat`` output and
metrics map both ways. ``--collector.protocols.fields`` (a regex over ``Group_Field``) chooses
the fields; fields a newer kernel adds work through it too. A missing file (IPv6 off) is no
data; a malformed one fails this collector with the file and line in the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

from prometheus_client.core import Metric

from exporter.collectors.api import SYSTEMS, Base, Flag, MetricDoc, register
from exporter.collectors.protocols.table import TABLE, Field, lookup, pattern_rows
from exporter.config import Config, compile_regex

log = logging.getLogger(__name__)

# The default fields, matched against "Group_Field" kernel names: what node_exporter's netstat
# collector exports by default, plus the counters that explain TIME_WAIT pile-ups, listen-queue
# overflows and memory aborts.
DEFAULT_PROTOCOLS_FIELDS = (
    r"^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)"
    r"|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts|TCPOFOQueue|TW|TWRecycled"
    r"|TWKilled|TCPTimeWaitOverflow|TCPBacklogDrop|TCPAbortOn.*|TCPReqQFull.*"
    r"|TCPMemoryPressures|TCPRcvQDrop)"
    r"|Tcp_(ActiveOpens|PassiveOpens|AttemptFails|EstabResets|CurrEstab|InSegs|OutSegs"
    r"|RetransSegs|OutRsts)"
    r"|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors)"
    # macOS: the BSD counters of the connection failures, resets, listen-queue overflows and
    # retransmission timeouts above, which have no Linux name of the same meaning.
    r"|TcpDarwin_(conndrops|drops|listendrop|rexmttimeo))$"
)
_FLAG = "--collector.protocols.fields"
# The group and field names of each of the three files, in file order.
_Layout = Tuple[Tuple[Tuple[str, Tuple[str, ...]], ...], ...]
# Layouts remembered (they change only when the kernel starts printing a field).
_MAX_LAYOUTS = 8
# One exported field: file index, group, field, its metric, the factor to base units.
_Planned = Tuple[int, str, str, MetricDoc, float]
_DEFAULT = compile_regex(_FLAG, DEFAULT_PROTOCOLS_FIELDS)


@dataclass(frozen=True)
class ProtocolsOptions:
    fields: str = DEFAULT_PROTOCOLS_FIELDS

    def __post_init__(self) -> None:
        compile_regex(_FLAG, self.fields)


FLAGS = (
    Flag("fields", "Regex over Group_Field kernel names (TcpExt_ListenOverflows, as nstat names "
                   "them with an underscore) choosing the protocol counters exported; replaces "
                   "the default set, e.g. '.*' for all."),
)


# Groups of one system's own counters (the reference's columns); every other group is Linux's
# names, which the other systems fill where they count the same thing.
_GROUP_SYSTEMS = {"TcpDarwin": ("darwin",)}


def _doc(f: Field, note: str = "") -> MetricDoc:
    return MetricDoc(f.name, "gauge" if f.kind == "gauge" else "counter", f.help, note=note,
                     systems=_GROUP_SYSTEMS.get(f.group, SYSTEMS))


def _docs() -> Tuple[MetricDoc, ...]:
    assert _DEFAULT is not None
    out: List[MetricDoc] = []
    for f in TABLE.values():
        out.append(_doc(f, "default" if _DEFAULT.match(f.key) else ""))
    out += [_doc(f, "by ICMP type, with --collector.protocols.fields") for f in pattern_rows()]
    return tuple(out)


METRICS = _docs()


@register("protocols", default_enabled=True, metrics=METRICS, options=ProtocolsOptions, flags=FLAGS)
class ProtocolsCollector(Base[ProtocolsOptions]):
    """protocol counters of /proc/net/snmp, netstat and snmp6 (netstat -s, nstat), typed; the
    default set is marked 'default', --collector.protocols.fields (regex over Group_Field)
    chooses others"""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.fields = compile_regex(_FLAG, self.opts.fields)
        # Selection and metric declaration per (group, field), computed once: the set of
        # fields is bounded by what the kernel prints.
        self._cache: Dict[Tuple[str, str], Optional[MetricDoc]] = {}
        self._scale: Dict[Tuple[str, str], float] = {}
        self._plans: Dict[_Layout, List[_Planned]] = {}

    def _selected(self, group: str, field: str) -> Optional[MetricDoc]:
        key = (group, field)
        if key not in self._cache:
            f = lookup(group, field)
            ok = self.fields is None or self.fields.match(f.key) is not None
            self._cache[key] = _doc(f) if ok else None
            self._scale[key] = f.scale
        return self._cache[key]

    def _plan(self, layout: _Layout) -> List[_Planned]:
        """The exported fields of one layout of the three files, in file order, each metric
        name once (the first field that maps to it)."""
        plan: List[_Planned] = []
        seen = set()
        for i, groups in enumerate(layout):
            for group, fields in groups:
                if not group:
                    continue  # an snmp6 name of a group not known here
                for field in fields:
                    doc = self._selected(group, field)
                    if doc is None:
                        continue
                    if doc.name in seen:
                        log.debug("protocol field maps to a name already exported",
                                  extra={"group": group, "field": field, "metric": doc.name})
                        continue
                    seen.add(doc.name)
                    plan.append((i, group, field, doc, self._scale[(group, field)]))
        return plan

    def collect(self) -> Iterator[Metric]:
        sources = self.system.protocol_tables()
        # Which fields the kernel prints does not change between scrapes (unless a module
        # loads, or an ICMP type is first seen): the selection is worked out once per layout.
        layout = tuple(() if groups is None else
                       tuple((group, tuple(fields)) for group, fields in groups.items())
                       for groups in sources)
        plan = self._plans.get(layout)
        if plan is None:
            plan = self._plan(layout)
            if len(self._plans) >= _MAX_LAYOUTS:
                self._plans.clear()
            self._plans[layout] = plan
        out: List[Metric] = []
        for i, group, field, doc, scale in plan:
            fam = doc.family()
            fam.add_metric([], sources[i][group][field] * scale)  # type: ignore[index]
            out.append(fam)
        yield from out
