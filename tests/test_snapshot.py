"""The socket snapshot: one per scrape, shared by the collectors of the scrape, each socket
table dumped once; every source decoding the same facts. Checked inside a network namespace
this test creates, against `ss` in the same namespace."""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
from collections import Counter
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from nshelpers import Holder, call_in, needs_root, netns, read_sysctl, run, set_sysctl
from prometheus_client.exposition import generate_latest

from exporter.config import Config
from exporter.netlink import inet as nl_inet
from exporter.netlink import transport
from exporter.procfs import net_sockets
from exporter.scrape import Exporter
from exporter.sockets import snapshot
from exporter.sockets.onepass import InetPass, ephemeral_range
from exporter.sockets.snapshot import Snapshot, Wants
from exporter.vocabulary.names import TCP_LISTEN

SOCKETS = r"""
import json, os, socket, sys
keep = []
l4 = socket.socket(); l4.bind(("127.0.0.1", 5001)); l4.listen(64)
l6 = socket.socket(socket.AF_INET6); l6.bind(("::1", 5002)); l6.listen(64)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 5003))
keep += [l4, l6, u]
for i in range(8):
    c = socket.create_connection(("127.0.0.1", 5001)); s, _ = l4.accept()
    if i < 3:
        c.close(); s.close()  # the client closes first: its side stays in TIME_WAIT
    else:
        keep += [c, s]
for i in range(2):
    c = socket.create_connection(("::1", 5002)); s, _ = l6.accept(); keep += [c, s]
for i in range(2):
    d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); d.connect(("127.0.0.1", 5003))
    keep.append(d)
print(json.dumps({"pid": os.getpid()}), flush=True)
sys.stdin.read()
"""


@pytest.fixture(scope="module")
def ns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[str, str]]:
    """The namespace's name and a procfs root for it: ``net`` is that of a process inside it;
    ``sys/net/ipv4`` holds the namespace's port range as read inside it (``/proc/sys/net`` shows
    the reader's namespace, so ``/proc/<pid>`` has no ``sys``)."""
    with netns("snap") as name:
        set_sysctl(name, {"net/ipv4/ip_local_port_range": "40000 40999"})
        holder = Holder(name, SOCKETS)
        try:
            pid = json.loads(holder.ready)["pid"]
            root = tmp_path_factory.mktemp(f"proc-{os.getpid()}")
            os.symlink(f"/proc/{pid}/net", root / "net")
            (root / "sys" / "net" / "ipv4").mkdir(parents=True)
            for key in ("ip_local_port_range", "ip_local_reserved_ports"):
                (root / "sys" / "net" / "ipv4" / key).write_text(
                    read_sysctl(name, f"net/ipv4/{key}"))
            yield name, str(root)
        finally:
            holder.close()


def ss_tcp(name: str) -> List[Tuple[str, str, int, str, int]]:
    """(state, local address, local port, remote address, remote port) of every TCP socket."""
    out = []
    for line in run(name, "ss", "-tanH").splitlines():
        st, _rq, _sq, local, remote = line.split()[:5]
        la, lp = local.rsplit(":", 1)
        ra, rp = remote.rsplit(":", 1)
        out.append((st, la.strip("[]"), int(lp), ra.strip("[]"), int(rp if rp != "*" else 0)))
    return out


SS_NUM = {"ESTAB": 1, "SYN-SENT": 2, "SYN-RECV": 3, "FIN-WAIT-1": 4, "FIN-WAIT-2": 5,
          "TIME-WAIT": 6, "CLOSE-WAIT": 8, "LAST-ACK": 9, "LISTEN": 10, "CLOSING": 11}


def take(name: str, root: str, source: str, wants: Wants) -> Snapshot:
    return Snapshot(root, source, wants=wants,
                    netlink=lambda: call_in(name, transport.open_socket))


