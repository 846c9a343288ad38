"""The tcpevents collector against the kernel: TCP traffic this test makes in network
namespaces of its own, counted by the real exporter (run in one of them) and compared with what
the test made, by port, and with the namespaces' own `netstat -s` counters.

Two namespaces joined by a veth pair: ``srv`` (the exporter and the test's listeners) and
``cli`` (the clients), plus ``pod``, a third one that only talks to itself, for the host view
(the tracepoints fire in every namespace, so its events count too). Retransmissions come from
a neighbour entry the test points at a MAC address nobody has, so segments leave and are lost.

The programs count the whole host, and other test runs may share it: each run takes a block of
ports of its own (from its process id, below the ephemeral range), and every exact comparison
is made on the run's own ports: the transition matrix through the same programs loaded by the
test with a filter on that block, the per-port counts through the exporter (its per-port map
made large enough for the whole host's ports, so other runs cannot crowd the test's out).
"""

from __future__ import annotations

import errno
import http.client
import os
import signal
import socket
import struct
import subprocess
import sys
from collections import Counter
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest
from helpers import ROOT, exporter_cmd, parse, poll, run_cli, running_exporter, select, value
from kernel_trace import KernelTrace
from nshelpers import NetNS, veth

from exporter.bpf import syscalls as sc
from exporter.bpf.tcpevents import KINDS, SIDE_UNKNOWN, TcpEvents

# serial: the BPF programs count every TCP event of the host, other tests' included.
pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and BPF"),
              pytest.mark.serial]

SRV, CLI, LOST = "10.232.0.1", "10.232.0.2", "10.232.0.3"
# This run's ports: a block of 40 from the process id, within 20000-29999 (below the ephemeral
# range, and apart from the fixed ports other tests listen on), so that runs sharing the host
# do not count each other's traffic.
BASE = 20000 + os.getpid() % 250 * 40
P_CONN, P_REFUSED, P_RESET, P_SYN_LOST, P_DATA_LOST, P_POD, P_POD_LATE = (
    BASE + i for i in (1, 2, 3, 4, 5, 7, 8))
OVERFLOW_PORTS = range(BASE + 10, BASE + 30)
BTF_PORTS = (BASE + 30, BASE + 39)
# The exporter's per-port map: room for every service port of a busy shared host (a benchmark
# alone makes 2,000 keys), where the default 2,048 could overflow with other runs' ports.
MAX_PORTS = 65536
ALL_PORTS = (P_CONN, P_REFUSED, P_RESET, P_SYN_LOST, P_DATA_LOST, P_POD, P_POD_LATE)
N, M, K, PODN = 12, 7, 5, 4
NOWHERE_MAC = "02:00:00:00:00:09"

TCP_INFO = 11
STATES = {1: "established", 2: "syn_sent", 3: "syn_recv", 4: "fin_wait1", 5: "fin_wait2",
          7: "close", 8: "close_wait", 9: "last_ack", 10: "listen"}


def tcp_state(s: socket.socket) -> int:
    return s.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 8)[0]


def total_retrans(s: socket.socket) -> int:
    """struct tcp_info's tcpi_total_retrans (after 8 bytes of flags, the 24th __u32)."""
    return int(struct.unpack_from("=I", s.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 104), 100)[0])


def wait_retransmits(s: socket.socket, n: int, what: str) -> None:
    poll(lambda: total_retrans(s) >= n, timeout=15, interval=0.01,
         what=f"{what} to be sent {n} times again")


def wait_state(s: socket.socket, state: int, what: str) -> None:
    poll(lambda: tcp_state(s) == state, timeout=10, interval=0.005,
         what=f"{what} to reach {STATES[state]}")


def snmp_tcp(ns: NetNS) -> Dict[str, int]:
    lines = [ln.split() for ln in ns.run("cat", "/proc/net/snmp").splitlines()
             if ln.startswith("Tcp:")]
    return dict(zip(lines[0][1:], map(int, lines[1][1:])))


