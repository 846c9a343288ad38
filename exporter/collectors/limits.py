"""Collector ``limits``: the kernel limits that socket usage runs into, beside the usage.

Each is a gauge read from /proc/sys (``sysctl -a`` shows the same), named after its sysctl.
A sysctl this kernel lacks, or nf_conntrack's while the module is not loaded, is no data.
"""

from __future__ import annotations

import os
from typing import Iterator, List, Optional, Tuple

from prometheus_client.core import Metric

from exporter.collectors.api import Base, MetricDoc, register
from exporter.config import Config
from exporter.procfs import sysctl


def _doc(name: str, sysctl_name: str, text: str, unit: str = "") -> MetricDoc:
    return MetricDoc(f"netstat_limits_{name}{unit}", "gauge",
                     f"{text} (sysctl {sysctl_name}, /proc/sys/{sysctl_name.replace('.', '/')}).")


# (sysctl path under /proc/sys, metric declaration); one value each.
SINGLE: Tuple[Tuple[str, MetricDoc], ...] = (
    ("net/ipv4/tcp_max_tw_buckets",
     _doc("tcp_max_tw_buckets", "net.ipv4.tcp_max_tw_buckets",
          "Most TIME_WAIT sockets this network namespace keeps; beyond it connections close "
          "without TIME_WAIT and TcpExt TCPTimeWaitOverflow counts them")),
    ("net/ipv4/tcp_max_orphans",
     _doc("tcp_max_orphans", "net.ipv4.tcp_max_orphans",
          "Most TCP sockets not attached to any process, host-wide; beyond it orphans are "
          "reset (TcpExt TCPAbortOnMemory). Recent kernels show it only in the initial network "
          "namespace")),
    ("net/ipv4/tcp_fin_timeout",
     _doc("tcp_fin_timeout", "net.ipv4.tcp_fin_timeout",
          "How long an orphaned connection stays in FIN_WAIT2, in seconds (not the TIME_WAIT "
          "duration, which is fixed at 60 s)", "_seconds")),
    ("net/core/somaxconn",
     _doc("somaxconn", "net.core.somaxconn",
          "Upper bound of a listen() backlog: the accept queue limit of any listener")),
    ("net/ipv4/tcp_max_syn_backlog",
     _doc("tcp_max_syn_backlog", "net.ipv4.tcp_max_syn_backlog",
          "Most connection requests (SYN_RECV) a listener keeps before dropping or answering "
          "with SYN cookies")),
)
M_TCP_MEM = MetricDoc(
    "netstat_limits_tcp_mem_bytes", "gauge",
    "TCP memory thresholds of the whole host, in bytes (sysctl net.ipv4.tcp_mem, "
    "/proc/sys/net/ipv4/tcp_mem, pages times the page size): below min no pressure, above "
    "pressure TCP moderates buffers, at max allocations fail; compare with "
    "netstat_sockstat_memory_bytes{protocol=\"tcp\"}.",
    ("level",), note="absent inside a network namespace other than the host's on kernels that "
                     "show tcp_mem only in the initial one")
M_RANGE_LOW = _doc("ip_local_port_range_low", "net.ipv4.ip_local_port_range",
                   "First port of the range connect() and autobind pick local ports from")
M_RANGE_HIGH = _doc("ip_local_port_range_high", "net.ipv4.ip_local_port_range",
                    "Last port of the range connect() and autobind pick local ports from")
M_CT_COUNT = MetricDoc(
    "netstat_limits_nf_conntrack_entries", "gauge",
    "Connection tracking entries in use (sysctl net.netfilter.nf_conntrack_count, "
    "/proc/sys/net/netfilter/nf_conntrack_count); new flows are dropped when it reaches "
    "netstat_limits_nf_conntrack_max.",
    note="absent without the nf_conntrack module")
M_CT_MAX = MetricDoc(
    "netstat_limits_nf_conntrack_max", "gauge",
    "Size of the connection tracking table (sysctl net.netfilter.nf_conntrack_max, "
    "/proc/sys/net/netfilter/nf_conntrack_max).",
    note="absent without the nf_conntrack module")
METRICS = (*(d for _, d in SINGLE), M_TCP_MEM, M_RANGE_LOW, M_RANGE_HIGH, M_CT_COUNT, M_CT_MAX)


@register("limits", default_enabled=True, metrics=METRICS)
class LimitsCollector(Base[None]):
    """kernel limits beside the usage: TIME_WAIT buckets, orphans, somaxconn, SYN backlog,
    tcp_mem, the local port range, conntrack (from /proc/sys)"""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.page_size = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _one(self, name: str, doc: MetricDoc) -> Optional[Metric]:
        v = sysctl.read_int(self.procfs, name)
        if v is None:
            return None
        fam = doc.family()
        fam.add_metric([], float(v))
        return fam

    def collect(self) -> Iterator[Metric]:
        out: List[Optional[Metric]] = [self._one(n, d) for n, d in SINGLE]
        mem = sysctl.read_ints(self.procfs, "net/ipv4/tcp_mem")
        if mem is not None:
            if len(mem) != 3:
                raise sysctl.parse_error(self.procfs, "net/ipv4/tcp_mem",
                                         f"expected three values, got {len(mem)}")
            fam = M_TCP_MEM.family()
            for level, pages in zip(("min", "pressure", "max"), mem):
                fam.add_metric([level], float(pages * self.page_size))
            out.append(fam)
        rng = sysctl.read_ints(self.procfs, "net/ipv4/ip_local_port_range")
        if rng is not None:
            if len(rng) != 2:
                raise sysctl.parse_error(self.procfs, "net/ipv4/ip_local_port_range",
                                         f"expected two values, got {len(rng)}")
            for doc, v in ((M_RANGE_LOW, rng[0]), (M_RANGE_HIGH, rng[1])):
                fam = doc.family()
                fam.add_metric([], float(v))
                out.append(fam)
        out.append(self._one("net/netfilter/nf_conntrack_count", M_CT_COUNT))
        out.append(self._one("net/netfilter/nf_conntrack_max", M_CT_MAX))
        yield from (m for m in out if m is not None)