class Requests:
    """Records every dump request the snapshot sends: (message type, family, protocol)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: List[Tuple[int, int, int]] = []
        real = transport.dump

        def dump(payload: bytes, *a: Any, **kw: Any) -> bool:
            self.sent.append((kw.get("msg_type", 20), payload[0], payload[1]))
            return real(payload, *a, **kw)

        monkeypatch.setattr(nl_inet, "dump", dump)
        monkeypatch.setattr("exporter.netlink.unix.dump", dump)


@needs_root
@pytest.mark.parametrize("source", ["netlink", "procfs"])
def test_every_source_decodes_the_same_facts_as_ss(ns: Tuple[str, str], source: str) -> None:
    same_facts_as_ss(ns, source)


@needs_root
def test_tcp_in_two_dumps_decodes_the_same_facts_as_ss(ns: Tuple[str, str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A namespace with thousands of TIME_WAIT sockets and of others is dumped in two parts
    (the others, then TIME_WAIT); here with a threshold of one, the facts are the same."""
    monkeypatch.setattr(snapshot, "SPLIT_TIME_WAIT", 1)
    reqs = Requests(monkeypatch)
    same_facts_as_ss(ns, "netlink")
    assert [r for r in reqs.sent if r[0] == 18] == [(18, 0, 0), (18, 0, 0)]
    reqs.sent.clear()
    monkeypatch.setattr(snapshot, "SPLIT_TIME_WAIT", 10**9)
    same_facts_as_ss(ns, "netlink")
    assert [r for r in reqs.sent if r[0] == 18] == [(18, 0, 0)]


def same_facts_as_ss(ns: Tuple[str, str], source: str) -> None:
    name, root = ns
    with take(name, root, source, Wants(listeners=True, connections=True, ephemeral=True)) as snap:
        tcp, udp = snap.inet("tcp"), snap.inet("udp")
        rows = ss_tcp(name)
    assert tcp is not None and udp is not None
    assert tcp.source == udp.source == source
    for fam, v6 in (("ipv4", False), ("ipv6", True)):
        want = Counter(SS_NUM[r[0]] for r in rows if (":" in r[1]) == v6)
        assert tcp.counts[fam].states == want, fam
    assert sorted((x.protocol, x.address, x.port) for x in tcp.listeners + udp.listeners) == [
        ("tcp", "127.0.0.1", 5001), ("tcp", "::1", 5002), ("udp", "127.0.0.1", 5003)]
    want_conn = Counter((r[2], SS_NUM[r[0]]) for r in rows
                        if r[2] in (5001, 5002) and r[0] != "LISTEN")
    assert tcp.connections == want_conn and tcp.connections[(5001, 1)] == 5
    assert tcp.ports is not None and udp.ports is not None
    eph = [r for r in rows if 40000 <= r[2] <= 40999 and r[0] != "LISTEN"]
    # ten client sockets in the range; an IPv4 and an IPv6 one may share a port number
    assert len(eph) == 10 and tcp.ports.used == len({r[2] for r in eph})
    assert tcp.ports.destinations == Counter(
        f"{r[1]}->{'[' + r[3] + ']' if ':' in r[3] else r[3]}:{r[4]}" for r in eph)
    assert tcp.ports.destinations["127.0.0.1->127.0.0.1:5001"] == 8
    assert (udp.ports.used, dict(udp.ports.destinations)) == (
        2, {"127.0.0.1->127.0.0.1:5003": 2})


