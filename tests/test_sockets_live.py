"""The sockets collector against the real thing: sockets this test opens inside a network
namespace it creates, counted by the running exporter, by `ss` and by node_exporter's tcpstat at
the same moment.

Every TCP state is made for real: LISTEN, ESTABLISHED, CLOSE_WAIT/FIN_WAIT2 (half-closed),
TIME_WAIT (client closes first), and SYN_SENT/SYN_RECV across a veth pair whose far end is given
a wrong MAC address, so SYNs and SYN-ACKs are sent but never arrive.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import time
from collections import Counter
from typing import Dict, Iterator, List, Tuple

import pytest
from helpers import have, ns_http_get, parse, poll, running_exporter, select, value
from nshelpers import SS_STATE, Holder, NetNS, dump, needs_root, netns, run, veth

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates network namespaces: run as root")

M_ADDR, P_ADDR = "10.231.0.1", "10.231.0.2"
BOUND_IDLE = 1


def kernel_at_least(major: int, minor: int) -> bool:
    parts = os.uname().release.split(".")
    return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)


def ss_counts(ns: NetNS, *flags: str) -> Tuple[Counter, int, int]:
    """Per-state counts, and summed Recv-Q/Send-Q of non-listening sockets, as `ss` sees them."""
    states: Counter = Counter()
    rq = sq = 0
    for line in ns.run("ss", "-anH", *flags).splitlines():
        f = line.split()
        if not f:
            continue
        st = f[0] if f[0] in SS_STATE or f[0] == "UNCONN" else f[1]
        off = 0 if f[0] == st else 1  # `ss -x` puts the Netid first
        states[st] += 1
        if st != "LISTEN":
            rq += int(f[1 + off])
            sq += int(f[2 + off])
    return states, rq, sq


def make_sockets(peer: NetNS) -> List[socket.socket]:
    """Runs inside the measured namespace; returns the sockets so they stay open."""
    keep: List[socket.socket] = []
    lst = socket.socket()
    lst.bind(("127.0.0.1", 7000))
    lst.listen(64)
    keep.append(lst)

    def pair() -> Tuple[socket.socket, socket.socket]:
        c = socket.create_connection(("127.0.0.1", 7000))
        s, _ = lst.accept()
        keep.extend((c, s))
        return c, s

    for _ in range(3):  # 6 ESTABLISHED
        pair()
    c, s = pair()  # 1234 bytes waiting in a receive queue
    c.sendall(b"x" * 1234)
    for _ in range(2):  # 2 FIN_WAIT2 + 2 CLOSE_WAIT
        c, s = pair()
        c.shutdown(socket.SHUT_WR)
    for _ in range(4):  # 4 TIME_WAIT (the side that closes first waits)
        c = socket.create_connection(("127.0.0.1", 7000))
        s, _ = lst.accept()
        c.close()
        s.close()
    # IPv6: a listener and one connection.
    l6 = socket.socket(socket.AF_INET6)
    l6.bind(("::1", 7002))
    l6.listen(8)
    c6 = socket.create_connection(("::1", 7002))
    s6, _ = l6.accept()
    keep.extend((l6, c6, s6))
    # SYN_SENT: the SYN goes out of the veth towards a MAC that is not the peer's.
    syn = socket.socket()
    syn.setblocking(False)
    assert syn.connect_ex((P_ADDR, 9)) in (115, 11)  # EINPROGRESS
    keep.append(syn)
    # SYN_RECV: the peer connects to us; our SYN-ACK goes to the wrong MAC and is lost.
    lr = socket.socket()
    lr.bind((M_ADDR, 7001))
    lr.listen(8)
    keep.append(lr)
    # TCP sockets that are bound and idle (not shown by ss before iproute2 6.5).
    for _ in range(BOUND_IDLE):
        b = socket.socket()
        b.bind(("127.0.0.1", 0))
        keep.append(b)
    # UDP: two bound, one connected (v4); one bound (v6).
    for _ in range(2):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        keep.append(u)
    uc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uc.connect(("127.0.0.1", 9))
    u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    u6.bind(("::1", 0))
    keep.extend((uc, u6))
    # raw
    keep.append(socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
    # unix: a stream listener with one accepted connection, a bound datagram socket, a pair
    ul = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ul.bind("\0netstat-exporter-test-stream")
    ul.listen(4)
    uc1 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    uc1.connect("\0netstat-exporter-test-stream")
    us1, _ = ul.accept()
    ud = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ud.bind("\0netstat-exporter-test-dgram")
    keep.extend((ul, uc1, us1, ud, *socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)))
    return keep


def peer_connect() -> socket.socket:
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex((M_ADDR, 7001))
    return s


@pytest.fixture(scope="module")
def hosts():
    with NetNS("sock") as m, NetNS("peer") as p:
        veth(m, p, f"{M_ADDR}/24", f"{P_ADDR}/24")
        dev = m.ip("-o", "link", "show", "type", "veth").split(":")[1].strip().split("@")[0]
        # Anything M sends towards P is addressed to a MAC nobody has: dropped by P.
        m.ip("neigh", "replace", P_ADDR, "lladdr", "02:00:00:00:00:01", "dev", dev,
             "nud", "permanent")
        keep = m.call(make_sockets, p)
        keep.append(p.call(peer_connect))

        def settled() -> bool:
            st, _, _ = ss_counts(m, "-t")
            return (st["TIME-WAIT"] == 4 and st["SYN-RECV"] == 1 and st["LAST-ACK"] == 0
                    and st["FIN-WAIT-1"] == 0)

        poll(settled, timeout=20, what="TCP states to settle")
        try:
            yield m
        finally:
            for s in keep:
                s.close()




_KEPT_ALIVE: List[http.client.HTTPConnection] = []


@pytest.fixture(autouse=True)
def close_keepalives() -> Iterator[None]:
    """Close the test's KeepAlive connections once it is over (they must stay open during it)."""
    yield
    while _KEPT_ALIVE:
        _KEPT_ALIVE.pop().close()