class Scraper:
    """One HTTP/1.1 connection to the exporter, made inside its namespace and kept."""

    def __init__(self, ns: NetNS, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        ns.call(self.conn.connect)

    def get(self) -> List:
        self.conn.request("GET", "/metrics")
        r = self.conn.getresponse()
        body = r.read()
        assert r.status == 200, body[:300]
        return parse(body.decode())

    def close(self) -> None:
        self.conn.close()


def transitions(samples) -> Counter:
    return Counter({(lbl["from"], lbl["to"]): v
                    for _, lbl, v in select(samples, "netstat_tcpevents_transitions_total")})


def port_events(samples) -> Dict[Tuple[str, str, str], float]:
    return {(lbl["port"], lbl["side"], lbl["event"]): v
            for _, lbl, v in select(samples, "netstat_tcpevents_port_events_total")}


@pytest.fixture(scope="module")
def net() -> Iterator[Tuple[NetNS, NetNS, NetNS]]:
    with NetNS("tev-srv") as srv, NetNS("tev-cli") as cli, NetNS("tev-pod") as pod:
        veth(srv, cli, f"{SRV}/24", f"{CLI}/24")
        srv.ip("addr", "add", f"{LOST}/32", "dev", srv_dev(srv))
        dev = cli_dev(cli)
        cli.ip("route", "add", f"{LOST}/32", "dev", dev)
        # Whatever cli sends to LOST goes to a MAC address nobody has: lost on the wire.
        cli.ip("neigh", "replace", LOST, "lladdr", NOWHERE_MAC, "dev", dev, "nud", "permanent")
        yield srv, cli, pod


def srv_dev(ns: NetNS) -> str:
    return ns.ip("-o", "link", "show", "type", "veth").split(":")[1].strip().split("@")[0]


cli_dev = srv_dev


def listener(ns: NetNS, addr: str, port: int) -> socket.socket:
    def make() -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        s.listen(128)
        return s
    return ns.call(make)


def sock_in(ns: NetNS) -> socket.socket:
    return ns.call(socket.socket)


def close_first(c: socket.socket, s: socket.socket) -> None:
    """The client closes first, each step waited for, so the transitions are fixed: client
    established->fin_wait1->fin_wait2->close (TIME_WAIT), server established->close_wait->
    last_ack->close."""
    c.shutdown(socket.SHUT_WR)
    assert s.recv(10) == b""
    wait_state(c, 5, "client")
    s.close()
    wait_state(c, 7, "client")
    c.close()


def run_traffic(srv: NetNS, cli: NetNS, pod: NetNS, pod_listener: socket.socket,
                clients: Set[int]) -> Tuple[Counter, Dict[Tuple[str, str, str], int]]:
    """Make the test's traffic; return the transitions and per-port events it made, and add
    to ``clients`` the ephemeral ports its connected clients had."""
    tr: Counter = Counter()
    ev: Counter = Counter()
    listeners = {p: listener(srv, "0.0.0.0", p) for p in (P_CONN, P_RESET, P_DATA_LOST)}
    tr[("close", "listen")] += 3
    server_side = [("listen", "syn_recv"), ("syn_recv", "established")]
    client_side = [("close", "syn_sent"), ("syn_sent", "established")]

    def count(port: int, n: int, *events: Tuple[str, str]) -> None:
        """``n`` more of each (side, event) of ``port``."""
        ev.update({(str(port), side, event): n for side, event in events})

    def closed_by_client(port: int, n: int) -> None:
        """What n connections to ``port`` count, each ended by :func:`close_first`."""
        tr.update({k: n for k in server_side + client_side + [
            ("established", "fin_wait1"), ("fin_wait1", "fin_wait2"), ("fin_wait2", "close"),
            ("established", "close_wait"), ("close_wait", "last_ack"), ("last_ack", "close")]})
        count(port, n, ("local", "established"), ("local", "peer_close"), ("remote", "established"))

    # N connections, the client closing first.
    for _ in range(N):
        c = sock_in(cli)
        c.connect((SRV, P_CONN))
        clients.add(c.getsockname()[1])
        s, _ = listeners[P_CONN].accept()
        close_first(c, s)
    closed_by_client(P_CONN, N)

    # M connects refused by a closed port: the server's kernel answers with a reset for no
    # socket (counted on the port asked for), the client receives it and fails.
    for _ in range(M):
        c = sock_in(cli)
        assert c.connect_ex((SRV, P_REFUSED)) == errno.ECONNREFUSED
        c.close()
    tr.update({("close", "syn_sent"): M, ("syn_sent", "close"): M})
    count(P_REFUSED, M, ("local", "reset_sent"), ("remote", "reset_received"),
          ("remote", "connect_failed"))

    # K resets: the client closes with SO_LINGER 0.
    for _ in range(K):
        c = sock_in(cli)
        c.connect((SRV, P_RESET))
        clients.add(c.getsockname()[1])
        s, _ = listeners[P_RESET].accept()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        wait_state(s, 7, "server after the reset")
        s.close()
    tr.update({k: K for k in server_side + client_side})
    tr[("established", "close")] += 2 * K
    count(P_RESET, K, ("local", "established"), ("local", "reset_received"),
          ("remote", "established"), ("remote", "reset_sent"))

    # A SYN lost on the wire, retransmitted until the client gives up.
    c = sock_in(cli)
    c.setblocking(False)
    assert c.connect_ex((LOST, P_SYN_LOST)) == errno.EINPROGRESS
    clients.add(c.getsockname()[1])
    wait_retransmits(c, 2, "the SYN")  # after 1 s and 3 s
    c.close()
    tr.update({("close", "syn_sent"): 1, ("syn_sent", "close"): 1})
    count(P_SYN_LOST, 1, ("remote", "connect_failed"))

    # Data lost on the wire: established first, then the path breaks, then heals.
    dev = cli_dev(cli)
    cli.ip("neigh", "replace", LOST, "lladdr", srv.run(
        "cat", f"/sys/class/net/{srv_dev(srv)}/address").strip(), "dev", dev, "nud", "permanent")
    c = sock_in(cli)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.connect((LOST, P_DATA_LOST))
    clients.add(c.getsockname()[1])
    s, _ = listeners[P_DATA_LOST].accept()
    cli.ip("neigh", "replace", LOST, "lladdr", NOWHERE_MAC, "dev", dev, "nud", "permanent")
    c.sendall(b"x" * 100)
    wait_retransmits(c, 2, "the data")  # after 0.2 s and 0.6 s
    cli.ip("neigh", "replace", LOST, "lladdr", srv.run(
        "cat", f"/sys/class/net/{srv_dev(srv)}/address").strip(), "dev", dev, "nud", "permanent")
    s.settimeout(15)
    got = b""
    while len(got) < 100:
        got += s.recv(100)
    close_first(c, s)
    cli.ip("neigh", "replace", LOST, "lladdr", NOWHERE_MAC, "dev", dev, "nud", "permanent")
    closed_by_client(P_DATA_LOST, 1)

    # Another namespace, talking to itself over loopback: a listener that existed before the
    # exporter started (not in its snapshot) and one made after.
    late = listener(pod, "127.0.0.1", P_POD_LATE)
    tr[("close", "listen")] += 1
    for lst, port in ((pod_listener, P_POD), (late, P_POD_LATE)):
        for _ in range(PODN):
            c = sock_in(pod)
            c.connect(("127.0.0.1", port))
            clients.add(c.getsockname()[1])
            s, _ = lst.accept()
            close_first(c, s)
        closed_by_client(port, PODN)

    for s in list(listeners.values()) + [late]:
        s.close()
    tr[("listen", "close")] += 4
    return tr, dict(ev)


@pytest.fixture(scope="module")
def measured(net):
    srv, cli, pod = net
    pod_listener = listener(pod, "127.0.0.1", P_POD)  # before the exporter starts
    # The same programs, loaded by the test itself with a filter on the test's ports: the
    # exporter counts the whole host, where other processes may be making connections too.
    filtered = TcpEvents(only_ports=(min(ALL_PORTS), max(ALL_PORTS)))
    oracle = KernelTrace(min(ALL_PORTS), max(ALL_PORTS))
    try:
        with running_exporter("--collector.disable-defaults", "--collector.tcpevents",
                              f"--collector.tcpevents.max-ports={MAX_PORTS}",
                              "--collector.listeners", netns=srv.name) as ex:
            scraper = Scraper(srv, ex.port)
            try:
                oracle.start()
                before, f_before = scraper.get(), filtered.read()
                snmp_before = {ns.name: snmp_tcp(ns) for ns in (srv, cli)}
                clients: Set[int] = set()
                tr, ev = run_traffic(srv, cli, pod, pod_listener, clients)

                def settled():
                    r = filtered.read()
                    return r if named(r.transitions) - named(f_before.transitions) == tr else None

                try:
                    f_after = poll(settled, timeout=5, interval=0.2, what="transitions to settle")
                except AssertionError:
                    f_after = filtered.read()
                after = scraper.get()
                snmp_after = {ns.name: snmp_tcp(ns) for ns in (srv, cli)}
                oracle.stop()
                traced, trace_lost = oracle.matrix(), oracle.lost()
                unseen = oracle.unseen({os.getpid(), ex.proc.pid})
            finally:
                scraper.close()
                pod_listener.close()
    finally:
        filtered.close()
        oracle.close()
    yield {"before": before, "after": after, "transitions": tr, "events": ev, "clients": clients,
           "filtered": named(f_after.transitions) - named(f_before.transitions),
           "filtered_missed": f_after.missed - f_before.missed,
           "traced": traced, "trace_lost": trace_lost, "unseen": unseen,
           "snmp": (snmp_before, snmp_after), "srv": srv, "cli": cli, "log": ex.log}


def named(tr: Dict[Tuple[int, int], int]) -> Counter:
    from exporter.vocabulary.names import TCP_STATES
    return Counter({(TCP_STATES[a], TCP_STATES[b]): v for (a, b), v in tr.items()})


def test_the_kernels_own_trace_is_what_the_test_made(measured) -> None:
    """The oracle first: ftrace's record of the tracepoint, for the test's ports, whole."""
    assert measured["trace_lost"] == 0
    assert measured["traced"] == measured["transitions"]


def test_transition_matrix_is_what_the_test_made(measured) -> None:
    """Every transition counted, none twice. The only shortfall allowed is what the kernel did
    not run BPF programs for: runs it skipped and counted (recursion_misses), and hits the
    oracle saw ftrace record on top of another process's thread with no BPF run there."""
    got, want = measured["filtered"], measured["transitions"]
    unseen, where = measured["unseen"]
    short = sum((want - got).values())
    assert not got - want, f"counted twice or wrongly: {dict(got - want)}"
    assert short <= measured["filtered_missed"] + unseen, (
        f"missing: {dict(want - got)}; runs the kernel skipped: {measured['filtered_missed']}; "
        f"hits no BPF program ran for: {where}")
    if not measured["filtered_missed"] and not unseen:
        assert got == want


def test_the_exporters_host_wide_matrix_holds_the_tests_transitions(measured) -> None:
    """The exporter's own counts are host-wide: at least what the test made (anything else on
    the host adds to them)."""
    got = transitions(measured["after"]) - transitions(measured["before"])
    want = measured["transitions"]
    assert not want - got, dict(want - got)


def test_every_port_counter_is_what_the_test_made(measured) -> None:
    after, before = port_events(measured["after"]), port_events(measured["before"])
    ours = {str(p) for p in (P_CONN, P_REFUSED, P_RESET, P_SYN_LOST, P_DATA_LOST, P_POD,
                             P_POD_LATE)}
    got = Counter({k: v - before.get(k, 0) for k, v in after.items()
                   if k[0] in ours and k[2] != "retransmit" and v - before.get(k, 0)})
    want = Counter(measured["events"])
    assert not got - want, f"counted twice or wrongly: {dict(got - want)}"
    # As for the transition matrix: a transition the kernel ran no BPF program for (the
    # exporter's skipped runs are the whole host's) cannot be counted; resets are exact.
    missed = value(measured["after"], "netstat_tcpevents_missed_total") - value(
        measured["before"], "netstat_tcpevents_missed_total")
    short = want - got
    assert all(k[2] in ("established", "peer_close", "connect_failed") for k in short), short
    assert sum(short.values()) <= missed + measured["unseen"][0], (dict(short), missed,
                                                                   measured["unseen"])
    # Ephemeral ports never became labels: none of the ports the test's clients had. (A
    # listener's port in the ephemeral range is a label, side local; the rest of the host may
    # use other ranges, which is why only the test's own clients are looked at.)
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = map(int, f.read().split())
    clients = measured["clients"]
    assert clients and all(low <= p <= high for p in clients), clients
    assert not [k for k in after if k[0] != "ephemeral" and int(k[0]) in clients
                and k[1] != "local"]


def test_retransmits_by_port_equal_the_namespaces_counters(measured) -> None:
    after, before = port_events(measured["after"]), port_events(measured["before"])

    def rtx(port: int, side: str) -> float:
        k = (str(port), side, "retransmit")
        return after.get(k, 0) - before.get(k, 0)

    snmp_before, snmp_after = measured["snmp"]
    cli, srv = measured["cli"].name, measured["srv"].name
    cli_rtx = snmp_after[cli]["RetransSegs"] - snmp_before[cli]["RetransSegs"]
    srv_rtx = snmp_after[srv]["RetransSegs"] - snmp_before[srv]["RetransSegs"]
    assert rtx(P_SYN_LOST, "remote") >= 2  # SYN sent again after 1 s and 3 s
    assert rtx(P_DATA_LOST, "remote") >= 1
    assert rtx(P_SYN_LOST, "remote") + rtx(P_DATA_LOST, "remote") == cli_rtx
    assert rtx(P_DATA_LOST, "local") == srv_rtx


def test_resets_equal_the_namespaces_counters(measured) -> None:
    """`netstat -s` says how many resets each namespace sent (OutRsts), the exporter says by
    which port: the same totals."""
    after, before = port_events(measured["after"]), port_events(measured["before"])
    snmp_before, snmp_after = measured["snmp"]
    ours = {str(p) for p in ALL_PORTS}
    sent = sum(v - before.get(k, 0) for k, v in after.items()
               if k[2] == "reset_sent" and k[0] in ours)
    out_rsts = sum(snmp_after[n]["OutRsts"] - snmp_before[n]["OutRsts"] for n in snmp_after)
    assert sent == out_rsts == M + K


def test_no_overflow_and_the_log_is_quiet(measured) -> None:
    """Nothing was left out of the per-port map. The kernel's skipped runs
    (netstat_tcpevents_missed_total) are the whole host's, which another run's traffic can
    cause; that none of this test's events was skipped is what the exact counts by port of
    the other tests hold."""
    after = measured["after"]
    assert all(v == 0 for _, _, v in select(after, "netstat_tcpevents_port_overflow_total"))
    assert value(after, "netstat_tcpevents_ports_limit") == MAX_PORTS
    assert value(after, "netstat_tcpevents_missed_total") is not None
    assert value(after, "netstat_exporter_collector_success", collector="tcpevents") == 1
    assert "level=error" not in measured["log"]


def test_ports_join_listener_info(measured) -> None:
    """A local port's series has a netstat_listener_info series with the same port."""
    after = measured["after"]
    info_ports = {lbl["port"] for _, lbl, _ in select(after, "netstat_listener_info")}
    # The listeners were closed before the last scrape; the exporter's own port is there.
    local = {lbl["port"] for _, lbl, _ in select(after, "netstat_tcpevents_port_events_total",
                                                  side="local")}
    assert str(P_CONN) in local
    assert info_ports  # the join key exists on both sides
    assert all(p.isdigit() for p in info_ports)


# --- a small map: what does not fit is counted --------------------------------------------------


@pytest.mark.parametrize("told", [True, False], ids=["told-at-load", "not-told"])
def test_the_first_events_know_the_ephemeral_range(told: bool) -> None:
    """Programs told the listening ports and the ephemeral range before they attach classify
    their first event: a connection to a port that listened before they loaded, both ends
    ephemeral, is counted under no port at all. Not told (as when the exporter told them
    after attaching), its client's ephemeral port becomes a key."""
    eph = range(32768, 61000)  # a new namespace's ip_local_port_range
    port = 40000 + os.getpid() % 250 * 40 + 9  # this run's, inside the range
    with NetNS("tev-eph") as ns:
        lst = listener(ns, "127.0.0.1", port)
        ev = TcpEvents(only_ports=(port, port), ports=([], eph) if told else None)
        clients = []
        try:
            for _ in range(3):
                c = sock_in(ns)
                c.connect(("127.0.0.1", port))
                clients.append(c.getsockname()[1])
                s, _ = lst.accept()
                close_first(c, s)
            r = ev.read()
        finally:
            ev.close()
            lst.close()
    remote_clients = [k for k in r.ports if k[1] in clients]
    established = {k: v[KINDS.index("established")] for k, v in r.ports.items()}
    if told:
        assert not remote_clients, remote_clients
        assert established == {(SIDE_UNKNOWN, 0): 6}
    else:
        assert remote_clients


def test_a_full_map_counts_the_overflow() -> None:
    from exporter.bpf.tcpevents import KINDS, TcpEvents

    with NetNS("tev-ovf") as ns:
        # Only this run's ports enter the map: the rest of the host cannot fill it.
        ports = OVERFLOW_PORTS
        ev = TcpEvents(max_ports=16, only_ports=(ports[0], ports[-1]))
        try:
            first = ev.read()
            for p in ports:
                c = sock_in(ns)
                assert c.connect_ex(("127.0.0.1", p)) == errno.ECONNREFUSED
                c.close()
            r = ev.read()
        finally:
            ev.close()
    assert r.map_entries == 16
    counted = sum(sum(v) for (side, port), v in r.ports.items() if port in ports) - sum(
        sum(v) for (side, port), v in first.ports.items() if port in ports)
    overflow = sum(r.overflow) - sum(first.overflow)
    # Each refused connect: reset sent (local port), reset received and connect failed
    # (remote port): three events over two keys, 40 keys for 16 places.
    assert overflow > 0
    assert counted + overflow == 3 * len(ports)
    assert len(KINDS) == 6


# --- the program on the typed raw tracepoint counts what the classic one counts ---------------


def test_btf_and_classic_programs_count_the_same() -> None:
    """Both ways of attaching to inet_sock_set_state, loaded side by side over the same traffic:
    connections closed by either side, a refused connect, a listener opened and closed."""
    from exporter.bpf.tcpevents import (
        CONNECT_FAILED,
        ESTABLISHED,
        PEER_CLOSED,
        SIDE_LOCAL,
        SIDE_REMOTE,
        TcpEvents,
    )

    lo, hi = BTF_PORTS
    port, closed = lo + 1, lo + 2
    with NetNS("tev-btf") as ns:
        typed = TcpEvents(only_ports=(lo, hi))
        classic = TcpEvents(only_ports=(lo, hi), btf_path=None)
        try:
            assert (typed.set_state_mode, classic.set_state_mode) == ("btf", "classic")
            for ev in (typed, classic):
                ev.set_ports([], range(32768, 61000))
            first = {"btf": typed.read(), "classic": classic.read()}
            lst = listener(ns, "127.0.0.1", port)
            for i in range(6):
                c = sock_in(ns)
                c.connect(("127.0.0.1", port))
                s, _ = lst.accept()
                if i % 2:
                    close_first(c, s)
                else:
                    close_first(s, c)
            c = sock_in(ns)
            assert c.connect_ex(("127.0.0.1", closed)) == errno.ECONNREFUSED
            c.close()
            lst.close()

            def delta(ev: TcpEvents, name: str) -> Tuple[Counter, Dict]:
                r, f = ev.read(), first[name]
                tr = Counter(r.transitions)
                tr.subtract(f.transitions)
                ports = {k: tuple(a - b for a, b in zip(v, f.ports.get(k, (0,) * len(v))))
                         for k, v in r.ports.items()}
                return +tr, {k: v for k, v in ports.items() if any(v)}

            def settled():
                a, b = delta(typed, "btf"), delta(classic, "classic")
                return a if a == b and a[0][(9, 7)] == 6 else None  # every last_ack->close

            tr, ports = poll(settled, timeout=10, interval=0.05,
                             what="both programs to count the same")
        finally:
            typed.close()
            classic.close()
    assert tr[(2, 1)] == tr[(3, 1)] == 6 and tr[(2, 7)] == 1
    assert tr[(7, 10)] == tr[(10, 7)] == 1
    local, remote = ports[(SIDE_LOCAL, port)], ports[(SIDE_REMOTE, port)]
    assert local[ESTABLISHED] == remote[ESTABLISHED] == 6
    assert local[PEER_CLOSED] == remote[PEER_CLOSED] == 3  # each side closed first 3 times
    assert ports[(SIDE_REMOTE, closed)][CONNECT_FAILED] == 1


# --- safety: capabilities, tracefs, nothing left behind ----------------------------------------


def _dump_lines(r: subprocess.CompletedProcess) -> List[str]:
    return [ln for ln in r.stderr.splitlines() if "tcpevents" in ln]


def _others_succeed(stdout: str) -> None:
    samples = parse(stdout)
    ok = {lbl["collector"]: v for _, lbl, v in select(samples,
                                                      "netstat_exporter_collector_success")}
    assert ok.pop("tcpevents") == 0
    assert ok and all(v == 1 for v in ok.values()), ok


def test_without_capabilities_one_line_and_others_succeed() -> None:
    drop = ["setpriv", "--inh-caps=-bpf,-perfmon,-sys_admin",
            "--bounding-set=-bpf,-perfmon,-sys_admin"]
    r = run_cli("--collector.tcpevents", "dump", prefix=drop)
    assert r.returncode == 0, r.stderr
    lines = _dump_lines(r)
    assert len(lines) == 1, r.stderr
    assert "CAP_BPF and CAP_PERFMON" in lines[0]
    _others_succeed(r.stdout)


def test_as_nobody_one_line_names_everything_missing() -> None:
    nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
              "--inh-caps=-all", "--bounding-set=-all"]
    r = run_cli("--collector.tcpevents", "dump", prefix=nobody)
    assert r.returncode == 0, r.stderr
    lines = _dump_lines(r)
    assert len(lines) == 1, r.stderr
    assert "CAP_BPF and CAP_PERFMON" in lines[0] and "tracefs" in lines[0]


