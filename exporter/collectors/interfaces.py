"""Collector ``interfaces``: per-interface traffic counters (``netstat -i``, ``ip -s link``) from
/proc/net/dev, and each interface's state, MTU and speed from /sys/class/net.

``--collector.interfaces.device-include`` / ``--collector.interfaces.device-exclude`` filter
devices by name, as node_exporter's netdev collector does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, Iterator, List

from prometheus_client.core import Metric

from exporter.collectors.api import LINUX, SYSTEMS, Base, Flag, MetricDoc, register
from exporter.config import Config, compile_regex
from exporter.labels import label_value
from exporter.rows import has_samples

log = logging.getLogger(__name__)

# /proc/net/dev column -> (metric name part, what it counts). Column names as
# dev_seq_printf_stats() in net/core/net-procfs.c prints them.
_COLUMNS = {
    "receive_bytes": "Bytes received",
    "receive_packets": "Packets received",
    "receive_errs": "Receive errors (rx_errors)",
    "receive_drop": "Received packets dropped (rx_dropped + rx_missed_errors)",
    "receive_fifo": "Receive FIFO overruns (rx_fifo_errors)",
    "receive_frame": "Receive framing errors (rx_length, rx_over, rx_crc and rx_frame errors)",
    "receive_compressed": "Compressed packets received",
    "receive_multicast": "Multicast packets received",
    "transmit_bytes": "Bytes transmitted",
    "transmit_packets": "Packets transmitted",
    "transmit_errs": "Transmit errors (tx_errors)",
    "transmit_drop": "Packets dropped on transmit (tx_dropped)",
    "transmit_fifo": "Transmit FIFO errors (tx_fifo_errors)",
    "transmit_colls": "Collisions detected while transmitting",
    "transmit_carrier": "Transmit carrier errors (tx_carrier, aborted, window and heartbeat "
                        "errors)",
    "transmit_compressed": "Compressed packets transmitted",
}


# The columns every system has (psutil's net_io_counters); the others are Linux's.
_EVERYWHERE = {f"{way}_{what}" for way in ("receive", "transmit")
               for what in ("bytes", "packets", "errs", "drop")}


def _metric_name(column: str) -> str:
    return "netstat_interface_" + column.replace("_errs", "_errors") + "_total"


COUNTERS: Dict[str, MetricDoc] = {
    col: MetricDoc(_metric_name(col), "counter",
                   f"{text}, per interface (/proc/net/dev column "
                   f"{col.split('_')[0].capitalize()} {col.split('_', 1)[1]}).", ("device",),
                   systems=SYSTEMS if col in _EVERYWHERE else LINUX)
    for col, text in _COLUMNS.items()
}
# A counter Linux does not keep per interface: Windows's InUnknownProtos (MIB_IF_ROW2 of
# GetIfTable2), what `netstat -e` prints as "Unknown protocols".
COUNTERS["receive_unknown_protocols"] = MetricDoc(
    _metric_name("receive_unknown_protocols"), "counter",
    "Packets received that were discarded because of an unknown or unsupported protocol, per "
    "interface (MIB_IF_ROW2 InUnknownProtos; netstat -e's Unknown protocols).", ("device",),
    systems=("windows",))
M_UP = MetricDoc(
    "netstat_interface_up", "gauge",
    "1 if the interface is operationally up, else 0 (/sys/class/net/<device>/operstate; for "
    "operstate 'unknown', as on loopback, the IFF_UP bit of flags and the carrier).",
    ("device",))
M_MTU = MetricDoc(
    "netstat_interface_mtu_bytes", "gauge",
    "MTU of the interface in bytes (/sys/class/net/<device>/mtu).", ("device",))
M_SPEED = MetricDoc(
    "netstat_interface_speed_bytes", "gauge",
    "Link speed in bytes per second (/sys/class/net/<device>/speed, Mbit/s times 125000).",
    ("device",), note="absent when the driver reports none, e.g. loopback or a link that is down")
METRICS = (*COUNTERS.values(), M_UP, M_MTU, M_SPEED)


_INCLUDE = "--collector.interfaces.device-include"
_EXCLUDE = "--collector.interfaces.device-exclude"


@dataclass(frozen=True)
class InterfacesOptions:
    device_include: str = ""  # regexes over device names; "" means no filter
    device_exclude: str = ""

    def __post_init__(self) -> None:
        compile_regex(_INCLUDE, self.device_include)
        compile_regex(_EXCLUDE, self.device_exclude)


FLAGS = (
    Flag("device_include", "Regex of interface names to export (default all)."),
    Flag("device_exclude", "Regex of interface names to leave out."),
)


@register("interfaces", default_enabled=True,
          metrics=METRICS, options=InterfacesOptions, flags=FLAGS)
class InterfacesCollector(Base[InterfacesOptions]):
    """per-interface traffic counters from /proc/net/dev (netstat -i); state, MTU and speed from
    /sys/class/net"""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.include = compile_regex(_INCLUDE, self.opts.device_include)
        self.exclude = compile_regex(_EXCLUDE, self.opts.device_exclude)

    def _wanted(self, dev: str) -> bool:
        if self.include is not None and not self.include.match(dev):
            return False
        return not (self.exclude is not None and self.exclude.match(dev))

    def collect(self) -> Iterator[Metric]:
        # The name as read stays the key (on Linux it names the sysfs directory); the label is
        # what the filters see.
        links = self.system.interfaces(lambda dev: self._wanted(label_value(dev)))
        fams = {col: doc.family() for col, doc in COUNTERS.items()}
        up, mtu, speed = M_UP.family(), M_MTU.family(), M_SPEED.family()
        for dev in sorted(links):
            label, link = label_value(dev), links[dev]
            for col, v in link.counters.items():
                fam = fams.get(col)
                if fam is not None:  # a column a newer kernel adds is not exported
                    fam.add_metric([label], float(v))
            if link.up is not None:
                up.add_metric([label], 1.0 if link.up else 0.0)
            if link.mtu is not None:
                mtu.add_metric([label], float(link.mtu))
            if link.speed_bytes is not None:
                speed.add_metric([label], link.speed_bytes)
        out: List[Metric] = [*fams.values(), up, mtu, speed]
        yield from (m for m in out if has_samples(m))
