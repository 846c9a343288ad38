"""The sockets collector registered in a fresh registry, read with get_sample_value, on fixture
trees (source procfs) and on this host (source netlink)."""

from __future__ import annotations

import os
from collections import Counter

import pytest
from helpers import FIXTURES, parse, select, value
from prometheus_client import CollectorRegistry

from exporter.collectors.sockets import TCP_EMITTED, TCP_STATES, SocketsCollector, SocketsOptions
from exporter.config import Config
from exporter.procfs import ParseError
from exporter.scrape import Exporter
from exporter.sockets import snapshot

PROC = os.path.join(FIXTURES, "proc")
SS = {"ESTAB": "established", "SYN-SENT": "syn_sent", "SYN-RECV": "syn_recv",
      "FIN-WAIT-2": "fin_wait2", "TIME-WAIT": "time_wait", "CLOSE-WAIT": "close_wait",
      "LISTEN": "listen"}


def registry(tree: str, source: str = "procfs") -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(SocketsCollector(Config(procfs=os.path.join(PROC, tree),
                                         options={"sockets": SocketsOptions(source=source)})))
    return reg


def test_every_tcp_state_matches_the_capture_zero_included() -> None:
    reg = registry("live")
    want: Counter = Counter()
    with open(os.path.join(PROC, "live", "ss-tan.txt")) as f:
        for line in f:
            want[SS[line.split()[0]]] += 1
    for st in TCP_EMITTED:
        name = TCP_STATES[st]
        got = sum(reg.get_sample_value("netstat_sockets", {"protocol": "tcp", "family": fam,
                                                           "state": name}) for fam in ("ipv4", "ipv6"))
        assert got == want[name], name


def test_sockstat_metrics_and_units() -> None:
    reg = registry("live")
    page = os.sysconf("SC_PAGE_SIZE")
    with open(os.path.join(PROC, "live", "net", "sockstat")) as f:
        tcp = dict(zip(*[iter(f.read().splitlines()[1].split()[1:])] * 2))
    assert reg.get_sample_value("netstat_sockstat_memory_bytes", {"protocol": "tcp"}) \
        == int(tcp["mem"]) * page
    assert reg.get_sample_value("netstat_sockstat_tcp_time_wait_sockets") == int(tcp["tw"])
    assert reg.get_sample_value("netstat_sockstat_inuse_sockets",
                                {"protocol": "tcp", "family": "ipv6"}) == 3
    assert reg.get_sample_value("netstat_sockstat_fragment_memory_bytes", {"family": "ipv6"}) == 0


def test_ipv6_disabled_is_no_data_not_a_failure() -> None:
    reg = registry("sockets-ipv6-disabled")
    assert reg.get_sample_value("netstat_sockets", {"protocol": "tcp", "family": "ipv6",
                                                    "state": "listen"}) is None
    assert reg.get_sample_value("netstat_sockets", {"protocol": "tcp", "family": "ipv4",
                                                    "state": "listen"}) == 2
    assert reg.get_sample_value("netstat_sockstat_inuse_sockets",
                                {"protocol": "tcp", "family": "ipv6"}) is None


def test_garbage_fails_the_collector_with_file_and_line() -> None:
    cfg = Config(procfs=os.path.join(PROC, "garbage"),
                 options={"sockets": SocketsOptions(source="procfs")},
                 collectors=frozenset({"sockets"}))
    with pytest.raises(ParseError, match=r"net/tcp:4: bad state"):
        list(SocketsCollector(cfg).collect())
    from prometheus_client.exposition import generate_latest

    s = parse(generate_latest(Exporter(cfg).target()).decode())
    assert value(s, "netstat_exporter_collector_success", collector="sockets") == 0
    assert not select(s, "netstat_sockets")


def test_auto_reads_a_copied_tree_from_its_files() -> None:
    """Netlink would dump this host's sockets, not those of the copied tree."""
    reg = registry("live", source="auto")
    assert reg.get_sample_value("netstat_sockets_source_info",
                                {"protocol": "tcp", "source": "procfs"}) == 1


def test_unix_series_for_every_type_and_state() -> None:
    reg = registry("live")
    assert reg.get_sample_value("netstat_sockets_unix", {"type": "stream", "state": "listen"}) == 1
    assert reg.get_sample_value("netstat_sockets_unix", {"type": "seqpacket", "state": "listen"}) == 0
    # the capture's one socketpair(AF_UNIX, SOCK_DGRAM)
    assert reg.get_sample_value("netstat_sockets_unix", {"type": "dgram",
                                                         "state": "established"}) == 2


def test_netlink_on_this_host_reports_its_source(monkeypatch: pytest.MonkeyPatch) -> None:
    # below the size from which auto counts TCP with the socket iterator (tests/test_tcpiter.py)
    monkeypatch.setattr(snapshot, "ITERATE_FROM", 10**9)
    monkeypatch.setattr(snapshot, "ITERATE_WITH_SCAN_FROM", 10**9)
    reg = CollectorRegistry()  # netlink reads this process's namespace, which /proc shows
    reg.register(SocketsCollector(Config(options={"sockets": SocketsOptions(source="auto")})))
    assert reg.get_sample_value("netstat_sockets_source_info",
                                {"protocol": "tcp", "source": "netlink"}) == 1
    for st in TCP_EMITTED:
        assert reg.get_sample_value("netstat_sockets", {"protocol": "tcp", "family": "ipv4",
                                                        "state": TCP_STATES[st]}) is not None