def test_with_the_capabilities_alone_it_works_unprivileged() -> None:
    caps = "+bpf,+perfmon,+dac_read_search"
    r = run_cli("--collector.tcpevents", "dump", prefix=[
        "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
        f"--inh-caps={caps}", f"--ambient-caps={caps}"])
    assert r.returncode == 0, r.stderr
    assert value(parse(r.stdout), "netstat_exporter_collector_success",
                 collector="tcpevents") == 1, r.stderr


def _without_tracefs(*inner: str) -> List[str]:
    """A command run in a mount namespace of its own where tracefs (and debugfs) are
    unmounted; the host's mounts are not touched."""
    script = ("umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing "
              "2>/dev/null; umount /sys/kernel/debug 2>/dev/null; exec \"$@\"")
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *inner]


def test_without_tracefs_one_line_and_others_succeed() -> None:
    drop = ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin"]
    r = run_cli("--collector.tcpevents", "dump", prefix=_without_tracefs(*drop))
    assert r.returncode == 0, r.stderr
    lines = _dump_lines(r)
    assert len(lines) == 1, r.stderr
    assert "tracefs is not mounted" in lines[0] and "mount -t tracefs" in lines[0]
    _others_succeed(r.stdout)


def test_mounts_tracefs_itself_when_it_may() -> None:
    r = run_cli("--collector.tcpevents", "dump", prefix=_without_tracefs())
    assert r.returncode == 0, r.stderr
    assert value(parse(r.stdout), "netstat_exporter_collector_success",
                 collector="tcpevents") == 1, r.stderr


