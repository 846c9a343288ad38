"""ports: range arithmetic, the /proc/net row reader, the collector on fixtures, and a live test
with many client connections inside a namespace whose ephemeral range is narrowed."""

from __future__ import annotations

import json
import os
from typing import Dict, List

import pytest
from helpers import FIXTURES, select, value
from nshelpers import Holder, dump, needs_root, netns, run, set_sysctl
from prometheus_client import CollectorRegistry

from exporter.collectors.ports import PortsCollector, PortsOptions
from exporter.config import Config
from exporter.procfs import net_sockets, sysctl
from exporter.procfs.errors import ParseError
from exporter.sockets.onepass import ephemeral_range


def test_reserved_ranges() -> None:
    assert sysctl.parse_port_ranges("8080,9000-9010\n", "p") == [(8080, 8080), (9000, 9010)]
    assert sysctl.parse_port_ranges("\n", "p") == []
    for bad in ("9000-", "a", "9010-9000", "70000"):
        with pytest.raises(ParseError):
            sysctl.parse_port_ranges(bad, "p")


@pytest.mark.parametrize("low, high, reserved", [
    (32768, 60999, []),  # the default: partial blocks at both ends
    (1024, 65535, [(40000, 40010), (50000, 50000)]),  # reserved ports inside whole blocks
    (40000, 40100, []),  # within one block of 256 ports
])
def test_ephemeral_mask_is_the_ranges_table(low: int, high: int, reserved) -> None:
    """The record mask read by the ports' high byte (blocks of 256 through a translate table,
    the mixed blocks port by port) says what the range's table says, for every port."""
    import struct as st

    from exporter.netlink.inet import REC_SPORT
    from exporter.sockets.onepass import InetPass
    rng = ephemeral_range(low, high, reserved)
    stride = 72
    ports = list(range(65536))
    buf = bytearray(stride * len(ports))
    for i, p in enumerate(ports):
        st.pack_into(">H", buf, i * stride + REC_SPORT, p)
    mask = InetPass("tcp", ephemeral=rng)._ephemeral_mask(buf, 0, len(buf), stride)
    assert list(mask) == [1 if p in rng.ports else 0 for p in ports]


def test_ephemeral_ports() -> None:
    assert len(ephemeral_range(40000, 40099, []).ports) == 100
    assert len(ephemeral_range(40000, 40099, [(40010, 40019), (40050, 40050), (1, 10)]).ports) == 89


def test_socket_rows_with_both_endpoints() -> None:
    rows = net_sockets.read_socket_rows(os.path.join(FIXTURES, "proc", "new"), "tcp6")
    assert rows is not None
    assert [(r.local, r.local_port, r.remote, r.remote_port, r.state) for r in rows] == [
        ("::", 22, "::", 0, 10), ("fd00::2", 40004, "fd00::9", 443, 1)]
    with pytest.raises(ParseError, match=":2: bad address"):
        list(net_sockets.parse_socket_rows(["  sl  local_address rem_address st\n",
                                          "0: 0100007F:zz 00000000:0000 0A\n"], "tcp"))
    assert net_sockets.read_socket_rows(os.path.join(FIXTURES, "proc", "ipv6-disabled"),
                                      "tcp6") is None


def collect(scenario: str, top: int = 0) -> CollectorRegistry:
    cfg = Config(procfs=os.path.join(FIXTURES, "proc", scenario),
                 options={"ports": PortsOptions(source="procfs", top_destinations=top)})
    reg = CollectorRegistry(auto_describe=False)
    reg.register(PortsCollector(cfg))
    return reg


