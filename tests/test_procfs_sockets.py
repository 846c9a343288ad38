"""The /proc/net socket-table and sockstat readers on captured fixture trees.

tests/fixtures/proc/live was captured from a namespace holding the live test's sockets, with
`ss -tan` taken at the same moment (ss-tan.txt), which is the oracle here. The other trees are
derived from it: IPv6 disabled, empty files, truncated and garbage content.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
from helpers import FIXTURES

from exporter.procfs import ParseError, net_sockets, sockstat
from exporter.sockets.snapshot import Snapshot

PROC = os.path.join(FIXTURES, "proc")
SS_TO_NUM = {"ESTAB": 1, "SYN-SENT": 2, "SYN-RECV": 3, "FIN-WAIT-1": 4, "FIN-WAIT-2": 5,
             "TIME-WAIT": 6, "UNCONN": 7, "CLOSE-WAIT": 8, "LAST-ACK": 9, "LISTEN": 10,
             "CLOSING": 11}


def tree(name: str) -> str:
    return os.path.join(PROC, name)


def tcp(root: str):
    """The TCP tables of a procfs root as the socket snapshot reads them from /proc/net."""
    with Snapshot(root, "procfs") as snap:
        return snap.inet("tcp")


def test_tcp_tables_match_ss_captured_at_the_same_moment() -> None:
    want: Counter = Counter()
    with open(os.path.join(PROC, "live", "ss-tan.txt")) as f:
        for line in f:
            if line.strip():
                want[SS_TO_NUM[line.split()[0]]] += 1
    t = tcp(tree("live"))
    assert t is not None and set(t.counts) == {"ipv4", "ipv6"}
    assert t.counts["ipv4"].states + t.counts["ipv6"].states == want
    assert set(want) >= {1, 2, 3, 5, 6, 8, 10}  # the capture holds the states that matter


def test_queue_bytes_skip_listeners(tmp_path) -> None:
    path = os.path.join(PROC, "live", "net", "tcp")
    with open(path) as f:
        lines = f.read().splitlines()
    rx = tx = 0
    for line in lines[1:]:
        f = line.split()
        t, r = (int(x, 16) for x in f[4].split(":"))
        if f[3] != "0A":
            rx, tx = rx + r, tx + t
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text("\n".join(lines) + "\n")
    t = tcp(str(tmp_path)).counts["ipv4"]
    assert (t.rx_queue, t.tx_queue) == (rx, tx)
    assert t.rx_queue >= 1234  # the capture has 1234 bytes waiting on one connection
    # A listener's rx_queue is its accept queue length: it must not be added to bytes.
    listener = lines[1].split()
    listener[4] = "00000000:00000005"
    (tmp_path / "net" / "tcp").write_text(lines[0] + "\n" + " ".join(listener) + "\n")
    t2 = tcp(str(tmp_path)).counts["ipv4"]
    assert t2.states[10] == 1 and t2.rx_queue == 0


def test_ipv6_disabled_is_no_data() -> None:
    assert net_sockets.read_socket_rows(tree("sockets-ipv6-disabled"), "tcp6") is None
    assert sockstat.read_sockstat(tree("sockets-ipv6-disabled"), "sockstat6") is None
    assert list(tcp(tree("sockets-ipv6-disabled")).counts) == ["ipv4"]


def test_empty_files() -> None:
    assert tcp(tree("empty")).counts["ipv4"].states == Counter()  # header only
    with Snapshot(tree("empty"), "procfs") as snap:
        assert snap.inet("udp").counts["ipv4"].states == Counter()  # zero bytes
    assert net_sockets.read_unix(tree("empty")) == Counter()
    assert sockstat.read_sockstat(tree("empty")) == {}


@pytest.mark.parametrize("name, reader, where", [
    ("sockets-truncated", tcp, "net/tcp:5"),
    ("garbage", tcp, "net/tcp:4"),
    ("garbage", net_sockets.read_unix, "net/unix:1"),
    ("sockets-truncated", sockstat.read_sockstat, "net/sockstat:2"),
    ("garbage", sockstat.read_sockstat, "net/sockstat:1"),
])
def test_malformed_files_name_file_and_line(name: str, reader, where: str) -> None:
    with pytest.raises(ParseError) as e:
        reader(tree(name))
    assert where in str(e.value)
    assert "\n" not in str(e.value)


def test_unix_counts_by_type_and_state() -> None:
    path = os.path.join(PROC, "live", "net", "unix")
    with open(path) as f:
        lines = f.read().splitlines()
    want: Counter = Counter()
    for line in lines[1:]:
        f = line.split()
        flags, typ, st = int(f[3], 16), int(f[4], 16), int(f[5], 16)
        want[(typ, 10 if flags & 0x10000 else 1 if st == 3 else 7)] += 1
    got = net_sockets.read_unix(tree("live"))
    assert got == want
    assert got[(1, 10)] == 1 and got[(1, 1)] == 2  # the test's stream listener and its pair


def test_sockstat_fields() -> None:
    v4 = sockstat.read_sockstat(tree("live"))
    assert v4 is not None
    assert set(v4) == {"sockets", "TCP", "UDP", "UDPLITE", "RAW", "FRAG"}
    assert v4["TCP"]["tw"] == 4  # the capture's four TIME_WAIT sockets
    assert set(v4["TCP"]) == {"inuse", "orphan", "tw", "alloc", "mem"}
    v6 = sockstat.read_sockstat(tree("live"), "sockstat6")
    assert v6 is not None and "TCP6" in v6 and "FRAG6" in v6
