"""The TCP table counted in the kernel by the socket iterator program (exporter.bpf.tcpiter):
what it counts equals what the whole sock_diag dump gives, on a namespace of the test's own
holding every kind of socket the snapshot tells apart; a run that does not fit the maps falls
back to the dump; "auto" iterates from ITERATE_FROM sockets on, and without CAP_BPF and
CAP_PERFMON says nothing and reads sock_diag; "bpf" asked for without them stops the start
with the reason.

The whole-table comparison with ss and node_exporter for both sources is
tests/test_sockets_live.py's.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from typing import Any, Iterator, List, Tuple

import pytest
from helpers import FIXTURES, parse, run_cli, value
from nshelpers import NetNS

from exporter.bpf import syscalls as bpf_sc
from exporter.bpf import tcpiter
from exporter.sockets import snapshot as snap_mod
from exporter.sockets.snapshot import Snapshot, Wants
from exporter.vocabulary.model import InetTables

ALL = Wants(listeners=True, connections=True, ephemeral=True)
BOUND_IDLE = 2


def _mix() -> List[socket.socket]:
    """Inside the namespace: listeners on both families, with connections in every state a
    scrape tells apart on both sides of them (TIME_WAIT on the listening port and on ephemeral
    ports, FIN_WAIT2 and CLOSE_WAIT, bytes queued both ways), and sockets bound but idle."""
    keep: List[socket.socket] = []
    for fam, host, port in ((socket.AF_INET, "127.0.0.1", 7100), (socket.AF_INET6, "::1", 7101),
                            (socket.AF_INET, "127.0.0.2", 7102)):
        lst = socket.socket(fam)
        lst.bind((host, port))
        lst.listen(64)
        keep.append(lst)
        for i in range(6):
            c = socket.create_connection((host, port))
            s, _ = lst.accept()
            if i == 0:
                c.sendall(b"x" * 700)  # waits in s's receive queue
            elif i == 1:
                c.shutdown(socket.SHUT_WR)  # c FIN_WAIT2, s CLOSE_WAIT
            elif i == 2:
                s.close()  # the server closes first: TIME_WAIT on the listening port
                c.close()
                continue
            elif i == 3:
                c.close()  # the client closes first: TIME_WAIT on an ephemeral port
                s.close()
                continue
            keep.extend((c, s))
    for _ in range(BOUND_IDLE):
        b = socket.socket()
        b.bind(("127.0.0.1", 0))
        keep.append(b)
    return keep


@pytest.fixture(scope="module")
def host() -> Iterator[Tuple[NetNS, List[socket.socket]]]:
    with NetNS("iter") as ns:
        ns.ip("addr", "add", "127.0.0.2/8", "dev", "lo")
        keep = ns.call(_mix)
        try:
            yield ns, keep
        finally:
            for s in keep:
                s.close()


def _read(source: str) -> InetTables:
    with Snapshot("/proc", source, wants=ALL) as s:
        t = s.inet("tcp")
    assert t is not None
    return t


def _both(ns: NetNS) -> Tuple[InetTables, InetTables]:
    """The iterator's tables and the dump's, read back to back until two pairs agree with each
    other (a socket's timer may fire between two reads; bounded)."""
    deadline = time.monotonic() + 20
    while True:
        a, b = ns.call(_read, "bpf"), ns.call(_read, "netlink")
        a2 = ns.call(_read, "bpf")
        if _key(a) == _key(a2) or time.monotonic() > deadline:
            return a, b


def _key(t: InetTables) -> Any:
    return (t.counts, t.connections, sorted(map(repr, t.listeners)),
            t.ports.used if t.ports else None, t.ports.destinations if t.ports else None)


def test_the_iterator_counts_what_the_dump_gives(host: Tuple[NetNS, List[socket.socket]]) -> None:
    ns, _ = host
    it, nl = _both(ns)
    assert it.source == "bpf" and nl.source == "netlink"
    # What this test made is there, so the comparison is not vacuous.
    v4, v6 = nl.counts["ipv4"].states, nl.counts["ipv6"].states
    for st in (1, 5, 6, 8, 10):
        assert v4[st] > 0 and v6[st] > 0, st
    assert v4[7] == BOUND_IDLE  # bound but idle: "close"
    # 700 bytes per listener's connection, and one per CLOSE_WAIT socket: its peer's FIN takes
    # a sequence number (rcv_nxt - copied_seq, as ss's Recv-Q shows it)
    assert nl.counts["ipv4"].rx_queue == 2 * 701 and nl.counts["ipv6"].rx_queue == 701
    assert nl.connections[(7100, 6)] == 1 and nl.connections[(7101, 8)] == 1
    assert nl.ports is not None and nl.ports.used > 0
    assert nl.ports.destinations["::1->[::1]:7101"] > 0
    # The iterator's tables are the dump's, field by field.
    assert it.counts == nl.counts
    assert it.connections == nl.connections
    assert sorted(map(repr, it.listeners)) == sorted(map(repr, nl.listeners))
    assert it.ports == nl.ports


def test_a_run_that_does_not_fit_falls_back_to_the_dump(
        host: Tuple[NetNS, List[socket.socket]], monkeypatch: pytest.MonkeyPatch) -> None:
    """More listening ports than slots, or more destinations than the map holds: the run says
    so, and the snapshot reads the whole dump instead (same tables, source netlink)."""
    ns, _ = host
    real = snap_mod.tcp_iterator()
    assert real is not None

    class Full:
        def read(self, ephemeral: Any) -> Any:
            real.read(ephemeral)
            raise tcpiter.Incomplete(f"more than {tcpiter.MAX_SLOTS} listening ports")

    monkeypatch.setattr(snap_mod, "tcp_iterator", lambda: Full())
    got = ns.call(_read, "bpf")
    monkeypatch.undo()
    want = ns.call(_read, "netlink")
    assert got.source == "netlink"
    assert _key(got) == _key(want)


def test_a_full_slot_table_is_reported_by_the_reader(host: Tuple[NetNS, List[socket.socket]]
                                                       ) -> None:
    """The reader refuses a run whose program counted a listening port it found no slot for."""
    ns, _ = host
    it = snap_mod.tcp_iterator()
    assert it is not None
    ns.call(it.read, None)
    view = it._view
    view[tcpiter.OFF_SLOTS_LOST:tcpiter.OFF_SLOTS_LOST + 8] = (1).to_bytes(8, "little")
    with pytest.raises(tcpiter.Incomplete, match="listening ports"):
        it._results()
    view[tcpiter.OFF_DEST_LOST:tcpiter.OFF_DEST_LOST + 8] = (3).to_bytes(8, "little")
    view[tcpiter.OFF_SLOTS_LOST:tcpiter.OFF_SLOTS_LOST + 8] = bytes(8)
    with pytest.raises(tcpiter.Incomplete, match="destinations"):
        it._results()
    # the next run clears what this one left
    got = ns.call(it.read, None)
    assert sum(got.states[socket.AF_INET].values()) > 0


def test_runs_leave_nothing_behind_for_the_next(host: Tuple[NetNS, List[socket.socket]]) -> None:
    """Slots, used ports and per-destination counts are a run's own: a run in an empty
    namespace after one in the full namespace finds nothing."""
    ns, _ = host
    it = snap_mod.tcp_iterator()
    assert it is not None
    from exporter.sockets.snapshot import read_ephemeral_range
    rng = read_ephemeral_range("/proc")
    assert rng is not None
    full = ns.call(it.read, rng.ports)
    assert full.connections and full.used and full.destinations
    with NetNS("empty") as empty:
        got = empty.call(it.read, rng.ports)
    assert got.states == {socket.AF_INET: Counter(), socket.AF_INET6: Counter()}
    assert not got.connections and got.used == 0 and got.destinations == []
    again = ns.call(it.read, rng.ports)
    assert again.connections == full.connections and again.used == full.used
    assert sorted(again.destinations) == sorted(full.destinations)


def test_the_program_assembles_from_any_layout() -> None:
    """No kernel needed: the program is built from the offsets BTF gives (here made up)."""
    f = tcpiter.Fields(16, 18, 14, 12, 4, 0, 72, 56, 140, 1664, 1464, 1576, 1672, 1)
    code = tcpiter.program(f, 3, 4)
    assert len(code) % 8 == 0 and len(code) // 8 < 4096


DROP_CAPS = ["setpriv", "--inh-caps=-bpf,-perfmon,-sys_admin",
             "--bounding-set=-bpf,-perfmon,-sys_admin"]


def _time_wait(n: int) -> None:
    """Inside a namespace: ``n`` loopback connections closed by the client first, which leaves
    ``n`` sockets in TIME_WAIT (for a minute) and holds no descriptor."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(128)
    for _ in range(n):
        c = socket.create_connection(lst.getsockname())
        s, _ = lst.accept()
        c.close()
        s.close()
    lst.close()


@pytest.fixture(scope="module")
def large() -> Iterator[NetNS]:
    """A namespace whose TCP table holds ITERATE_FROM sockets and more."""
    with NetNS("large") as ns:
        ns.call(_time_wait, snap_mod.ITERATE_FROM + 100)
        yield ns


def _source(r: Any) -> str:
    assert r.returncode == 0, r.stderr
    samples = parse(r.stdout)
    got = [lbl["source"] for n, lbl, v in samples
           if n == "netstat_sockets_source_info" and lbl["protocol"] == "tcp" and v == 1]
    assert len(got) == 1, got
    return got[0]


def test_auto_iterates_a_large_table_and_dumps_a_small_one(large: NetNS) -> None:
    dump = ("--collector.disable-defaults", "--collector.sockets", "dump")
    assert _source(run_cli(*dump, prefix=large.cmd())) == "bpf"
    with NetNS("small") as small:
        assert _source(run_cli(*dump, prefix=small.cmd())) == "netlink"
    # and a large table read both ways counts the same TIME_WAIT sockets
    r = run_cli(*dump, "--collector.sockets.source=netlink", prefix=large.cmd())
    assert _source(r) == "netlink"
    b = run_cli(*dump, prefix=large.cmd())
    tw = {src: value(parse(x.stdout), "netstat_sockets", protocol="tcp", family="ipv4",
                     state="time_wait") for src, x in (("netlink", r), ("bpf", b))}
    assert tw["netlink"] == tw["bpf"] >= snap_mod.ITERATE_FROM, tw


def test_without_the_capabilities_auto_dumps_and_says_nothing(large: NetNS) -> None:
    r = run_cli("--collector.disable-defaults", "--collector.sockets", "dump",
                prefix=[*large.cmd(), *DROP_CAPS])
    assert _source(r) == "netlink"
    assert r.stderr == ""


def test_bpf_asked_for_without_the_capabilities_stops_the_start() -> None:
    r = run_cli("--collector.sockets.source=bpf", "dump", prefix=DROP_CAPS)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "socket source 'bpf'" in lines[0] and "CAP_BPF and CAP_PERFMON" in lines[0], lines


def test_bpf_on_a_copy_of_a_proc_tree_is_refused() -> None:
    tree = os.path.join(FIXTURES, "proc", "live")
    r = run_cli(f"--path.procfs={tree}", "--collector.sockets.source=bpf", "dump")
    assert r.returncode == 2, r.stderr
    assert "socket source 'bpf'" in r.stderr and "mounted procfs" in r.stderr, r.stderr


def test_a_run_goes_on_after_the_kernels_pause(host: Tuple[NetNS, List[socket.socket]],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A read that ran the program a million times without output ends in EAGAIN, and the run
    goes on with the next read; one that never ends is given up."""
    ns, _ = host
    it = snap_mod.tcp_iterator()
    assert it is not None
    want = ns.call(it.read, None)
    real_read, calls = os.read, []

    def paused(fd: int, n: int) -> bytes:
        calls.append(fd)
        if len(calls) == 1:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return real_read(fd, n)

    monkeypatch.setattr(bpf_sc.os, "read", paused)
    assert ns.call(it.read, None).states == want.states
    assert len(calls) == 2

    def never(fd: int, n: int) -> bytes:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(bpf_sc.os, "read", never)
    with pytest.raises(tcpiter.Incomplete, match="did not end"):
        ns.call(it.read, None)


@pytest.mark.parametrize("release,dumps", [("6.18.44-fc-v1272", True), ("6.5.0", True),
                                           ("6.4.16", False), ("5.10-rt", False),
                                           ("5.15.0-91-generic", False), ("weird", True)])
def test_bound_sockets_are_asked_for_from_linux_6_5(monkeypatch: pytest.MonkeyPatch,
                                                    release: str, dumps: bool) -> None:
    """Asking an older kernel for bound-but-idle sockets finds none and still walks the
    established hash: the release decides (a suffix glued to the minor number included)."""
    real = os.uname()
    fake = os.uname_result((real.sysname, real.nodename, release, real.version, real.machine))
    monkeypatch.setattr(snap_mod.os, "uname", lambda: fake)
    snap_mod._bound_inactive_dumps.cache_clear()
    try:
        assert snap_mod._bound_inactive_dumps() is dumps
    finally:
        monkeypatch.undo()
        snap_mod._bound_inactive_dumps.cache_clear()
