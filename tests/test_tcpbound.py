"""Bound-but-idle TCP sockets found through the host's open files (exporter.bpf.tcpbound):
the scan finds each bound socket of its namespace once, however many descriptors and
processes hold it, and nothing else (listeners, connections, raw sockets of protocol 6, bound
sockets of other namespaces); the snapshot's counts and used ports with the scan equal the
sock_diag dump's; a scan that does not fit, or a host where the descriptors cost more than
the dump, falls back to the dump; outside the initial pid namespace there is no scan.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections import Counter
from typing import Any, Iterator, List, Tuple

import pytest
from nshelpers import NetNS

from exporter.bpf import tcpbound, tcpiter
from exporter.sockets import snapshot as snap_mod
from exporter.sockets.snapshot import Snapshot, Wants
from exporter.vocabulary.model import InetTables

ALL = Wants(listeners=True, connections=True, ephemeral=True)


def _bound(fam: int, host: str) -> socket.socket:
    s = socket.socket(fam)
    s.bind((host, 0))
    return s


def _make() -> Tuple[List[Any], List[int], List[int]]:
    """Inside the namespace: two bound IPv4 sockets (one also held by a second descriptor and
    by a child process) and one IPv6, beside a listener with a connection and a raw socket of
    protocol 6. Returns what to keep, the expected ports, and the child's pid."""
    b4a, b4b, b6 = (_bound(socket.AF_INET, "127.0.0.1"), _bound(socket.AF_INET, "127.0.0.1"),
                    _bound(socket.AF_INET6, "::1"))
    lst = _bound(socket.AF_INET, "127.0.0.1")
    lst.listen(8)
    c = socket.create_connection(lst.getsockname())
    s, _ = lst.accept()
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    extra = os.dup(b4a.fileno())
    child = subprocess.Popen(["sleep", "60"], pass_fds=[b4a.fileno()])
    ports = sorted(x.getsockname()[1] for x in (b4a, b4b, b6))
    return [b4a, b4b, b6, lst, c, s, raw, extra, child], ports, [child.pid]


@pytest.fixture(scope="module")
def host() -> Iterator[Tuple[NetNS, List[int]]]:
    outside = _bound(socket.AF_INET, "127.0.0.1")  # the test's own namespace: not counted
    with NetNS("bound") as ns:
        keep, ports, _ = ns.call(_make)
        try:
            yield ns, ports
        finally:
            for k in keep:
                if isinstance(k, int):
                    os.close(k)
                elif isinstance(k, subprocess.Popen):
                    k.kill()
                    k.wait(10)
                else:
                    k.close()
            outside.close()


def _scan() -> tcpbound.BoundScan:
    assert tcpbound.initial_pid_namespace()
    snap_mod.tcp_iterator()
    scan = snap_mod.bound_scan()
    assert scan is not None, snap_mod.tcp_iterator_problem()
    return scan


def test_the_scan_finds_each_bound_socket_of_its_namespace_once(
        host: Tuple[NetNS, List[int]]) -> None:
    ns, ports = host
    got = ns.call(_scan().read)
    assert got.counts == Counter({socket.AF_INET: 2, socket.AF_INET6: 1})
    assert sorted(got.ports) == ports
    # and the same again: a run finds the sockets the last run gave its number to
    again = ns.call(_scan().read)
    assert again.counts == got.counts and sorted(again.ports) == ports
    with NetNS("nobound") as empty:
        assert empty.call(_scan().read).counts == Counter()


def _read(source: str) -> InetTables:
    with Snapshot("/proc", source, wants=ALL) as s:
        t = s.inet("tcp")
    assert t is not None
    return t


def _close_and_used(t: InetTables) -> Any:
    return ({fam: c.states[7] for fam, c in t.counts.items()},
            t.ports.used if t.ports else None)


def test_the_snapshot_counts_with_the_scan_what_the_dump_gives(
        host: Tuple[NetNS, List[int]], monkeypatch: pytest.MonkeyPatch) -> None:
    ns, _ = host
    scan, runs = _scan(), []
    real = scan.read

    def counted(*a: Any) -> tcpbound.Bound:
        runs.append(1)
        return real(*a)

    monkeypatch.setattr(scan, "read", counted)
    it, nl = ns.call(_read, "bpf"), ns.call(_read, "netlink")
    assert runs, "the snapshot did not use the scan"
    assert it.source == "bpf" and nl.source == "netlink"
    assert _close_and_used(nl)[0] == {"ipv4": 2, "ipv6": 1}
    assert _close_and_used(it) == _close_and_used(nl)
    assert it.counts == nl.counts


