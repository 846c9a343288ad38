"""interfaces: /proc/net/dev and /sys/class/net readers, the collector on fixtures, and a live
cross-check against ``ip -s link`` over veth pairs in namespaces the test creates."""

from __future__ import annotations

import json
import os
from typing import Dict, List

import pytest
from helpers import FIXTURES, select, value
from nshelpers import Holder, dump, needs_root, netns, run, set_sysctl, sh
from prometheus_client import CollectorRegistry

from exporter.collectors.interfaces import InterfacesCollector, InterfacesOptions
from exporter.config import Config
from exporter.procfs import netdev
from exporter.procfs.errors import ParseError
from exporter.sysfs import net_class

HEADER = ("Inter-|   Receive                                                |  Transmit\n"
          " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets "
          "errs drop fifo colls carrier compressed\n")


def test_parse_netdev_columns_from_header_and_alias_names() -> None:
    d = netdev.parse_netdev(HEADER + "  eth0:1: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n",
                            "dev")
    assert d["eth0:1"]["receive_bytes"] == 1 and d["eth0:1"]["receive_multicast"] == 8
    assert d["eth0:1"]["transmit_colls"] == 14 and d["eth0:1"]["transmit_compressed"] == 16


@pytest.mark.parametrize("text,line", [
    (HEADER + "eth0: 1 2 3\n", 3),
    (HEADER + "eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 x\n", 3),
    (HEADER + "no colon here\n", 3),
    (HEADER.splitlines()[0] + "\n", 2),
    ("Inter-| x\n face |a|b\n", 1),
])
def test_parse_netdev_rejects_with_line(text: str, line: int) -> None:
    with pytest.raises(ParseError) as e:
        netdev.parse_netdev(text, "/proc/net/dev")
    assert e.value.line == line


def test_truncated_fixture() -> None:
    with pytest.raises(ParseError, match=r"net/dev:6: wlan0 has 3 values"):
        netdev.read_netdev(os.path.join(FIXTURES, "proc", "truncated"))


def test_net_class_fixture() -> None:
    root = os.path.join(FIXTURES, "sys", "new")
    lo = net_class.read_net_class(root, "lo")
    wlan = net_class.read_net_class(root, "wlan0")
    assert lo is not None and lo.up is True and lo.speed_mbps is None  # operstate unknown
    assert wlan is not None and wlan.up is False and wlan.speed_mbps is None  # speed -1
    assert net_class.read_net_class(root, "nosuch") is None


def collect(**kw: str) -> CollectorRegistry:
    cfg = Config(procfs=os.path.join(FIXTURES, "proc", "new"),
                 sysfs=os.path.join(FIXTURES, "sys", "new"),
                 options={"interfaces": InterfacesOptions(**kw)})
    reg = CollectorRegistry(auto_describe=False)
    reg.register(InterfacesCollector(cfg))
    return reg


def test_collector_on_fixture() -> None:
    reg = collect()
    assert reg.get_sample_value("netstat_interface_receive_bytes_total",
                                {"device": "eth0"}) == 255975871
    assert reg.get_sample_value("netstat_interface_receive_errors_total", {"device": "eth0"}) == 3
    assert reg.get_sample_value("netstat_interface_transmit_carrier_total",
                                {"device": "eth0"}) == 1
    assert reg.get_sample_value("netstat_interface_speed_bytes", {"device": "eth0"}) == 125e6
    assert reg.get_sample_value("netstat_interface_speed_bytes", {"device": "lo"}) is None
    assert reg.get_sample_value("netstat_interface_up", {"device": "wlan0"}) == 0
    assert reg.get_sample_value("netstat_interface_mtu_bytes", {"device": "veth-a1"}) == 1400


def _devices(reg: CollectorRegistry) -> List[str]:
    return sorted({s.labels["device"] for m in reg.collect() for s in m.samples})


def test_include_and_exclude() -> None:
    assert _devices(collect()) == ["eth0", "lo", "veth-a1", "wlan0"]
    assert _devices(collect(device_include="eth.*|lo")) == ["eth0", "lo"]
    assert _devices(collect(device_exclude="veth.*")) == ["eth0", "lo", "wlan0"]
    assert _devices(collect(device_include="e.*|v.*",
                            device_exclude="veth.*")) == ["eth0"]