class KeepAlive:
    """One persistent HTTP/1.1 connection made inside the namespace, so that scraping creates
    no new sockets between `ss` and the scrape (both ends stay ESTABLISHED and are counted)."""

    def __init__(self, ns: NetNS, port: int) -> None:
        self.ns, self.port = ns, port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        _KEPT_ALIVE.append(self.conn)  # closed after the test by close_keepalives
        ns.call(self.conn.connect)

    def get(self, path: str = "/metrics") -> List:
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        body = r.read()
        assert r.status == 200, body[:300]
        # The response stays in the server's send queue until our (delayed) ACK arrives; wait
        # for it so that the next count of queue bytes does not catch this scrape in flight.
        # (with a state filter ss leaves out the State column: Send-Q is the second field)
        poll(lambda: all(line.split()[1] == "0" for line in self.ns.run(
            "ss", "-tnH", "state", "established", f"( sport = :{self.port} )").splitlines()),
            timeout=5, interval=0.01, what="the scrape's send queue to drain")
        return parse(body.decode())


def compare(m: NetNS, read_ss, scrapers):
    """Read `ss`, scrape, read `ss` again; retry (bounded) while a kernel timer (a SYN-ACK
    retransmission, an expiring TIME_WAIT) changed the table in between."""
    deadline = time.monotonic() + 20
    while True:
        before = read_ss()
        got = [s() for s in scrapers]
        after = read_ss()
        if after == before:
            return before, got
        if time.monotonic() > deadline:
            pytest.fail(f"socket table kept changing during the comparison: {before} != {after}")
        time.sleep(0.2)