@needs_root
def test_each_table_is_dumped_once_however_often_it_is_asked_for(
        ns: Tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    name, root = ns
    reqs = Requests(monkeypatch)
    with take(name, root, "netlink", Wants(True, True, True)) as snap:
        for _ in range(3):
            for proto in ("tcp", "udp", "udplite", "raw"):
                snap.inet(proto)
            snap.unix()
        assert snap.dumps == len(reqs.sent)
    assert len(reqs.sent) == len(set(reqs.sent))
    # TCP: both families in one dump (TCPDIAG_GETSOCK); the others one per family; unix once.
    assert [r for r in reqs.sent if r[0] == 18] == [(18, 0, 0)]
    # The others once per family, but only where the kernel counts sockets in the namespace
    # (sockstat "inuse"): this one has IPv4 UDP sockets only.
    assert sorted(r[1:] for r in reqs.sent if r[0] == 20) == [(1, 0), (2, 17)] == sorted(
        [(1, 0)] + [(fam, num) for fam, num, n in inuse(root) if n])


def inuse(root: str) -> List[Tuple[int, int, int]]:
    """(family, protocol number, sockets in use) of UDP, UDP-Lite and raw, from sockstat."""
    out = []
    for fam, name in ((2, "sockstat"), (10, "sockstat6")):
        with open(os.path.join(root, "net", name)) as f:
            rows = {ln.split(":")[0]: ln.split() for ln in f}
        for proto, num in (("UDP", 17), ("UDPLITE", 136), ("RAW", 255)):
            row = rows[proto + ("6" if fam == 10 else "")]
            out.append((fam, num, int(row[row.index("inuse") + 1])))
    return out


def scrape(ex: Exporter, *only: str) -> Dict[str, float]:
    text = generate_latest(ex.target(list(only))).decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, val = line.rsplit(" ", 1)
            out[key] = float(val)
    return out


def exporter_in(root: str) -> Exporter:
    return Exporter(Config(procfs=root,
                           collectors=frozenset({"sockets", "listeners", "ports", "protocols"}),
                           disable_exporter_metrics=True))


DUMPS = "netstat_exporter_netlink_dumps"


@needs_root
def test_the_collectors_of_a_scrape_share_one_snapshot(ns: Tuple[str, str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    name, root = ns
    ex = exporter_in(root)
    reqs = Requests(monkeypatch)
    full = call_in(name, scrape, ex)
    assert full[DUMPS] == len(reqs.sent) and len(set(reqs.sent)) == len(reqs.sent)
    reqs.sent.clear()
    alone = call_in(name, scrape, ex, "sockets")
    # listeners and ports add no dump of their own
    assert alone[DUMPS] == full[DUMPS] == len(reqs.sent)
    reqs.sent.clear()
    two = call_in(name, scrape, ex, "listeners", "ports")
    assert two[DUMPS] == 2 == len(reqs.sent)  # TCP once, UDP of the one family that has some
    reqs.sent.clear()
    none = call_in(name, scrape, ex, "protocols")
    assert reqs.sent == [] and DUMPS not in none
    # the counts of the shared scrape are those of each collector alone
    for key, v in alone.items():
        if key.startswith("netstat_sockets{"):
            assert full[key] == v, key
    conn = 'netstat_listener_connections{port="5001",state="established"}'
    assert two[conn] == full[conn] == 5
    use = 'netstat_ports_ephemeral_destination_used_max{protocol="tcp"}'
    assert two[use] == full[use] == 8


@needs_root
def test_every_scrape_takes_a_fresh_snapshot(ns: Tuple[str, str]) -> None:
    name, root = ns
    ex = exporter_in(root)
    key = 'netstat_sockets{family="ipv4",protocol="tcp",state="listen"}'
    before = call_in(name, scrape, ex, "sockets")[key]
    extra = call_in(name, socket.socket)
    try:
        extra.bind(("127.0.0.1", 0))
        extra.listen(1)
        assert call_in(name, scrape, ex, "sockets")[key] == before + 1
    finally:
        extra.close()
    assert call_in(name, scrape, ex, "sockets")[key] == before


@needs_root
def test_concurrent_scrapes_never_share_a_snapshot(ns: Tuple[str, str]) -> None:
    name, root = ns
    ex = exporter_in(root)
    want = call_in(name, scrape, ex)
    results: List[Dict[str, float]] = []
    lock = threading.Lock()

    def many() -> None:
        for _ in range(5):
            got = scrape(ex)
            with lock:
                results.append(got)

    threads = [threading.Thread(target=call_in, args=(name, many)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 20
    counted = [k for k in want if k.startswith(("netstat_sockets{", "netstat_listener_conn",
                                                "netstat_ports_", DUMPS))
               and "time_wait" not in k]  # TIME_WAIT sockets may expire meanwhile: not compared
    for got in results:
        assert {k: got[k] for k in counted} == {k: want[k] for k in counted}


# --- the bulk decoder on constructed dumps ---------------------------------------------------

def rec(state: int, sport: int, dport: int, attrs: int = 0, family: int = socket.AF_INET,
        msg_type: int = 18, flags: int = 2) -> bytes:
    src = socket.inet_pton(family, "127.0.0.1" if family == socket.AF_INET else "::1")
    body = struct.pack("<BBBB", family, state, 0, 0) + struct.pack(">HH", sport, dport) \
        + src.ljust(16, b"\0") + src.ljust(16, b"\0") + b"\0" * 12 \
        + struct.pack("<IIIII", 0, state, 1, 0, 100 + sport) + b"\x08\x00\x08\x00" * attrs
    return struct.pack("<IHHII", 16 + len(body), msg_type, flags, 7, 99) + body


def done() -> bytes:
    return struct.pack("<IHHIIi", 20, transport.NLMSG_DONE, 2, 7, 99, 0)


class FakeSock:
    def __init__(self, chunks: List[bytes]) -> None:
        self.chunks = list(chunks)

    def sendto(self, data: bytes, addr: object) -> None:
        pass

    def recv_into(self, buf: bytearray) -> int:
        c = self.chunks.pop(0)
        buf[:len(c)] = c
        return len(c)

    def close(self) -> None:
        pass


# Full sockets (with attributes) and time-wait minisockets (without) interleaved, as a dump of
# every TCP state gives them; one of the headers' byte patterns also appears inside a body.
MIXED = [rec(TCP_LISTEN, 5001, 0, 2), rec(1, 40001, 5001, 2), rec(6, 40002, 5001),
         rec(1, 5001, 40001, 2), rec(6, 40003, 5001), rec(8, 40004, 5001, 2, socket.AF_INET6),
         rec(1, 40005, 5001, 2)]


@pytest.mark.parametrize("chunking", [1, 2, 3, len(MIXED)])
@pytest.mark.parametrize("flags", [2, 2 | transport.NLM_F_DUMP_INTR])
def test_mixed_lengths_decode_as_message_by_message(chunking: int, flags: int) -> None:
    msgs = [m[:6] + struct.pack("<H", flags) + m[8:] for m in MIXED]
    chunks = [b"".join(msgs[i:i + chunking]) for i in range(0, len(msgs), chunking)]
    chunks[-1] += done()
    got = nl_inet.list_records(b"", sock=FakeSock(chunks), msg_type=18)
    want = [nl_inet.parse_inet_msg(m) for m in MIXED]
    # (runs of mixed lengths are regrouped by length: the same records, in another order)
    assert sorted(got, key=repr) == sorted(want, key=repr)
    # the one-pass decoder over the same chunks
    p = InetPass("tcp", ephemeral=ephemeral_range(40000, 40999, []))
    nl_inet.dump_records(b"", p, sock=FakeSock(list(chunks)), msg_type=18)
    out = p.result("netlink", ["ipv4", "ipv6"])
    assert out.counts["ipv4"].states == Counter({1: 3, 6: 2, 10: 1})
    assert out.counts["ipv6"].states == Counter({8: 1})
    # queue fields hold the state number in these records; the listener's are left out
    assert out.counts["ipv4"].rx_queue == 3 * 1 + 2 * 6
    assert out.connections == Counter({(5001, 1): 1})
    assert [(x.address, x.port, x.queue) for x in out.listeners] == [("127.0.0.1", 5001, 10)]
    assert out.ports is not None and out.ports.used == 5
    assert out.ports.destinations == Counter({"127.0.0.1->127.0.0.1:5001": 4,
                                              "::1->[::1]:5001": 1})


def test_a_header_pattern_inside_a_body_does_not_mislead_the_split() -> None:
    msgs = [rec(1, 40001, 5001, 2), rec(6, 40002, 5001)]
    # Put the 12 bytes every header of this dump shares into the first message's attributes.
    sep = msgs[0][4:16]
    body = msgs[0][:-12] + sep
    msgs[0] = body
    chunk = b"".join(msgs) + done()
    got = nl_inet.list_records(b"", sock=FakeSock([chunk]), msg_type=18)
    assert [(s.state, s.sport) for s in got] == [(1, 40001), (6, 40002)]


def test_header_patterns_inside_two_bodies_do_not_mislead_the_split() -> None:
    """The split is checked by counting the length words: a header pattern in two bodies at
    once still sends the region to the message-by-message reader."""
    msgs = [rec(1, 40001, 5001, 2), rec(6, 40002, 5001), rec(1, 40003, 5001, 2),
            rec(6, 40004, 5001)]
    sep = msgs[0][4:16]
    for i in (0, 2):
        msgs[i] = msgs[i][:-12] + sep
    region = bytearray(b"".join(msgs))
    assert nl_inet._regroup(region, 0, len(region), 18) == []
    got = nl_inet.list_records(b"", sock=FakeSock([bytes(region) + done()]), msg_type=18)
    assert [(s.state, s.sport) for s in got] == [(1, 40001), (6, 40002), (1, 40003), (6, 40004)]


def test_chunks_are_gathered_and_the_last_one_ends_the_dump() -> None:
    """Full kernel chunks are handed on several at a time; the one that ends with NLMSG_DONE is
    handed on at once (nothing more is read: the fake socket has nothing more to give)."""
    one = [rec(1, 40000 + i, 5001, 2) if i % 3 else rec(6, 40000 + i, 5001)
           for i in range(900)]
    per = len(b"".join(one[:330]))  # about 30 KiB: a full chunk
    assert transport.RECV_BUFSIZE // 4 < per <= transport.RECV_BUFSIZE // 2
    chunks = [b"".join(one[i:i + 330]) for i in range(0, 900, 330)]
    chunks[-1] += done()
    calls: List[int] = []
    p = InetPass("tcp", ephemeral=ephemeral_range(40000, 40999, []))

    def sink(buf: Any, start: int, end: int, stride: int) -> None:
        calls.append((end - start) // stride)
        p(buf, start, end, stride)

    nl_inet.dump_records(b"", sink, sock=FakeSock(chunks), msg_type=18)
    out = p.result("netlink", ["ipv4"])
    assert out.counts["ipv4"].states == Counter({1: 600, 6: 300})
    assert sum(calls) == 900
    # one batch of every chunk, regrouped into two runs (full sockets, time-wait)
    assert len(calls) == 2, calls


def test_a_table_that_failed_is_not_read_again_in_the_same_snapshot(tmp_path) -> None:
    """A malformed table fails every collector that asks for it, from one read."""
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text("  sl  local_address rem_address   st\n"
                                          "   0: 0100007F:1B58 00000000:0000 zz\n")
    reads = []
    real = net_sockets.read_socket_rows

    def counted(root: str, name: str) -> Any:
        reads.append(name)
        return real(root, name)

    from exporter.procfs import ParseError

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(net_sockets, "read_socket_rows", counted)
        with Snapshot(str(tmp_path), "procfs") as snap:
            for _ in range(3):
                with pytest.raises(ParseError, match="net/tcp:2: bad state"):
                    snap.inet("tcp")
    assert reads == ["tcp"]


def test_destinations_per_local_address_in_one_run() -> None:
    """IPv4 TCP keys number the local address of each socket: runs with one local address and
    with several give the same per-destination counts as a socket-by-socket count."""

    def rec4(src: str, sport: int, dst: str, dport: int) -> bytes:
        body = struct.pack("<BBBB", socket.AF_INET, 1, 0, 0) + struct.pack(">HH", sport, dport) \
            + socket.inet_aton(src).ljust(16, b"\0") + socket.inet_aton(dst).ljust(16, b"\0") \
            + b"\0" * 12 + struct.pack("<IIIII", 0, 0, 0, 0, sport)
        return struct.pack("<IHHII", 16 + len(body), 18, 2, 7, 99) + body

    conns = [("127.0.0.1", 40001, "127.0.0.9", 80), ("127.0.0.2", 40002, "127.0.0.9", 80),
             ("127.0.0.1", 40003, "127.0.0.9", 80), ("127.0.0.3", 40004, "127.0.0.8", 443),
             ("127.0.0.1", 30000, "127.0.0.9", 80)]  # not an ephemeral port: not counted
    for chunks in ([conns[:1], conns[2:3]], [conns], [conns[:3], conns[3:]]):
        p = InetPass("tcp", ephemeral=ephemeral_range(40000, 40999, []))
        raw = [b"".join(rec4(*c) for c in chunk) for chunk in chunks]
        raw[-1] += done()
        nl_inet.dump_records(b"", p, sock=FakeSock(raw), msg_type=18)
        out = p.result("netlink", ["ipv4"])
        want = Counter(f"{s}->{d}:{dp}" for chunk in chunks for s, sp, d, dp in chunk
                       if sp >= 40000)
        assert out.ports is not None and out.ports.destinations == want, chunks
        assert out.ports.used == sum(want.values())


def test_each_file_is_read_once_per_snapshot_and_its_error_raised_each_time(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """sockstat, the ephemeral range and /proc/net/protocols are read at most once per
    snapshot, however many collectors ask; a file that failed raises the same error every
    time it is asked for, and is not read again."""
    from exporter.procfs import sockstat as sockstat_mod
    from exporter.procfs.errors import ParseError

    calls: Counter[str] = Counter()
    real_protocols = sockstat_mod.read_protocols
    real_range = snapshot.read_ephemeral_range

    def broken_sockstat(root: str, name: str) -> Any:
        calls["sockstat"] += 1
        raise ParseError(f"{root}/net/{name}", "cut short", 2)

    def counted_protocols(root: str) -> Any:
        calls["protocols"] += 1
        return real_protocols(root)

    def counted_range(root: str) -> Any:
        calls["range"] += 1
        return real_range(root)

    monkeypatch.setattr(sockstat_mod, "read_sockstat", broken_sockstat)
    monkeypatch.setattr(sockstat_mod, "read_protocols", counted_protocols)
    monkeypatch.setattr(snapshot, "read_ephemeral_range", counted_range)
    with Snapshot("/proc", "netlink") as snap:
        for _ in range(3):
            with pytest.raises(ParseError, match="cut short"):
                snap.sockstat()
            assert snap.unix_inuse() == snap.unix_inuse()
            assert snap.ephemeral() is not None
    assert calls == {"sockstat": 1, "protocols": 1, "range": 1}
    with Snapshot("/proc", "netlink") as snap:  # a new snapshot reads afresh
        snap.ephemeral()
    assert calls["range"] == 2