def test_collector_on_fixture() -> None:
    reg = collect("new", top=2)
    # 40000-40099 minus 40010-40019 and 40050.
    assert reg.get_sample_value("netstat_ports_ephemeral_available") == 89
    # 40001 (twice, two destinations), 40002, 40003, 40004 (IPv6); 40010 is reserved; the
    # listener and the server side of a connection are not in the range.
    assert reg.get_sample_value("netstat_ports_ephemeral_used", {"protocol": "tcp"}) == 4
    assert reg.get_sample_value("netstat_ports_ephemeral_destination_used_max",
                                {"protocol": "tcp"}) == 3
    assert reg.get_sample_value("netstat_ports_ephemeral_destination_used", {
        "protocol": "tcp", "destination": "10.0.0.5->10.0.0.9:443"}) == 3
    # UDP: a connected socket and an unconnected one bound in the range both use a port;
    # only the connected one has a destination.
    assert reg.get_sample_value("netstat_ports_ephemeral_used", {"protocol": "udp"}) == 2
    assert reg.get_sample_value("netstat_ports_ephemeral_destination_used_max",
                                {"protocol": "udp"}) == 1
    dests = [s for m in reg.collect() for s in m.samples
             if s.name == "netstat_ports_ephemeral_destination_used"]
    assert len([s for s in dests if s.labels["protocol"] == "tcp"]) == 2
    assert "netstat_ports_ephemeral_destination_used" not in {
        m.name for m in collect("new").collect()}


def test_missing_range_is_no_data(tmp_path: os.PathLike[str]) -> None:
    cfg = Config(procfs=str(tmp_path), options={"ports": PortsOptions(source="procfs")})
    reg = CollectorRegistry(auto_describe=False)
    reg.register(PortsCollector(cfg))
    assert list(reg.collect()) == []


# --- live -----------------------------------------------------------------------------------

CLIENTS = r"""
import json, socket, sys
K, M, CLOSED, U = 30, 12, 6, 3
a = socket.socket(); a.bind(("127.0.0.1", 5001)); a.listen(128)
b = socket.socket(); b.bind(("127.0.0.1", 5002)); b.listen(128)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 5003))
keep, ports = [], {"a": [], "b": [], "udp": []}
for name, srv, n in (("a", a, K), ("b", b, M)):
    for i in range(n):
        c = socket.socket()  # source address 127.0.0.1, chosen by the route
        c.connect(srv.getsockname())
        s, _ = srv.accept()
        ports[name].append(c.getsockname()[1])
        if name == "a" and i < CLOSED:
            c.close(); s.close()  # client closes first: its port stays in TIME_WAIT
        else:
            keep += [c, s]
for _ in range(U):
    d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); d.connect(("127.0.0.1", 5003))
    ports["udp"].append(d.getsockname()[1]); keep.append(d)
print(json.dumps(ports), flush=True)
sys.stdin.read()
"""


@needs_root
@pytest.mark.parametrize("source", ["netlink", "procfs", "psutil"])
def test_live_many_clients_to_one_destination(source: str) -> None:
    with netns("ports") as ns:
        set_sysctl(ns, {"net/ipv4/ip_local_port_range": "40000 40099",
                        "net/ipv4/ip_local_reserved_ports": "40090-40099"})
        holder = Holder(ns, CLIENTS)
        try:
            ports: Dict[str, List[int]] = json.loads(holder.ready)
            samples = dump(ns, "--collector.disable-defaults", "--collector.ports",
                           f"--collector.ports.source={source}",
                           "--collector.ports.top-destinations=5")
        finally:
            holder.close()
    assert all(40000 <= p < 40090 for ps in ports.values() for p in ps)
    assert len(set(ports["a"])) == 30 and len(set(ports["b"])) == 12
    assert value(samples, "netstat_ports_ephemeral_available") == 90
    # The kernel may give the same local port to both destinations: count distinct ports.
    assert value(samples, "netstat_ports_ephemeral_used", protocol="tcp") == \
        len(set(ports["a"]) | set(ports["b"]))
    assert value(samples, "netstat_ports_ephemeral_destination_used_max", protocol="tcp") == 30
    top = {s[1]["destination"]: s[2]
           for s in select(samples, "netstat_ports_ephemeral_destination_used", protocol="tcp")}
    assert top == {"127.0.0.1->127.0.0.1:5001": 30, "127.0.0.1->127.0.0.1:5002": 12}
    assert value(samples, "netstat_ports_ephemeral_used", protocol="udp") == 3
    assert value(samples, "netstat_ports_ephemeral_destination_used_max", protocol="udp") == 3
    assert value(samples, "netstat_ports_ephemeral_destination_used", protocol="udp",
                 destination="127.0.0.1->127.0.0.1:5003") == 3