@pytest.mark.parametrize("how", ["does not fit", "the files cost more", "no scan"])
def test_otherwise_the_dump_finds_the_bound_sockets(
        host: Tuple[NetNS, List[int]], monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    ns, _ = host
    want = _close_and_used(ns.call(_read, "netlink"))
    scan = _scan()
    if how == "does not fit":
        monkeypatch.setattr(tcpbound, "BOUND_MAX", 1)
        with pytest.raises(tcpiter.Incomplete, match="more than 1 bound"):
            ns.call(scan.read)
    elif how == "the files cost more":
        monkeypatch.setattr(tcpbound, "worth_it", lambda procfs, n: False)
    else:
        monkeypatch.setattr(snap_mod, "bound_scan", lambda: None)
    runs: List[int] = []
    real = scan.read
    monkeypatch.setattr(scan, "read", lambda *a: (runs.append(1), real(*a))[1])
    got = ns.call(_read, "bpf")
    assert got.source == "bpf"
    assert _close_and_used(got) == want
    assert bool(runs) == (how == "does not fit")


def test_a_run_whose_entries_left_the_map_is_refused(host: Tuple[NetNS, List[int]]) -> None:
    """The reader checks the entries of the run against the program's own count: one evicted
    (or counted twice) makes the run incomplete."""
    ns, _ = host
    scan = _scan()
    ns.call(scan.read)
    with pytest.raises(tcpiter.Incomplete, match="3 of 4 bound sockets"):
        scan._results(4, 0)
    with pytest.raises(tcpiter.Incomplete, match="found no room"):
        scan._results(3, 2)
    assert len(scan._results(3, 0).ports) == 3


def test_outside_the_initial_pid_namespace_there_is_no_scan() -> None:
    code = "from exporter.bpf import tcpbound; print(tcpbound.initial_pid_namespace())"
    r = subprocess.run(["unshare", "--pid", "--fork", sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=60, check=True)
    assert r.stdout.strip() == "False"
    assert tcpbound.initial_pid_namespace()


@pytest.mark.parametrize("files,buckets,sockets,worth", [
    ("500\t0\t9223372036854775807", "262144", 0, True),
    ("2000000\t0\t9223372036854775807", "262144", 10_000, False),
    ("40000\t0\t9223372036854775807", "-262144", 100_000, True),
    ("40000\t0\t9223372036854775807", "262144", 0, False),
    (None, "262144", 0, False),
    ("500", None, 0, False),
    ("x", "262144", 0, False),
])
def test_the_scan_is_used_where_the_files_cost_less(tmp_path: Any, files: Any, buckets: Any,
                                                     sockets: int, worth: bool) -> None:
    for rel, text in (("sys/fs/file-nr", files), ("sys/net/ipv4/tcp_ehash_entries", buckets)):
        if text is not None:
            p = tmp_path / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text + "\n")
    assert tcpbound.worth_it(str(tmp_path), sockets) is worth


def test_the_program_assembles_from_any_layout() -> None:
    """No kernel needed: the program is built from the offsets BTF gives (here made up)."""
    f = tcpbound.Fields(24, 32, 64, 24, 532, 534, 16, 18, 14, 48, 176, 1)
    code = tcpbound.program(f, 3, 4)
    assert len(code) % 8 == 0 and len(code) // 8 < 4096


def test_auto_iterates_from_a_few_hundred_sockets_where_the_scan_serves() -> None:
    """With no second walk of the established hash, the iterator costs less than the dump
    from ITERATE_WITH_SCAN_FROM sockets on (the exporter in its own namespace, a process of
    the initial pid namespace)."""
    from helpers import parse, run_cli
    from test_tcpiter import _time_wait

    n = snap_mod.ITERATE_WITH_SCAN_FROM + 100
    assert n < snap_mod.ITERATE_FROM
    with NetNS("scan") as ns:
        ns.call(_time_wait, n)
        r = run_cli("--collector.disable-defaults", "--collector.sockets", "dump",
                    prefix=ns.cmd())
    assert r.returncode == 0, r.stderr
    src = [lbl["source"] for name, lbl, v in parse(r.stdout)
           if name == "netstat_sockets_source_info" and lbl["protocol"] == "tcp"]
    assert src == ["bpf"]


@pytest.mark.parametrize("size,scan,worth,iterates", [
    (snap_mod.ITERATE_FROM, False, False, True),
    (snap_mod.ITERATE_WITH_SCAN_FROM, True, True, True),
    (snap_mod.ITERATE_WITH_SCAN_FROM, True, False, False),
    (snap_mod.ITERATE_WITH_SCAN_FROM, False, True, False),
    (snap_mod.ITERATE_WITH_SCAN_FROM - 1, True, True, False),
])
def test_which_size_iterates(monkeypatch: pytest.MonkeyPatch, size: int, scan: bool,
                             worth: bool, iterates: bool) -> None:
    monkeypatch.setattr(Snapshot, "_tcp_size", lambda self: size)
    monkeypatch.setattr(snap_mod, "bound_scan", lambda: object() if scan else None)
    monkeypatch.setattr(tcpbound, "worth_it", lambda procfs, n: worth)
    with Snapshot("/proc", "auto") as s:
        assert s._iterates() is iterates


@pytest.mark.parametrize("cls", [tcpbound.BoundScan, tcpiter.TcpIterator])
def test_a_program_that_fails_half_built_releases_what_it_holds(
        cls: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Maps created and mapped, then the program refused: every descriptor and the mapping are
    released, and a closed program refuses to run."""
    from exporter.bpf import syscalls as sc

    before = set(os.listdir("/proc/self/fd"))

    def refused(*_: Any, **__: Any) -> int:
        raise sc.BpfError(1, "refused here")

    monkeypatch.setattr(sc, "prog_load", refused)
    with pytest.raises(sc.BpfError, match="refused here"):
        cls()
    assert set(os.listdir("/proc/self/fd")) <= before
    monkeypatch.undo()
    prog = cls()
    prog.close()
    prog.close()  # twice is harmless
    assert set(os.listdir("/proc/self/fd")) <= before
    with pytest.raises(tcpiter.Incomplete if cls is tcpiter.TcpIterator else tcpbound.Incomplete):
        prog.read(None) if cls is tcpiter.TcpIterator else prog.read()
