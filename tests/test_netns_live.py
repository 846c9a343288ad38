"""The netns collector against real namespaces this test creates, with real sockets in
TIME_WAIT, CLOSE_WAIT and a full accept queue in each: every count per namespace matches
`ip netns exec NS ss` and every counter `ip netns exec NS nstat -az`, taken at the same moment;
tier 1 as nobody; tier 2 without its capabilities; namespaces pinned with no process, and
namespaces deleted between scrapes.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections import Counter
from contextlib import ExitStack, contextmanager
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import pytest
from helpers import connect_and_close, parse, poll, run_cli
from nshelpers import SS_STATE, NetNS
from prometheus_client import CollectorRegistry

from exporter.collectors import netns as collector
from exporter.config import Config
from exporter.procfs.namespace_counters import COUNTER_FILES
from exporter.scrape import Exporter

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates network namespaces: run as root")

NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all"]


class Exported:
    """The netns collector in this process, read like Prometheus reads it."""

    def __init__(self, **options: object) -> None:
        opts = {"time_budget": 30.0, "max_namespaces": 100000, **options}
        cfg = Config(collectors=frozenset({"netns"}),
                     options={"netns": collector.NetnsOptions(**opts)})  # type: ignore[arg-type]
        self.exporter = Exporter(cfg)
        self.reg = CollectorRegistry()
        self.reg.register(self.exporter.target())

    @property
    def collector(self) -> collector.NetnsCollector:
        return self.exporter.collectors["netns"]  # type: ignore[return-value]

    def scrape(self) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
        out = {}
        for m in self.reg.collect():
            for s in m.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        assert out[("netstat_exporter_collector_success", (("collector", "netns"),))] == 1
        return out

    def cookies(self, namespaces: Iterable[Tuple[NetNS, object]]) -> List[Optional[int]]:
        """The cookie of the pool's socket into each of ``namespaces`` (pairs of a namespace
        and its process, as the fixture gives them): None where it holds none."""
        return [self.collector.pool.cookie(key(ns)) for ns, _ in namespaces]

    def close(self) -> None:
        """Close the collector, which leaves no socket in its pool."""
        self.collector.close()
        assert len(self.collector.pool) == 0


def of(samples: Dict, name: str, netns: str) -> Dict[Tuple[Tuple[str, str], ...], float]:
    """The samples of ``name`` for one namespace, keyed by their other labels."""
    return {tuple(kv for kv in labels if kv[0] not in ("netns", "kind")): v
            for (n, labels), v in samples.items()
            if n == name and dict(labels).get("netns") == netns}


def key(ns: NetNS) -> Tuple[str, int, int]:
    """The collector's key of a namespace made here (other tests' namespaces come and go on
    the same machine, so checks on the socket pool look at these only)."""
    st = os.stat(ns.path)
    return ("nsfs", st.st_dev, st.st_ino)


def ss_states(ns: NetNS) -> Counter:
    c: Counter = Counter()
    for line in ns.run("ss", "-tanH").splitlines():
        if line.split():
            c[SS_STATE[line.split()[0]]] += 1
    return c


def ss_listeners(ns: NetNS) -> Dict[str, Tuple[int, int]]:
    out: Dict[str, Tuple[int, int]] = {}
    for line in ns.run("ss", "-tlnH").splitlines():
        f = line.split()
        port = f[3].rsplit(":", 1)[1]
        q, lim = out.get(port, (0, 0))
        out[port] = (q + int(f[1]), lim + int(f[2]))
    return out


def nstat(ns: NetNS) -> Dict[str, int]:
    env = dict(os.environ, NSTAT_HISTORY=f"/tmp/nstat-netns-{os.getpid()}")
    r = subprocess.run(ns.cmd("nstat", "-asz"), capture_output=True, text=True, timeout=30,
                       env=env, check=True)
    return {f[0]: int(f[1]) for f in (ln.split() for ln in r.stdout.splitlines()[1:]) if f}


@contextmanager
def process_in(ns: NetNS) -> Iterator[subprocess.Popen]:
    """A process living in ``ns`` (what a pod's pause container is), killed on exit."""
    p = ns.popen("sleep", "600", stdin=subprocess.DEVNULL)
    try:
        poll(lambda: os.path.exists(f"/proc/{p.pid}/ns/net") and os.stat(
            f"/proc/{p.pid}/ns/net").st_ino == os.stat(ns.path).st_ino, what="process in ns")
        yield p
    finally:
        p.kill()
        p.wait(timeout=30)


def make_trouble(tw: int, cw: int, queued: int, overflow: bool) -> List[socket.socket]:
    """Runs inside a namespace: ``tw`` TIME_WAIT and ``cw`` CLOSE_WAIT sockets, and a listener
    with ``queued`` connections waiting to be accepted (plus, with ``overflow``, one more
    connection attempt than its queue holds). Returns what must stay open."""
    keep: List[socket.socket] = []
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    keep.append(srv)
    for i in range(tw + cw):
        c = socket.create_connection(srv.getsockname(), timeout=10)
        a, _ = srv.accept()
        c.close()  # the client closes first: it ends in TIME_WAIT...
        if i < tw:
            a.close()  # ...once the server closes too
        else:
            keep.append(a)  # the server never closes: CLOSE_WAIT
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(max(queued - 1, 0))  # the accept queue holds backlog + 1
    keep.append(full)
    for _ in range(queued + (1 if overflow else 0)):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(full.getsockname())
        keep.append(c)
    return keep


def settled(ns: NetNS, want_tw: int, want_cw: int, queued: int) -> bool:
    c = ss_states(ns)
    return (c["time_wait"] == want_tw and c["close_wait"] == want_cw
            and sum(q for q, _ in ss_listeners(ns).values()) == queued)


@pytest.fixture
def namespaces() -> Iterator[List[Tuple[NetNS, subprocess.Popen]]]:
    """Three namespaces, each with a process and different troubles."""
    with ExitStack() as stack:
        out = []
        for i in range(3):
            ns = stack.enter_context(NetNS("nn"))
            proc = stack.enter_context(process_in(ns))
            keep = ns.call(make_trouble, tw=2 + i, cw=1 + 2 * i, queued=1 + i, overflow=i == 2)
            stack.callback(lambda k=keep: [s.close() for s in k])
            poll(lambda ns=ns, i=i: settled(ns, 2 + i, 1 + 2 * i, 1 + i),
                 what="sockets settled")
            out.append((ns, proc))
        yield out


def test_states_and_queues_match_ss_in_every_namespace(namespaces) -> None:
    ex = Exported(sockets=True)

    def same_moment() -> Optional[Tuple[Dict, Dict]]:
        before = {ns.name: (ss_states(ns), ss_listeners(ns)) for ns, _ in namespaces}
        got = ex.scrape()
        after = {ns.name: (ss_states(ns), ss_listeners(ns)) for ns, _ in namespaces}
        return (got, before) if before == after else None

    got, ss = poll(same_moment, what="ss stable around a scrape")
    for ns, _ in namespaces:
        states, listeners = ss[ns.name]
        mine = of(got, "netstat_netns_tcp_sockets", ns.name)
        assert len(mine) == 11, mine
        assert {dict(k)["state"]: v for k, v in mine.items()} == \
            {s: float(states.get(s, 0)) for s in SS_STATE.values()}
        qlen = of(got, "netstat_netns_listener_accept_queue_length", ns.name)
        qlim = of(got, "netstat_netns_listener_accept_queue_limit", ns.name)
        assert {dict(k)["port"]: (v, qlim[k]) for k, v in qlen.items()} == \
            {p: (float(q), float(lim)) for p, (q, lim) in listeners.items()}
        assert of(got, "netstat_netns_info", ns.name) == {
            (("container_id", ""), ("name", ns.name), ("pod_uid", "")): 1.0}
    # Different troubles per namespace, so a mix-up would show.
    tws = [of(got, "netstat_netns_tcp_sockets", ns.name)[(("state", "time_wait"),)]
           for ns, _ in namespaces]
    assert tws == [2.0, 3.0, 4.0]
    # Three namespaces entered, plus the exporter's own (no setns needed there).
    assert got[("netstat_netns_sockdiag_sockets", ())] >= 4
    assert got[("netstat_netns_skipped", (("reason", "permission"), ("tier", "2")))] == 0
    ex.collector.close()


def test_counters_match_nstat(namespaces) -> None:
    ex = Exported()
    for ns, _ in namespaces:
        first = ex.scrape()
        theirs = nstat(ns)
        last = ex.scrape()
        for (group, field), doc in collector.FIELD_DOCS.items():
            name = doc.name[: -len("_total")] + "_total" if doc.type == "counter" else doc.name
            a = of(first, name, ns.name)[()]
            b = of(last, name, ns.name)[()]
            if field == "CurrEstab":
                # A level, which nstat leaves out; it counts ESTABLISHED and CLOSE_WAIT.
                ss = ss_states(ns)
                assert a == b == ss["established"] + ss["close_wait"]
                continue
            # Counters may move between the readings (a SYN retried to a full queue); ours
            # bracket nstat's.
            assert a <= theirs[group + field] <= b, (group, field, a, theirs[group + field], b)
    # The overflowing namespace counted its overflow.
    third = namespaces[2][0].name
    assert of(last, "netstat_netns_tcp_ext_listen_overflows_total", third)[()] >= 1
    assert of(last, "netstat_netns_tcp_ext_listen_overflows_total",
              namespaces[0][0].name)[()] == 0


def test_tier1_as_nobody(namespaces) -> None:
    """No capability at all: counters per namespace still come, keyed without ptrace access."""
    r = run_cli("--collector.disable-defaults", "--collector.netns",
                "--collector.netns.time-budget=30", "--web.disable-exporter-metrics", "dump",
                prefix=NOBODY)
    assert r.returncode == 0, r.stderr
    samples = parse(r.stdout)
    for ns, proc in namespaces:
        # Without ptrace access the namespace is keyed (and, with no pod or container, named)
        # by the inode of its net/snmp entry.
        label = f"inode-{os.stat(f'/proc/{proc.pid}/net/snmp').st_ino}"
        theirs = nstat(ns)
        got = {n: v for n, labels, v in samples if labels.get("netns") == label}
        states = ss_states(ns)
        assert got["netstat_netns_tcp_curr_estab"] == \
            states["established"] + states["close_wait"]
        # sockstat's tw also counts orphaned FIN_WAIT2 sockets (time-wait minisockets too):
        # here the clients of the CLOSE_WAIT connections, which closed first.
        assert got["netstat_netns_sockstat_tcp_time_wait_sockets"] == \
            states["time_wait"] + states["fin_wait2"]
        assert got["netstat_netns_tcp_active_opens_total"] == theirs["TcpActiveOpens"]


def test_tier2_without_capabilities_says_so_and_keeps_tier1(namespaces) -> None:
    for prefix, missing in ((NOBODY, "CAP_SYS_ADMIN and CAP_SYS_PTRACE"),
                            (["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"],
                             "CAP_SYS_ADMIN")):
        r = run_cli("--collector.disable-defaults", "--collector.netns",
                    "--collector.netns.sockets", "--collector.netns.time-budget=30",
                    "--web.disable-exporter-metrics", "dump", prefix=prefix)
        assert r.returncode == 0, r.stderr
        warnings = [ln for ln in r.stderr.splitlines() if "level=warn" in ln]
        assert len(warnings) == 1, r.stderr
        assert "needs CAP_SYS_ADMIN and CAP_SYS_PTRACE" in warnings[0]
        assert f"missing {missing}" in warnings[0]
        samples = parse(r.stdout)
        skipped = {labels["reason"]: v for n, labels, v in samples
                   if n == "netstat_netns_skipped" and labels["tier"] == "2"}
        assert skipped["permission"] >= len(namespaces)
        counters = [labels["netns"] for n, labels, _ in samples
                    if n == "netstat_netns_tcp_curr_estab"]
        assert len(counters) >= len(namespaces) + 1  # the host too
        # Tier 2 still works in the exporter's own namespace, which needs no setns.
        assert any(labels.get("netns") == "host"
                   for n, labels, _ in samples if n == "netstat_netns_tcp_sockets")


def test_pinned_namespace_without_process() -> None:
    with NetNS("pin") as ns:
        keep = ns.call(make_trouble, tw=3, cw=0, queued=0, overflow=False)
        try:
            poll(lambda: settled(ns, 3, 0, 0), what="sockets settled")
            got = Exported().scrape()
            # Found through the mount, named by it, unreadable without entering it.
            assert of(got, "netstat_netns_tcp_curr_estab", ns.name) == {}
            assert got[("netstat_netns_skipped", (("reason", "no_process"), ("tier", "1")))] >= 1
            ex = Exported(sockets=True)
            got = ex.scrape()
            assert of(got, "netstat_netns_sockstat_tcp_time_wait_sockets", ns.name) == {(): 3.0}
            assert of(got, "netstat_netns_tcp_sockets", ns.name)[(("state", "time_wait"),)] \
                == 3.0
            assert of(got, "netstat_netns_tcp_active_opens_total", ns.name)[()] == \
                nstat(ns)["TcpActiveOpens"]
            ex.collector.close()
        finally:
            for s in keep:
                s.close()


def test_deleted_namespace_leaves_no_socket_and_no_series() -> None:
    ex = Exported(sockets=True)
    with NetNS("del") as ns, process_in(ns):
        keep = ns.call(make_trouble, tw=1, cw=1, queued=0, overflow=False)
        got = ex.scrape()
        assert of(got, "netstat_netns_tcp_sockets", ns.name)
        its_key = key(ns)
        cookie = ex.collector.pool.cookie(its_key)
        assert cookie is not None
        for s in keep:
            s.close()
    # The namespace is gone (no process, no mount): its socket is closed, its series too.
    got = ex.scrape()
    assert not any(dict(labels).get("netns") == ns.name for _, labels in got)
    assert ex.collector.pool.cookie(its_key) is None
    assert cookie not in ex.collector.pool.cookies()
    # The pool holds exactly what the metric says.
    assert len(ex.collector.pool) == got[("netstat_netns_sockdiag_sockets", ())]
    ex.close()


def test_sockets_stay_open_across_scrapes(namespaces) -> None:
    ex = Exported(sockets=True)
    ex.scrape()
    first = ex.cookies(namespaces)
    assert None not in first and len(set(first)) == len(namespaces)
    ex.scrape()
    assert ex.cookies(namespaces) == first
    ex.close()


def test_concurrent_scrapes_share_the_sockets(namespaces) -> None:
    """Scrapes may run at once (--web.max-requests); the pool of sockets is shared by them."""
    import threading

    ex = Exported(sockets=True)
    ex.scrape()
    held = ex.cookies(namespaces)
    results: List[object] = []

    def scrape() -> None:
        try:
            results.append(ex.scrape())
        except BaseException as e:  # noqa: BLE001 - reported below
            results.append(e)

    threads = [threading.Thread(target=scrape) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 4 and not any(isinstance(r, BaseException) for r in results), results
    for got in results:
        assert isinstance(got, dict)
        for ns, _ in namespaces:
            assert of(got, "netstat_netns_tcp_sockets", ns.name)[(("state", "time_wait"),)] > 0
    assert ex.cookies(namespaces) == held
    assert None not in held
    ex.close()


def _fds_into(pid: int) -> List[str]:
    """This process's descriptors open on files of /proc/<pid>/net."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own descriptor
        if target.startswith(f"/proc/{pid}/net/"):
            out.append(target)
    return out


def test_counters_are_read_afresh_from_kept_files() -> None:
    """Tier 1 keeps each namespace's files open and re-reads them: a second scrape sees the
    connections made since the first, to the one."""
    ex = Exported()
    with NetNS("fresh") as ns, process_in(ns) as proc:
        before = of(ex.scrape(), "netstat_netns_tcp_active_opens_total", ns.name)[()]
        assert sorted(_fds_into(proc.pid)) == sorted(
            f"/proc/{proc.pid}/net/{name}" for name in COUNTER_FILES)
        ns.call(connect_and_close, 7)
        after = of(ex.scrape(), "netstat_netns_tcp_active_opens_total", ns.name)[()]
        assert after - before == 7
        assert after == nstat(ns)["TcpActiveOpens"]
    ex.collector.close()


def test_deleted_namespace_releases_its_kept_files() -> None:
    """An open /proc/<pid>/net file keeps its namespace alive: once the namespace is gone, the
    next scrape closes them."""
    ex = Exported()
    with NetNS("gone") as ns, process_in(ns) as proc:
        ex.scrape()
        pid = proc.pid
        assert len(_fds_into(pid)) == len(COUNTER_FILES)
    ex.scrape()
    assert _fds_into(pid) == []
    ex.collector.close()
    assert ex.collector.files.fds == 0
