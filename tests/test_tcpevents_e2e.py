"""End to end for the tcpevents collector: the real exporter (``--collector.tcpevents``, and the
listeners collector its series join) and a real Prometheus, both in a network namespace of the
test's own, with the shipped rule files (the alerts' ``for`` taken out of the generated YAML, as
tests/test_dashboards.py does). A second namespace, joined by a veth pair, makes the traffic:
connections to a listener that the server aborts (resets sent), connects refused by a closed
port (resets, failed connects), and connections whose server's data is lost on the wire for a
while (retransmits; the client closes first, a peer close for the server). Every query of the
Listeners dashboard's "TCP events" row, as generated, must return the series of the ports the
test used, at the rate the test made, and NetstatServiceResetsHigh and
NetstatServiceRetransmitsHigh must fire for them, joined to the listener's process where there
is a listener.

The programs count the whole host (the tracepoints fire in every namespace), so the test looks
at its own ports only and asserts at least what it made there.
"""

from __future__ import annotations

import errno
import math
import os
import re
import socket
import struct
from contextlib import ExitStack
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from alertrules import load_generator
from helpers import http_get, poll, running_exporter
from nshelpers import NetNS, veth
from test_alerts_e2e import _comm
from test_dashboards import Prometheus, load, needs_prometheus, panels, substitute
from test_tcpevents_live import NOWHERE_MAC, listener, snmp_tcp, srv_dev

from exporter.bpf.tcpevents import LoadError, TcpEvents

