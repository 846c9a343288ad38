"""Unix sockets on a unix-heavy host: the kernel's own in-use counts (/proc/net/protocols) are
read at every size, equal what a dump of every unix socket counts on a namespace of the test's
own, and stand alone above --collector.sockets.unix-states-max, where counting by type and
state would cost a dump of every socket. The parser refuses truncated and malformed files
with the file and line."""

from __future__ import annotations

import logging
import os
import shutil
import socket
from typing import Any, Iterator, List

import pytest
from helpers import FIXTURES, parse, run_cli, select, value
from nshelpers import NetNS
from prometheus_client import CollectorRegistry

from exporter.collectors.sockets import SocketsCollector, SocketsOptions
from exporter.config import Config
from exporter.procfs import ParseError
from exporter.procfs.sockstat import parse_protocols, read_protocols
from exporter.sockets.snapshot import Snapshot

PROC = os.path.join(FIXTURES, "proc")
LIVE = os.path.join(PROC, "live")


def _registry(tree: str, limit: int) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(SocketsCollector(Config(procfs=tree, options={
        "sockets": SocketsOptions(source="procfs", unix_states_max=limit)})))
    return reg


def test_the_kernels_protocol_table_is_read() -> None:
    got = read_protocols(LIVE)
    assert got is not None
    assert got["UNIX-STREAM"] == 3 and got["UNIX"] == 3 and got["TCP"] >= 0
    assert got["AF_VSOCK"] == 0 and len(got) == 18
    assert read_protocols(os.path.join(PROC, "empty")) is None


@pytest.mark.parametrize("text,error", [
    ("", "expected the header"),
    ("UNIX 1152 3 -1 NI 0 yes kernel\n", "expected the header"),
    ("protocol  size sockets  memory\nUNIX-STREAM 1152\n", ":2: expected 'name size sockets"),
    ("protocol  size sockets  memory\nUNIX 1152 three -1\n", ":2: sockets of UNIX is not a number"),
])
def test_a_broken_protocol_table_is_refused_with_file_and_line(text: str, error: str) -> None:
    with pytest.raises(ParseError, match=error):
        parse_protocols(text, "/proc/net/protocols")


def test_a_truncated_capture_is_refused() -> None:
    with open(os.path.join(LIVE, "net", "protocols")) as f:
        text = f.read()
    cut = text[:text.index("UNIX-STREAM") + len("UNIX-STREAM 11")]
    with pytest.raises(ParseError, match="expected 'name size sockets"):
        parse_protocols(cut, "protocols")


def test_under_the_limit_both_are_reported() -> None:
    reg = _registry(LIVE, 20000)
    assert reg.get_sample_value("netstat_sockstat_unix_inuse_sockets", {"type": "stream"}) == 3
    assert reg.get_sample_value("netstat_sockstat_unix_inuse_sockets",
                                {"type": "dgram_seqpacket"}) == 3
    assert reg.get_sample_value("netstat_sockets_unix", {"type": "stream", "state": "listen"}) == 1
    assert reg.get_sample_value("netstat_sockets_source_info",
                                {"protocol": "unix", "source": "procfs"}) == 1


def test_over_the_limit_only_the_kernels_counts_are_reported(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="exporter.collectors.sockets")
    col = SocketsCollector(Config(procfs=LIVE, options={
        "sockets": SocketsOptions(source="procfs", unix_states_max=5)}))
    reg = CollectorRegistry()
    reg.register(col)
    for _ in range(3):
        assert reg.get_sample_value("netstat_sockets_unix",
                                    {"type": "stream", "state": "listen"}) is None
        assert reg.get_sample_value("netstat_sockets_receive_queue_bytes",
                                    {"protocol": "unix", "family": "unix"}) is None
        assert reg.get_sample_value("netstat_sockstat_unix_inuse_sockets",
                                    {"type": "stream"}) == 3
        assert reg.get_sample_value("netstat_sockets_source_info",
                                    {"protocol": "unix", "source": "protocols"}) == 1
    said = [r for r in caplog.records if "no longer counted" in r.getMessage()]
    assert len(said) == 1, caplog.records  # said once, not every scrape
    assert said[0].sockets == 6 and said[0].unix_states_max == 5  # type: ignore[attr-defined]