@pytest.mark.parametrize("source,used", [("auto", "netlink"), ("bpf", "bpf")])
def test_tcp_counts_match_ss_and_node_exporter(hosts: NetNS, source: str, used: str) -> None:
    """Both ways of reading TCP: the whole sock_diag dump (what "auto" uses on a table this
    small) and the socket iterator program."""
    m = hosts
    if not have("prometheus-node-exporter"):
        pytest.fail("prometheus-node-exporter not installed (scripts/test-all installs it)")
    node_port = 19100
    node = m.popen("prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{node_port}",
                   "--collector.disable-defaults", "--collector.tcpstat",
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with running_exporter("--collector.disable-defaults", "--collector.sockets",
                              f"--collector.sockets.source={source}", netns=m.name) as ex:
            poll(lambda: ns_http_get(m.name, f"http://127.0.0.1:{node_port}/metrics")[0] == 200,
                 what="node_exporter")
            ours_c, node_c = KeepAlive(m, ex.port), KeepAlive(m, node_port)
            (ss4, ss6), (ours, theirs) = compare(
                m, lambda: (ss_counts(m, "-t", "-4"), ss_counts(m, "-t", "-6")),
                [ours_c.get, node_c.get])
    finally:
        node.kill()
        node.wait()

    # The states this test made exist, so the comparison is not vacuous.
    for st in ("LISTEN", "ESTAB", "CLOSE-WAIT", "FIN-WAIT-2", "TIME-WAIT", "SYN-SENT", "SYN-RECV"):
        assert ss4[0][st] > 0, st
    # Bound-but-idle TCP sockets are reported as close (Linux 6.5+); ss 6.1 cannot list them.
    bound_idle = {"ipv4": BOUND_IDLE if kernel_at_least(6, 5) else 0, "ipv6": 0}
    for fam, (states, rq, sq) in (("ipv4", ss4), ("ipv6", ss6)):
        for ss_name, ours_name in SS_STATE.items():
            got = value(ours, "netstat_sockets", protocol="tcp", family=fam, state=ours_name)
            want = states[ss_name] + (bound_idle[fam] if ours_name == "close" else 0)
            assert got == want, (fam, ours_name, got, want)
        assert value(ours, "netstat_sockets_receive_queue_bytes", protocol="tcp", family=fam) == rq
        assert value(ours, "netstat_sockets_send_queue_bytes", protocol="tcp", family=fam) == sq
    assert value(ours, "netstat_sockets_receive_queue_bytes", protocol="tcp", family="ipv4") >= 1234
    assert value(ours, "netstat_sockets_source_info", protocol="tcp", source=used) == 1

    # node_exporter's tcpstat sees what ss sees (neither lists bound-but-idle sockets), summed
    # over both families; it leaves out states with no sockets, which we emit as 0.
    node_states = {lbl["state"]: v for _, lbl, v in select(theirs, "node_tcp_connection_states")
                   if not lbl["state"].endswith("_bytes")}
    ss_total = ss4[0] + ss6[0]
    by_name = {v: k for k, v in SS_STATE.items()}
    for state, n in node_states.items():
        assert n == ss_total[by_name[state]], (state, n, ss_total[by_name[state]])
        ours_total = sum(v for _, lbl, v in select(ours, "netstat_sockets", protocol="tcp",
                                                   state=state))
        assert ours_total == n + (sum(bound_idle.values()) if state == "close" else 0), state
    assert node_states.get("established") and node_states.get("time_wait")


def test_udp_raw_unix_counts_match_ss(hosts: NetNS) -> None:
    m = hosts
    def read_ss():
        return ({(p, f): ss_counts(m, flag, fflag) for p, flag in (("udp", "-u"), ("raw", "-w"))
                 for f, fflag in (("ipv4", "-4"), ("ipv6", "-6"))}, m.run("ss", "-xanH"))

    with running_exporter("--collector.disable-defaults", "--collector.sockets",
                          netns=m.name) as ex:
        (want, unix_lines), (ours,) = compare(m, read_ss, [KeepAlive(m, ex.port).get])
    for (proto, fam), (states, _, _) in want.items():
        for ss_name, name in (("ESTAB", "established"), ("UNCONN", "unconnected")):
            assert value(ours, "netstat_sockets", protocol=proto, family=fam, state=name) \
                == states[ss_name], (proto, fam, name)
    assert value(ours, "netstat_sockets", protocol="udp", family="ipv4", state="unconnected") >= 2
    assert value(ours, "netstat_sockets", protocol="raw", family="ipv4", state="unconnected") == 1

    unix: Counter = Counter()
    kinds = {"u_str": "stream", "u_dgr": "dgram", "u_seq": "seqpacket"}
    states = {"ESTAB": "established", "UNCONN": "unconnected", "LISTEN": "listen"}
    for line in unix_lines.splitlines():
        f = line.split()
        unix[(kinds[f[0]], states[f[1]])] += 1
    assert unix[("stream", "listen")] == 1 and unix[("stream", "established")] == 2
    for _, lbl, v in select(ours, "netstat_sockets_unix"):
        assert v == unix[(lbl["type"], lbl["state"])], lbl


def sockets_only(samples) -> Dict:
    names = ("netstat_sockets", "netstat_sockets_unix", "netstat_sockets_receive_queue_bytes",
             "netstat_sockets_send_queue_bytes")
    return {(n, tuple(sorted(lbl.items()))): v for n, lbl, v in samples if n in names}


def test_procfs_source_agrees_with_netlink(hosts: NetNS) -> None:
    """The /proc/net fallback counts the same sockets as netlink (bound_inactive aside: only
    netlink can see sockets that are merely bound)."""
    m = hosts
    with running_exporter("--collector.disable-defaults", "--collector.sockets",
                          netns=m.name) as nl_ex, \
            running_exporter("--collector.disable-defaults", "--collector.sockets",
                             "--collector.sockets.source=procfs", netns=m.name, port=19817) as pf_ex:
        a_c, b_c = KeepAlive(m, nl_ex.port), KeepAlive(m, pf_ex.port)
        # Each exporter reads the table while the test's request to it is in the client
        # socket's send queue, acknowledged or not depending on whether the server's delayed
        # ACK has fired yet: the two readings may differ by that request's bytes in
        # send_queue_bytes{tcp,ipv4} and nowhere else. Retry the paired reading (bounded)
        # until netlink and procfs agree; any other difference fails at once.
        in_flight = ("netstat_sockets_send_queue_bytes", (("family", "ipv4"), ("protocol", "tcp")))
        deadline = time.monotonic() + 20
        while True:
            a, (b_samples,) = compare(m, lambda: sockets_only(a_c.get()), [b_c.get])
            b = sockets_only(b_samples)
            # /proc/net/tcp cannot see bound-but-idle sockets, which netlink reports as close.
            closed = ("netstat_sockets",
                      (("family", "ipv4"), ("protocol", "tcp"), ("state", "close")))
            a[closed] -= BOUND_IDLE if kernel_at_least(6, 5) else 0
            assert set(b) <= set(a)
            differ = {k for k in b if a[k] != b[k]}
            if not differ or differ != {in_flight} or time.monotonic() > deadline:
                break
            # A request line and three headers, not a whole response or a lost count.
            assert abs(a[in_flight] - b[in_flight]) < 200, (a[in_flight], b[in_flight])
    assert {k: a[k] for k in b} == b
    assert value(b_samples, "netstat_sockets_source_info", protocol="tcp", source="procfs") == 1


def test_psutil_source_agrees_with_ss(hosts: NetNS) -> None:
    """The reader for other operating systems, run here where ss can check it: TCP and UDP
    states per family (psutil has no queue bytes and no unix socket states)."""
    m = hosts

    def read_ss():
        return {(p, f): ss_counts(m, flag, fflag)[0] for p, flag in (("tcp", "-t"), ("udp", "-u"))
                for f, fflag in (("ipv4", "-4"), ("ipv6", "-6"))}

    with running_exporter("--collector.disable-defaults", "--collector.sockets",
                          "--collector.sockets.source=psutil", netns=m.name) as ex:
        want, (ours,) = compare(m, read_ss, [KeepAlive(m, ex.port).get])
    assert value(ours, "netstat_sockets_source_info", protocol="tcp", source="psutil") == 1
    for (proto, fam), states in want.items():
        names = SS_STATE if proto == "tcp" else {"ESTAB": "established", "UNCONN": "unconnected"}
        for ss_name, name in names.items():
            assert value(ours, "netstat_sockets", protocol=proto, family=fam, state=name) \
                == states[ss_name], (proto, fam, name)
    assert not select(ours, "netstat_sockets_receive_queue_bytes")
    assert not select(ours, "netstat_sockets_unix")


def ss_listeners(m: NetNS) -> set:
    """(protocol, family, address, port, program) of every listening socket, as `ss -tlnp` and
    `ss -ulnp` show them (program: the holder's 15-character command name)."""
    out = set()
    for proto, flag in (("tcp", "-tlnpH"), ("udp", "-ulnpH")):
        for line in m.run("ss", flag).splitlines():
            f = line.split()
            addr, _, port = f[3].rpartition(":")
            addr = addr.strip("[]").split("%")[0]
            prog = line.split('users:(("', 1)[1].split('"', 1)[0] if "users:" in line else ""
            out.add((proto, "ipv6" if ":" in addr else "ipv4", addr, int(port), prog))
    return out


def test_portable_platform_agrees_with_ss_and_proc_net_dev(hosts: NetNS) -> None:
    """--platform=portable, what Windows and macOS run (psutil alone), on this host where ss
    and /proc/net/dev can check it: TCP and UDP states per family, every listener with the
    program `ss -p` names, and each interface's counters."""
    from exporter.procfs.netdev import parse_netdev

    m = hosts

    def read_ss():
        return {(p, f): ss_counts(m, flag, fflag)[0] for p, flag in (("tcp", "-t"), ("udp", "-u"))
                for f, fflag in (("ipv4", "-4"), ("ipv6", "-6"))}

    def netdev():
        return parse_netdev(m.run("cat", "/proc/net/dev"), "/proc/net/dev")

    with running_exporter("--platform=portable", netns=m.name) as ex:
        scrape = KeepAlive(m, ex.port)
        dev_before = netdev()
        want, (ours,) = compare(m, read_ss, [scrape.get])
        dev_after = netdev()
        want_listeners = ss_listeners(m)
    ran = {s[1]["collector"] for s in select(ours, "netstat_exporter_collector_success")}
    assert ran == {"sockets", "listeners", "interfaces"}
    assert all(s[2] == 1 for s in select(ours, "netstat_exporter_collector_success"))
    for (proto, fam), states in want.items():
        names = SS_STATE if proto == "tcp" else {"ESTAB": "established", "UNCONN": "unconnected"}
        for ss_name, name in names.items():
            assert value(ours, "netstat_sockets", protocol=proto, family=fam, state=name) \
                == states[ss_name], (proto, fam, name)
    got = {(lb["protocol"], lb["family"], lb["address"], int(lb["port"]), lb["process"])
           for _, lb, _ in select(ours, "netstat_listener_info")}
    # psutil names a program by its whole name where the kernel's comm is cut at 15 characters.
    assert {x[:4] for x in got} == {x[:4] for x in want_listeners}
    for x in want_listeners:
        assert any(g[:4] == x[:4] and g[4].startswith(x[4]) for g in got), x
    assert sum(1 for x in got if x[3] == 7000) == 1
    for dev, cols in dev_after.items():
        for col in ("receive_bytes", "receive_packets", "receive_errs", "receive_drop",
                    "transmit_bytes", "transmit_packets", "transmit_errs", "transmit_drop"):
            metric = "netstat_interface_" + col.replace("_errs", "_errors") + "_total"
            v = value(ours, metric, device=dev)
            assert v is not None and dev_before[dev][col] <= v <= cols[col], (dev, col)
        assert value(ours, "netstat_interface_up", device=dev) is not None


UNIX_QUEUES = r"""
import json, socket, sys
keep = []
lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
lst.bind("\0netstat-exporter-unix-queues"); lst.listen(8); keep.append(lst)
for _ in range(3):  # waiting in the accept queue: the listener's RQLEN is that queue
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect("\0netstat-exporter-unix-queues"); keep.append(c)
for i in range(40):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM if i % 2 else socket.SOCK_DGRAM)
    if i % 3 == 0:
        a.send(b"x" * (100 + i))  # left unread in b's receive queue
    keep += [a, b]
print(json.dumps({}), flush=True)
sys.stdin.read()
"""


@needs_root
def test_unix_queue_bytes_match_ss() -> None:
    """Unix sockets in bulk (many messages of one length in a chunk, the SHUTDOWN attribute
    after RQLEN): counts and queue bytes of non-listeners agree with ss -xan."""
    with netns("unixq") as ns:
        holder = Holder(ns, UNIX_QUEUES)
        try:
            lines = [ln.split() for ln in run(ns, "ss", "-xanH").splitlines()]
            ours = dump(ns, "--collector.disable-defaults", "--collector.sockets")
        finally:
            holder.close()
    rq = sum(int(f[2]) for f in lines if f[1] != "LISTEN")
    wq = sum(int(f[3]) for f in lines if f[1] != "LISTEN")
    assert rq == sum(100 + i for i in range(0, 40, 3)) and len(lines) == 84
    assert value(ours, "netstat_sockets_receive_queue_bytes", protocol="unix") == rq
    assert value(ours, "netstat_sockets_send_queue_bytes", protocol="unix") == wq
    assert sum(v for _n, _l, v in select(ours, "netstat_sockets_unix")) == len(lines)
