"""Collector ``protocols``: the kernel's protocol counters, what ``netstat -s`` and ``nstat``
show, from /proc/net/snmp, /proc/net/netstat and /proc/net/snmp6.

Every field is one metric named ``netstat_<group>_<field>`` in snake case (``TcpExt
ListenOverflows`` -> ``netstat_tcp_ext_listen_overflows_total``, ``TcpExt DelayedACKs`` ->
``netstat_tcp_ext_delayed_acks_total``; octets are ``_bytes``, milliseconds ``_seconds``), typed
by the table in
:mod:`exporter.collectors.protocols_table`; HELP names the kernel field, so ``nstat`` output and
metrics map both ways. ``--collector.protocols.fields`` (a regex over ``Group_Field``) chooses
the fields; fields a newer kernel adds work through it too. A missing file (IPv6 off) is no
data; a malformed one fails this collector with the file and line in the log.
"""

from __future__ import annotations

import logging
from typing import Dict, Iterator, List, Optional, Tuple

from prometheus_client.core import Metric

from exporter.collectors.protocols_table import TABLE, Field, lookup, pattern_rows
from exporter.config import DEFAULT_PROTOCOLS_FIELDS, Config, compile_regex
from exporter.procfs import snmp, snmp6
from exporter.registry import MetricDoc, register

log = logging.getLogger(__name__)

_DEFAULT = compile_regex("--collector.protocols.fields", DEFAULT_PROTOCOLS_FIELDS)


def _doc(f: Field, note: str = "") -> MetricDoc:
    return MetricDoc(f.name, "gauge" if f.kind == "gauge" else "counter", f.help, note=note)


def _docs() -> Tuple[MetricDoc, ...]:
    assert _DEFAULT is not None
    out: List[MetricDoc] = []
    for f in TABLE.values():
        out.append(_doc(f, "default" if _DEFAULT.match(f.key) else ""))
    out += [_doc(f, "by ICMP type, with --collector.protocols.fields") for f in pattern_rows()]
    return tuple(out)


METRICS = _docs()


@register("protocols", default_enabled=True,
          description="protocol counters of /proc/net/snmp, netstat and snmp6 (netstat -s, "
                      "nstat), typed; the default set is marked 'default', "
                      "--collector.protocols.fields (regex over Group_Field) chooses others",
          metrics=METRICS)
class ProtocolsCollector:
    def __init__(self, config: Config) -> None:
        self.procfs = config.procfs
        self.fields = compile_regex("--collector.protocols.fields", config.protocols_fields)
        # Selection and metric declaration per (group, field), computed once: the set of
        # fields is bounded by what the kernel prints.
        self._cache: Dict[Tuple[str, str], Optional[MetricDoc]] = {}
        self._scale: Dict[Tuple[str, str], float] = {}

    def _selected(self, group: str, field: str) -> Optional[MetricDoc]:
        key = (group, field)
        if key not in self._cache:
            f = lookup(group, field)
            ok = self.fields is None or self.fields.match(f.key) is not None
            self._cache[key] = _doc(f) if ok else None
            self._scale[key] = f.scale
        return self._cache[key]

    def collect(self) -> Iterator[Metric]:
        sources = (snmp.read_snmp(self.procfs), snmp.read_netstat(self.procfs),
                   snmp6.read_snmp6(self.procfs))
        seen = set()
        out: List[Metric] = []
        for groups in sources:
            if groups is None:
                continue  # IPv6 off, or not Linux: no data
            for group, fields in groups.items():
                if not group:
                    continue  # an snmp6 name of a group not known here
                for field, value in fields.items():
                    doc = self._selected(group, field)
                    if doc is None:
                        continue
                    if doc.name in seen:
                        log.debug("protocol field maps to a name already exported",
                                  extra={"group": group, "field": field, "metric": doc.name})
                        continue
                    seen.add(doc.name)
                    fam = doc.family()
                    fam.add_metric([], value * self._scale[(group, field)])
                    out.append(fam)
        yield from out