# --- live -----------------------------------------------------------------------------------

SEND = r"""
import socket, sys, json
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(20):
    s.sendto(b"z" * 100, ("10.77.0.2", 9))
print(json.dumps({"sent": 20}), flush=True)
sys.stdin.read()
"""

# /proc/net/dev column -> ip -s -j link stats64 key
IP_KEYS = {"receive_bytes": ("rx", "bytes"), "receive_packets": ("rx", "packets"),
           "receive_errors": ("rx", "errors"), "receive_drop": ("rx", "dropped"),
           "receive_multicast": ("rx", "multicast"), "transmit_bytes": ("tx", "bytes"),
           "transmit_packets": ("tx", "packets"), "transmit_errors": ("tx", "errors"),
           "transmit_drop": ("tx", "dropped"), "transmit_carrier": ("tx", "carrier_errors"),
           "transmit_colls": ("tx", "collisions")}


def _ip_link(ns: str) -> Dict[str, dict]:  # type: ignore[type-arg]
    return {d["ifname"]: d for d in json.loads(run(ns, "ip", "-s", "-j", "link", "show"))}


@needs_root
def test_live_against_ip_link() -> None:
    with netns("ifa") as a, netns("ifb") as b:
        for ns in (a, b):  # no IPv6 chatter (DAD, router solicitations) moving the counters
            set_sysctl(ns, {"net/ipv6/conf/all/disable_ipv6": "1",
                            "net/ipv6/conf/default/disable_ipv6": "1"})
        sh(["ip", "-n", a, "link", "add", "vx0", "type", "veth", "peer", "name", "vy0",
            "netns", b],
           ["ip", "-n", a, "link", "add", "vdown0", "type", "veth", "peer", "name", "vdown1"],
           ["ip", "-n", a, "link", "set", "vx0", "mtu", "1400", "up"],
           ["ip", "-n", a, "addr", "add", "10.77.0.1/24", "dev", "vx0"],
           ["ip", "-n", b, "link", "set", "vy0", "mtu", "1400", "up"],
           ["ip", "-n", b, "addr", "add", "10.77.0.2/24", "dev", "vy0"])
        holder = Holder(a, SEND)
        try:
            before = _ip_link(a)
            samples = dump(a, "--collector.disable-defaults", "--collector.interfaces")
            after = _ip_link(a)
            speed = run(a, "cat", "/sys/class/net/vx0/speed").strip()
        finally:
            holder.close()
    assert {s[1]["device"] for s in select(samples, "netstat_interface_receive_bytes_total")} \
        == set(before) == {"lo", "vx0", "vdown0", "vdown1"}
    for dev in before:
        for col, (way, key) in IP_KEYS.items():
            got = value(samples, f"netstat_interface_{col}_total", device=dev)
            lo, hi = before[dev]["stats64"][way][key], after[dev]["stats64"][way][key]
            assert got is not None and lo <= got <= hi, (dev, col, lo, got, hi)
        assert value(samples, "netstat_interface_mtu_bytes", device=dev) == before[dev]["mtu"]
    # The known traffic: 20 datagrams of 100 bytes of payload (+ 28 bytes of IP/UDP header,
    # + 14 of Ethernet) left vx0, plus ARP.
    tx = value(samples, "netstat_interface_transmit_packets_total", device="vx0")
    txb = value(samples, "netstat_interface_transmit_bytes_total", device="vx0")
    assert tx is not None and tx >= 20 and txb is not None and txb >= 20 * 142
    assert value(samples, "netstat_interface_up", device="vx0") == 1
    assert value(samples, "netstat_interface_up", device="vdown0") == 0
    assert value(samples, "netstat_interface_up", device="lo") == 1
    assert value(samples, "netstat_interface_speed_bytes", device="vx0") == int(speed) * 125000
    assert value(samples, "netstat_interface_speed_bytes", device="lo") is None