BOTH_FAMILIES = r"""
import json, socket, sys
# two sockets on one port towards one destination: one port in use, not two (bound first, so
# that no autobound socket has taken the port)
keep = []
for _ in range(2):
    d = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    d.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    d.bind(("::1", 40080)); d.connect(("::1", 5003)); keep.append(d)
for fam, host, port in ((socket.AF_INET, "127.0.0.1", 5001), (socket.AF_INET6, "::1", 5001),
                        (socket.AF_INET6, "::1", 5002)):
    srv = socket.socket(fam); srv.bind((host, port)); srv.listen(128); keep.append(srv)
    for i in range(7 if port == 5001 else 4):
        c = socket.socket(fam); c.connect((host, port)); s, _ = srv.accept()
        if i < 2:
            c.close(); s.close()  # client closes first: its port stays in TIME_WAIT
        else:
            keep += [c, s]
for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    u = socket.socket(fam, socket.SOCK_DGRAM); u.bind((host, 5003)); keep.append(u)
    for _ in range(3 if fam == socket.AF_INET else 5):
        d = socket.socket(fam, socket.SOCK_DGRAM); d.connect((host, 5003)); keep.append(d)
print(json.dumps({}), flush=True)
sys.stdin.read()
"""


def ss_destinations(ns: str, proto: str) -> Dict[str, int]:
    """Distinct local ports of the ephemeral range per destination, from ss -tan / -uan."""
    out = run(ns, "ss", "-Hna", f"-{proto[0]}")
    ports: Dict[str, set] = {}
    for line in out.splitlines():
        f = line.split()
        local, peer = f[3], f[4]
        laddr, lport = local.rsplit(":", 1)
        if f[0] == "LISTEN" or peer.endswith(":*") or not 40000 <= int(lport) < 40090:
            continue
        dest = f"{laddr.strip('[]')}->{peer}"
        ports.setdefault(dest, set()).add(int(lport))
    return {d: len(p) for d, p in ports.items()}


@needs_root
@pytest.mark.parametrize("source", ["netlink", "procfs", "psutil"])
def test_live_destinations_of_both_families(source: str) -> None:
    """IPv4 and IPv6 sockets in one table (records of both families in one netlink chunk, or
    one psutil list) give the same per-destination counts as ss, each destination once."""
    with netns("ports6") as ns:
        set_sysctl(ns, {"net/ipv4/ip_local_port_range": "40000 40099",
                        "net/ipv4/ip_local_reserved_ports": "40090-40099"})
        holder = Holder(ns, BOTH_FAMILIES)
        try:
            want = {p: ss_destinations(ns, p) for p in ("tcp", "udp")}
            samples = dump(ns, "--collector.disable-defaults", "--collector.ports",
                           f"--collector.ports.source={source}",
                           "--collector.ports.top-destinations=20")
        finally:
            holder.close()
    assert want["tcp"] == {"127.0.0.1->127.0.0.1:5001": 7, "::1->[::1]:5001": 7,
                           "::1->[::1]:5002": 4}
    assert want["udp"] == {"127.0.0.1->127.0.0.1:5003": 3, "::1->[::1]:5003": 6}
    for proto in ("tcp", "udp"):
        got = {lab["destination"]: v for _n, lab, v in
               select(samples, "netstat_ports_ephemeral_destination_used", protocol=proto)}
        assert got == want[proto], proto
        assert value(samples, "netstat_ports_ephemeral_destination_used_max",
                     protocol=proto) == max(want[proto].values())