def own_prog_ids(pid: int) -> List[int]:
    ids = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        info = sc.fdinfo(int(fd), str(pid))
        if "prog_id" in info:
            ids.append(int(info["prog_id"]))
    return ids


def loaded_prog_ids() -> List[int]:
    return sc.prog_ids()


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_exit_leaves_no_program_loaded(how: str) -> None:
    env = dict(os.environ, PYTHONPATH=ROOT)
    from helpers import free_port
    port = free_port()
    proc = subprocess.Popen(exporter_cmd(f"--web.listen-address=127.0.0.1:{port}",
                                         "--collector.disable-defaults", "--collector.tcpevents"),
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        # The collectors are made before the port is bound: once it accepts connections, its
        # five programs (four where the kernel has no tcp_retransmit_synack) are all loaded.
        def listening() -> bool:
            assert proc.poll() is None, "the exporter exited"
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return True

        poll(listening, timeout=20, what="the exporter to listen")
        ids = own_prog_ids(proc.pid)
        assert len(ids) >= 4, ids
        assert set(ids) <= set(loaded_prog_ids())
        bpftool_ids: Optional[set] = None
        if have_bpftool():
            bpftool_ids = bpftool_prog_ids()
            assert set(ids) <= bpftool_ids
        proc.send_signal(signal.SIGTERM if how == "SIGTERM" else signal.SIGKILL)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    poll(lambda: not set(ids) & set(loaded_prog_ids()), timeout=20,
         what="the programs to be unloaded")
    if bpftool_ids is not None:
        assert not set(ids) & bpftool_prog_ids()


def have_bpftool() -> bool:
    import shutil
    return shutil.which("bpftool") is not None


def bpftool_prog_ids() -> set:
    import json
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return {p["id"] for p in json.loads(out or "[]")}


def test_dump_loads_and_unloads(tmp_path) -> None:
    """A one-shot dump loads the programs and leaves none behind when it exits."""
    before = set(loaded_prog_ids())
    r = run_cli("--collector.disable-defaults", "--collector.tcpevents", "dump")
    assert r.returncode == 0, r.stderr
    assert value(parse(r.stdout), "netstat_tcpevents_ports_limit") == 2048
    poll(lambda: set(loaded_prog_ids()) <= before | set(), timeout=20,
         what="no program of the dump left")
    assert sys.executable