def test_zero_means_always_count() -> None:
    reg = _registry(LIVE, 0)
    assert reg.get_sample_value("netstat_sockets_unix", {"type": "stream", "state": "listen"}) == 1


def test_a_kernel_before_unix_stream_counts_them_all(tmp_path: Any) -> None:
    tree = tmp_path / "proc"
    shutil.copytree(LIVE, tree)
    p = tree / "net" / "protocols"
    p.write_text("".join(line for line in p.read_text().splitlines(keepends=True)
                         if not line.startswith("UNIX-STREAM")).replace(
        "UNIX      1152      3", "UNIX      1152      6"))
    reg = _registry(str(tree), 20000)
    assert reg.get_sample_value("netstat_sockstat_unix_inuse_sockets", {"type": "all"}) == 6
    assert reg.get_sample_value("netstat_sockstat_unix_inuse_sockets", {"type": "stream"}) is None


def _unix_mix() -> List[socket.socket]:
    keep: List[socket.socket] = []
    for typ, n in ((socket.SOCK_STREAM, 7), (socket.SOCK_DGRAM, 4), (socket.SOCK_SEQPACKET, 2)):
        for _ in range(n):
            keep.extend(socket.socketpair(socket.AF_UNIX, typ))
    for i, typ in enumerate((socket.SOCK_STREAM, socket.SOCK_SEQPACKET)):
        lst = socket.socket(socket.AF_UNIX, typ)
        lst.bind(f"\0unix-limit-{os.getpid()}-{i}")
        lst.listen(4)
        keep.append(lst)
    keep.append(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))  # unbound, unconnected
    return keep


@pytest.fixture(scope="module")
def unix_ns() -> Iterator[NetNS]:
    with NetNS("unix") as ns:
        keep = ns.call(_unix_mix)
        try:
            yield ns
        finally:
            for s in keep:
                s.close()


def _both() -> Any:
    # /proc/net is the process's namespace; this thread's is under /proc/thread-self
    with Snapshot("/proc/thread-self", "netlink") as snap:
        return snap.unix_inuse(), snap.unix()


def test_the_kernels_counts_equal_the_dumps(unix_ns: NetNS) -> None:
    inuse, tables = unix_ns.call(_both)
    assert tables is not None and inuse is not None
    by_type = {1: 0, 2: 0, 5: 0}
    for (typ, _st), n in tables.counts.items():
        by_type[typ] += n
    assert by_type == {1: 15, 2: 9, 5: 5}  # what _unix_mix made, and nothing else
    assert inuse == {"UNIX-STREAM": by_type[1], "UNIX": by_type[2] + by_type[5]}


def test_the_limit_from_the_command_line(unix_ns: NetNS) -> None:
    args = ("--collector.disable-defaults", "--collector.sockets", "dump")
    over = run_cli(*args, "--collector.sockets.unix-states-max=20", prefix=unix_ns.cmd())
    under = run_cli(*args, prefix=unix_ns.cmd())
    assert over.returncode == 0 and under.returncode == 0, (over.stderr, under.stderr)
    s_over, s_under = parse(over.stdout), parse(under.stdout)
    assert not select(s_over, "netstat_sockets_unix")
    assert value(s_over, "netstat_sockets_source_info", protocol="unix", source="protocols") == 1
    assert value(s_over, "netstat_sockstat_unix_inuse_sockets", type="stream") == 15
    assert value(s_under, "netstat_sockets_unix", type="stream", state="established") == 14
    assert value(s_under, "netstat_sockstat_unix_inuse_sockets", type="dgram_seqpacket") == 14
    bad = run_cli(*args, "--collector.sockets.unix-states-max=-1")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