# serial: the row's rates are read within one $__rate_interval of the traffic, and its
# transitions panel is the host's top ten.
pytestmark = [pytest.mark.root, needs_prometheus, pytest.mark.serial,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and BPF")]

SRV, CLI = "10.233.0.1", "10.233.0.2"
# Below the ephemeral range, and apart from test_tcpevents_live.py's 7401-7408.
P_SVC, P_CLOSED, P_LOSSY = 7421, 7422, 7423
JOB = "netstat"
ROW = "TCP events"

gen = load_generator()
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def seconds(duration: str) -> float:
    """A Prometheus duration (``5m``, ``1h30m``) in seconds."""
    parts = re.findall(r"(\d+)(ms|[smhdwy])", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * _UNITS[u] for n, u in parts)


# The shipped rules rate over rate_window; a counter that rose by n between two samples inside
# the window gives a rate() of at least n / window (extrapolation only widens the increase).
# So this many events within a window put a port over the shipped thresholds, a fifth above.
WINDOW = seconds(gen.DEFAULTS["rate_window"])
RESETS = math.ceil(float(gen.DEFAULTS["service_resets_max"]) * WINDOW * 1.2)
RETRANSMITS = math.ceil(float(gen.DEFAULTS["service_retransmit_min_rate"]) * WINDOW * 1.2)
# Each lossy connection retransmits its data after about 0.2 s and 0.6 s (RTO backoff), so
# this many connections make RETRANSMITS within a second: retransmits per connection
# established stay well above the ratio of the alert.
LOSSY = math.ceil(RETRANSMITS / 2)
assert float(gen.DEFAULTS["service_retransmit_ratio"]) < RETRANSMITS / LOSSY


def bpf_or_skip() -> None:
    """Skip only where the programs cannot be loaded at all, with the kernel's reason."""
    try:
        TcpEvents(max_ports=16).close()
    except LoadError as e:
        pytest.skip(f"the tcpevents programs cannot be loaded here: {e}")


# --- the traffic, made from the client namespace ---------------------------------------------

def aborted(svc: socket.socket, n: int) -> None:
    """n connections to ``svc`` that the server aborts (SO_LINGER 0): a reset sent on the
    listener's port, received by the client."""
    for _ in range(n):
        c = socket.create_connection((SRV, P_SVC), timeout=10)
        s, _ = svc.accept()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        c.close()


def refused(n: int) -> None:
    """n connects to a port nobody listens on: a reset sent for no socket, a failed connect."""
    for _ in range(n):
        with socket.socket() as c:
            assert c.connect_ex((SRV, P_CLOSED)) == errno.ECONNREFUSED


def connected(lossy: socket.socket, n: int) -> List[Tuple[socket.socket, socket.socket]]:
    pairs = []
    for _ in range(n):
        c = socket.create_connection((SRV, P_LOSSY), timeout=10)
        pairs.append((c, lossy.accept()[0]))
    return pairs


def lose_server_data(srv: NetNS, cli: NetNS, pairs: List[Tuple[socket.socket, socket.socket]],
                     at_least: int) -> None:
    """Point the server's neighbour entry for the client at a MAC address nobody has, so that
    what the servers send is lost; each sends a little, until the server namespace has
    retransmitted ``at_least`` segments; then heal the path, and let the clients close first
    once the data arrived."""
    dev = srv_dev(srv)
    before = snmp_tcp(srv)["RetransSegs"]
    srv.ip("neigh", "replace", CLI, "lladdr", NOWHERE_MAC, "dev", dev, "nud", "permanent")
    try:
        for _, s in pairs:
            s.sendall(b"x" * 100)
        poll(lambda: snmp_tcp(srv)["RetransSegs"] - before >= at_least, timeout=15,
             interval=0.1, what=f"{at_least} retransmitted segments")
    finally:
        mac = cli.run("cat", f"/sys/class/net/{srv_dev(cli)}/address").strip()
        srv.ip("neigh", "replace", CLI, "lladdr", mac, "dev", dev, "nud", "permanent")
    for c, _ in pairs:
        c.settimeout(15)
        got = b""
        while len(got) < 100:  # bounded by the timeout: the data comes at the next retransmit
            chunk = c.recv(100 - len(got))
            assert chunk, "the connection closed before the data arrived"
            got += chunk
        c.close()  # the client first: the server's side goes to CLOSE_WAIT
    for _, s in pairs:
        s.settimeout(15)
        assert s.recv(10) == b""
        s.close()


def traffic(srv: NetNS, cli: NetNS, svc: socket.socket, lossy: socket.socket, resets: int,
            retransmits: int) -> None:
    cli.call(aborted, svc, resets)
    cli.call(refused, resets)
    pairs = cli.call(connected, lossy, math.ceil(retransmits / 2))
    lose_server_data(srv, cli, pairs, retransmits)


# --- what the test expects --------------------------------------------------------------------

def expected(proc: str) -> Dict[str, Dict[Tuple[str, ...], int]]:
    """The series each panel of the row must show for the test's ports, by panel title: the
    labels its query keeps (KEPT), and how many events of it the big round makes. The state
    transitions are the host's top ten: those of the test's thousands of connects."""
    svc, lossy = f"{P_SVC} {proc}", f"{P_LOSSY} {proc}"
    return {
        "Events per listening port": {
            (svc, "reset_sent"): RESETS, (svc, "established"): RESETS,
            (lossy, "retransmit"): RETRANSMITS, (lossy, "established"): LOSSY,
            (lossy, "peer_close"): LOSSY, (str(P_CLOSED), "reset_sent"): RESETS},
        "Retransmits per port": {("local", str(P_LOSSY)): RETRANSMITS},
        "Resets per port": {
            ("local", str(P_SVC), "reset_sent"): RESETS,
            ("remote", str(P_SVC), "reset_received"): RESETS,
            ("local", str(P_CLOSED), "reset_sent"): RESETS,
            ("remote", str(P_CLOSED), "reset_received"): RESETS},
        "Failed connects and peer closes": {
            ("remote", str(P_CLOSED), "connect_failed"): RESETS,
            ("local", str(P_LOSSY), "peer_close"): LOSSY},
        "State transitions": {("syn_sent", "close"): RESETS,
                              ("listen", "syn_recv"): RESETS + LOSSY},
    }


# The raw series the traffic makes on the test's ports: (side, port, event).
RAW = {("local", str(P_SVC), "reset_sent"), ("remote", str(P_SVC), "reset_received"),
       ("local", str(P_SVC), "established"), ("local", str(P_CLOSED), "reset_sent"),
       ("remote", str(P_CLOSED), "reset_received"), ("remote", str(P_CLOSED), "connect_failed"),
       ("local", str(P_LOSSY), "retransmit"), ("local", str(P_LOSSY), "established"),
       ("local", str(P_LOSSY), "peer_close")}

KEPT = {  # the labels each panel's query keeps, in the order of expected()'s keys
    "Events per listening port": ("service", "event"),
    "Retransmits per port": ("side", "port"),
    "Resets per port": ("side", "port", "event"),
    "Failed connects and peer closes": ("side", "port", "event"),
    "State transitions": ("from", "to"),
}


def row_targets() -> List[Tuple[str, Dict[str, Any]]]:
    """(panel title, target) of every query in the "TCP events" row of the generated
    Listeners dashboard."""
    out, inside = [], False
    for p in panels(load("netstat-listeners.json")):
        if p["type"] == "row":
            inside = p["title"] == ROW
            continue
        if inside:
            out.extend((p["title"], t) for t in p.get("targets", []))
    return out


# --- the stack -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory: Any) -> Iterator[Dict[str, Any]]:
    bpf_or_skip()
    tmp = str(tmp_path_factory.mktemp("tcpevents-e2e"))
    with ExitStack() as es:
        srv = es.enter_context(NetNS("tev-e2e-srv"))
        cli = es.enter_context(NetNS("tev-e2e-cli"))
        veth(srv, cli, f"{SRV}/24", f"{CLI}/24")
        svc, lossy = listener(srv, SRV, P_SVC), listener(srv, SRV, P_LOSSY)
        es.callback(svc.close)
        es.callback(lossy.close)
        ex = es.enter_context(running_exporter("--collector.disable-defaults",
                                               "--collector.tcpevents", "--collector.listeners",
                                               netns=srv.name))
        instance = f"127.0.0.1:{ex.port}"

        def get(url: str) -> Tuple[int, bytes]:  # Prometheus listens in the server namespace
            status, _, body = srv.call(http_get, url, timeout=10)
            return status, body

        prom = Prometheus([instance], tmp, netns=srv.name, get=get)
        es.callback(prom.close)
        poll(prom.ready, timeout=30, interval=0.2, what="prometheus to be ready")
        poll(lambda: prom.query(f'netstat_exporter_collector_success{{job="{JOB}", '
                                'collector="tcpevents"}', True), timeout=20, interval=0.2,
             what="a scrape of the exporter")
        ok = prom.query('netstat_exporter_collector_success{collector="tcpevents"}', True)
        assert ok[0]["value"][1] == "1", ex.get("/metrics")[2].decode()[-2000:]

        # A first, small round: every series exists, and is scraped, before the big round,
        # so that rate() sees the big round as an increase from a first sample.
        traffic(srv, cli, svc, lossy, 1, 2)

        def scraped() -> bool:
            rows = prom.query(f'netstat_tcpevents_port_events_total{{job="{JOB}", '
                              f'port=~"{P_SVC}|{P_CLOSED}|{P_LOSSY}"}}', True)
            return {(r["metric"]["side"], r["metric"]["port"], r["metric"]["event"])
                    for r in rows} >= RAW

        poll(scraped, timeout=20, interval=0.2, what="the first round's series to be scraped")
        traffic(srv, cli, svc, lossy, RESETS, RETRANSMITS)
        yield {"prom": prom, "instance": instance, "proc": _comm()}


def test_every_query_of_the_row_shows_the_tests_ports_at_their_rate(stack) -> None:
    prom, instance, proc = stack["prom"], stack["instance"], stack["proc"]
    want = expected(proc)
    targets = row_targets()
    assert sorted(title for title, _ in targets) == sorted(want), "a panel of the row unchecked"
    # Grafana's rate interval as substituted: the big round lies within one such window, so
    # each of its series' rates reaches what the test made over that window.
    window = seconds(substitute("$__rate_interval", JOB, instance))

    def shown() -> Dict[str, Dict[Tuple[str, ...], float]]:
        out = {}
        for title, t in targets:
            rows = prom.query(substitute(t["expr"], JOB, instance), bool(t.get("instant")))
            out[title] = {tuple(r["metric"].get(label, "") for label in KEPT[title]):
                          float(r["value"][1]) for r in rows}
        return out

    def short(res: Dict[str, Dict[Tuple[str, ...], float]]) -> List[str]:
        return [f"{title} {key}: {res[title].get(key)} < {n}/{window:g}s"
                for title, series in want.items() for key, n in sorted(series.items())
                if res[title].get(key, 0.0) < n / window]

    last: List[Dict[str, Dict[Tuple[str, ...], float]]] = []

    def complete() -> bool:
        last[:] = [shown()]
        return not short(last[0])

    try:
        poll(complete, timeout=20, interval=0.5, what="the row's queries to show the big round")
    except AssertionError:
        raise AssertionError("\n".join(short(last[0]) if last else ["no answer"])) from None


def firing(prom: Prometheus, name: str) -> Dict[Tuple[str, str], Dict[str, Any]]:
    return {(a["labels"]["port"], a["labels"]["side"]): a for a in prom.api("alerts")["alerts"]
            if a["labels"]["alertname"] == name and a["state"] == "firing"}


def test_service_resets_and_retransmits_alerts_fire_for_the_tests_ports(stack) -> None:
    prom, instance, proc = stack["prom"], stack["instance"], stack["proc"]
    resets = {(str(p), side) for p in (P_SVC, P_CLOSED) for side in ("local", "remote")}
    got = poll(lambda: (lambda f: f if resets <= set(f) else None)(
        firing(prom, "NetstatServiceResetsHigh")), timeout=20, interval=0.5,
        what="NetstatServiceResetsHigh firing for the test's ports")
    limit = float(gen.DEFAULTS["service_resets_max"])
    for key in resets:
        a = got[key]
        assert a["labels"]["instance"] == instance and a["labels"]["job"] == JOB
        assert float(a["value"]) > limit
        # Joined to netstat_listener_info where the port listens: the test's own process.
        want_proc = proc if key == (str(P_SVC), "local") else None
        assert a["labels"].get("process") == want_proc, a["labels"]
    rtx = poll(lambda: firing(prom, "NetstatServiceRetransmitsHigh").get(
        (str(P_LOSSY), "local")), timeout=20, interval=0.5,
        what="NetstatServiceRetransmitsHigh firing for the lossy port")
    assert rtx["labels"]["process"] == proc
    assert float(rtx["value"]) > float(gen.DEFAULTS["service_retransmit_ratio"])
    assert rtx["annotations"]["runbook_url"].endswith("#netstatserviceretransmitshigh")
