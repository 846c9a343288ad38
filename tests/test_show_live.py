"""``show states`` and ``show listeners`` on a live host: a network namespace this test creates,
holding sockets it opened itself, against what ``ss`` reports at the same moment (``ss`` runs
just before and just after, and the two must agree, so nothing moved in between). Collected
in the namespace, and read with --url from a real exporter running there."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections import Counter
from typing import Any, Dict, List, Tuple

import pytest
from helpers import ROOT, poll, running_exporter
from nshelpers import NetNS
from showtables import compare

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates network namespaces: run as root")

SS_STATE = {"ESTAB": "established", "SYN-SENT": "syn_sent", "SYN-RECV": "syn_recv",
            "FIN-WAIT-1": "fin_wait1", "FIN-WAIT-2": "fin_wait2", "TIME-WAIT": "time_wait",
            "CLOSE-WAIT": "close_wait", "LAST-ACK": "last_ack", "LISTEN": "listen",
            "CLOSING": "closing", "UNCONN": "unconnected"}
PORT, PORT6, UDP_PORT = 7100, 7101, 7102


def make_sockets() -> List[socket.socket]:
    """Runs inside the namespace. Known sockets: 2 TCP listeners (backlogs 7 and 5), 3 accepted
    connections, 2 waiting in the accept queue, 2 half-closed (FIN_WAIT2/CLOSE_WAIT), a bound
    UDP socket and a connected one."""
    keep: List[socket.socket] = []
    lst = socket.socket()
    lst.bind(("127.0.0.1", PORT))
    lst.listen(7)
    keep.append(lst)
    lst6 = socket.socket(socket.AF_INET6)
    lst6.bind(("::1", PORT6))
    lst6.listen(5)
    keep.append(lst6)
    for _ in range(3):
        keep.append(socket.create_connection(("127.0.0.1", PORT)))
        keep.append(lst.accept()[0])
    for _ in range(2):
        c = socket.create_connection(("127.0.0.1", PORT))
        keep.append(c)
        keep.append(lst.accept()[0])
        c.shutdown(socket.SHUT_WR)
    for _ in range(2):  # never accepted: they wait in the accept queue
        keep.append(socket.create_connection(("127.0.0.1", PORT)))
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", UDP_PORT))
    keep.append(u)
    uc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uc.connect(("127.0.0.1", UDP_PORT))
    keep.append(uc)
    return keep


def ss(ns: NetNS, *flags: str) -> List[List[str]]:
    return [ln.split() for ln in ns.run("ss", "-nH", *flags).splitlines() if ln.strip()]


def family(local: str) -> str:
    return "ipv6" if local.startswith("[") or local.count(":") > 1 else "ipv4"


def ss_states(ns: NetNS) -> Counter:
    out: Counter = Counter()
    for proto, flag in (("tcp", "-ta"), ("udp", "-ua")):
        for f in ss(ns, flag):
            out[(proto, family(f[3]), SS_STATE[f[0]])] += 1
    return out


def shown_states(doc: Dict[str, Any]) -> Counter:
    """(protocol, family, state) -> sockets, as `show states -o json` gives them (TCP and UDP)."""
    shown: Counter = Counter()
    for row in doc["sections"]["tcp"]["rows"]:
        for fam in ("ipv4", "ipv6"):
            if row[fam]:
                shown[("tcp", fam, row["state"])] = row[fam]
    for row in doc["sections"]["datagram"]["rows"]:
        for fam in ("ipv4", "ipv6"):
            if row["protocol"] == "udp" and row[fam]:
                shown[("udp", fam, row["state"])] = row[fam]
    return shown


def show_json(ns: NetNS, view: str, *flags: str) -> Tuple[Dict[str, Any], str]:
    """The view's JSON and text, run inside the namespace."""
    cmd = [sys.executable, "-m", "exporter", "show", view, *flags]
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run(ns.cmd(*cmd, "-o", "json"), capture_output=True, text=True, timeout=60,
                       cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    t = subprocess.run(ns.cmd(*cmd), capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert t.returncode == 0, t.stderr
    return json.loads(r.stdout), t.stdout


@pytest.fixture(scope="module")
def ns() -> Any:
    with NetNS("show") as n:
        keep = n.call(make_sockets)
        # The FINs of the half-closed pairs are processed by then on loopback; wait, bounded.
        poll(lambda: ss_states(n)[("tcp", "ipv4", "close_wait")] == 2, what="CLOSE_WAIT")
        yield n
        for s in keep:
            s.close()


def test_states_match_ss(ns: NetNS) -> None:
    before = ss_states(ns)
    doc, text = show_json(ns, "states")
    after = ss_states(ns)
    assert before == after, "sockets moved while measuring"
    shown = shown_states(doc)
    assert shown == before
    # And what this test made, independently of ss.
    assert shown[("tcp", "ipv4", "listen")] == 1 and shown[("tcp", "ipv6", "listen")] == 1
    assert shown[("tcp", "ipv4", "established")] == 2 * 3 + 2 * 2
    assert shown[("tcp", "ipv4", "fin_wait2")] == 2 and shown[("tcp", "ipv4", "close_wait")] == 2
    assert shown[("udp", "ipv4", "unconnected")] == 1
    assert shown[("udp", "ipv4", "established")] == 1
    # Every TCP state is a row, zeros included.
    assert len(doc["sections"]["tcp"]["rows"]) >= 11
    # Text and JSON are two collections; host-wide totals (sockstat) may move in between, what
    # is counted in the namespace may not.
    for title in ("TCP sockets by state", "UDP, UDP-Lite and raw sockets"):
        assert title in text
    text_only = {k: v for k, v in doc["sections"].items() if k in ("tcp", "datagram", "phases")}
    assert compare(text, dict(doc, sections=text_only)) > 0


_USERS = re.compile(r'users:\(\("([^"]+)"')


def ss_listeners(ns: NetNS) -> Dict[Tuple[str, str], Tuple[int, int, str]]:
    """(protocol, local) -> (Recv-Q, Send-Q, process) of each listener, as ss -tulnp shows."""
    out = {}
    for f in ss(ns, "-tlp") + ss(ns, "-ulp"):
        proto = "tcp" if f[0] == "LISTEN" else "udp"
        m = _USERS.search(" ".join(f[5:]))
        out[(proto, f[3])] = (int(f[1]), int(f[2]), m.group(1) if m else "")
    return out


def test_listeners_match_ss(ns: NetNS) -> None:
    before = ss_listeners(ns)
    doc, text = show_json(ns, "listeners", "--collector.listeners.pid-label")
    assert ss_listeners(ns) == before, "sockets moved while measuring"
    rows = doc["sections"]["listeners"]["rows"]
    queues = {r["address"]: r for r in doc["sections"]["queues"]["rows"]}
    shown = {}
    for r in rows:
        q = queues.get(r["local"], {})
        shown[(r["protocol"], r["local"])] = (q.get("queue", 0), q.get("backlog", 0), r["process"])
    # ss prints a UDP socket's queue bytes where a listener's accept queue would be: 0 here.
    assert shown == before
    assert set(shown) == {("tcp", f"127.0.0.1:{PORT}"), ("tcp", f"[::1]:{PORT6}"),
                          ("udp", f"127.0.0.1:{UDP_PORT}")}
    q = queues[f"127.0.0.1:{PORT}"]
    assert (q["queue"], q["backlog"]) == (2, 7)
    assert abs(q["fill"] - 2 / 7) < 1e-9
    assert doc["sections"]["queues"]["rows"][0]["address"] == f"127.0.0.1:{PORT}"  # fullest first
    with open(f"/proc/{os.getpid()}/comm") as f:
        me = f.read().strip()
    assert {r["process"] for r in rows} == {me}
    assert {r["pid"] for r in rows} == {os.getpid()}  # netstat -p, behind its flag
    assert " PID " in text
    conns = {r["port"]: r for r in doc["sections"]["connections"]["rows"]}
    assert conns[str(PORT)]["established"] == 3 + 2  # accepted ones and the queued ones
    assert conns[str(PORT)]["close_wait"] == 2
    assert compare(text, doc) > 0


@pytest.fixture(scope="module")
def served() -> Any:
    """Another namespace with the same sockets and a real exporter serving them."""
    with NetNS("showurl") as n:
        keep = n.call(make_sockets)
        poll(lambda: ss_states(n)[("tcp", "ipv4", "close_wait")] == 2, what="CLOSE_WAIT")
        with running_exporter(netns=n.name) as ex:
            yield n, f"127.0.0.1:{ex.port}"
        for s in keep:
            s.close()


def test_states_from_a_running_exporter_match_ss(served: Tuple[NetNS, str]) -> None:
    ns, addr = served
    before = ss_states(ns)
    doc, _ = show_json(ns, "states", f"--url={addr}")
    shown = shown_states(doc)
    # The exporter counts while the scrape's own connection is open: both of its ends are
    # ESTABLISHED then, and only then.
    want = before.copy()
    want[("tcp", "ipv4", "established")] += 2
    assert shown == want
    assert shown[("tcp", "ipv4", "listen")] == 2  # ours and the exporter's


def test_listeners_from_a_running_exporter_match_ss(served: Tuple[NetNS, str]) -> None:
    ns, addr = served
    before = ss_listeners(ns)
    doc, _ = show_json(ns, "listeners", f"--url={addr}")
    queues = {r["address"]: r for r in doc["sections"]["queues"]["rows"]}
    shown = {}
    for r in doc["sections"]["listeners"]["rows"]:
        q = queues.get(r["local"], {})
        shown[(r["protocol"], r["local"])] = (q.get("queue", 0), q.get("backlog", 0), r["process"])
    assert shown == before
    assert ("tcp", addr) in shown and ("tcp", f"127.0.0.1:{PORT}") in shown
    assert (shown[("tcp", f"127.0.0.1:{PORT}")][:2]) == (2, 7)
