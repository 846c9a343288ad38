"""Interface names that are not ASCII keep their real name in labels, and their sysfs data.

Linux allows any bytes in a device name but "/", ":" and white space (dev_valid_name). Read as
ASCII with replacement characters, two UTF-8 names of one length became the same label (one
device's counters overwriting the other's) and the mangled name found no sysfs directory (up,
MTU and speed vanished). The live test makes such devices in a network namespace of its own.
"""

from __future__ import annotations

import json
import subprocess

from helpers import select, value
from nshelpers import dump, needs_root, netns, run

from exporter.labels import label_value
from exporter.procfs import netdev

HEADER = ("Inter-|   Receive                                                |  Transmit\n"
          " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets "
          "errs drop fifo colls carrier compressed\n")


def test_label_value() -> None:
    assert label_value("eth0") == "eth0"
    assert label_value("tëst0") == "tëst0"
    # A name that is not UTF-8 (kept by surrogateescape) is escaped, and stays distinct.
    raw = b"t\xffst0".decode("utf-8", "surrogateescape")
    assert label_value(raw) == "t\\xffst0"
    assert label_value(raw) != label_value(b"t\xfest0".decode("utf-8", "surrogateescape"))


def test_parse_netdev_keeps_utf8_names_apart() -> None:
    row = "{}: 1 2 0 0 0 0 0 0 {} 4 0 0 0 0 0 0\n"
    text = HEADER + row.format("tëst0", 10) + row.format("tüst0", 20)
    got = netdev.parse_netdev(text, "dev")
    assert sorted(got) == ["tëst0", "tüst0"]
    assert got["tëst0"]["transmit_bytes"] == 10 and got["tüst0"]["transmit_bytes"] == 20


@needs_root
def test_utf8_devices_in_a_namespace() -> None:
    names = {"tëst0": 1400, "tüst0": 1300}  # same length: they used to collapse into one
    raw = b"x\xffz0"  # not UTF-8 at all
    with netns("utf8") as ns:
        run(ns, "ip", "link", "add", "tëst0", "type", "veth", "peer", "name", "tüst0")
        for name, mtu in names.items():
            run(ns, "ip", "link", "set", name, "mtu", str(mtu), "up")
        run(ns, "ip", "addr", "add", "10.78.0.1/24", "dev", "tëst0")
        r = subprocess.run([b"ip", b"netns", b"exec", ns.encode(), b"ip", b"link", b"add", raw,
                            b"type", b"veth", b"peer", b"name", b"raw1"],
                           capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr
        out = subprocess.run(["ip", "netns", "exec", ns, "ip", "-j", "link", "show"],
                             capture_output=True, timeout=30, check=True).stdout
        links = {d["ifname"]: d for d in json.loads(out.decode("utf-8", "surrogateescape"))}
        samples = dump(ns, "--collector.disable-defaults", "--collector.interfaces",
                       "--collector.routes")
    devices = {s[1]["device"] for s in select(samples, "netstat_interface_receive_bytes_total")}
    assert devices == {"lo", "tëst0", "tüst0", "x\\xffz0", "raw1"}
    for name, mtu in names.items():
        assert links[name]["mtu"] == mtu
        # The sysfs lookup found the device: MTU and state are there, under the real name.
        assert value(samples, "netstat_interface_mtu_bytes", device=name) == mtu
        assert value(samples, "netstat_interface_up", device=name) == 1
    assert value(samples, "netstat_interface_mtu_bytes", device="x\\xffz0") is not None
    assert value(samples, "netstat_interface_up", device="x\\xffz0") == 0  # not set up
    assert value(samples, "netstat_route_entries", family="ipv4", interface="tëst0") == 1
