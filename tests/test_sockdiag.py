"""The netlink sock_diag reader on captured and constructed binary dumps.

tests/fixtures/netlink/*.bin hold the chunks the kernel sent (each prefixed with its 32-bit
length), captured in a namespace holding the live test's sockets, with `ss` output taken at the
same time as the oracle. Constructed dumps cover what a capture cannot: both parsing paths on the
same messages, truncation, NLMSG_ERROR, and errors reported in NLMSG_DONE.
"""

from __future__ import annotations

import os
import pathlib
import socket
import struct
from collections import Counter
from typing import List, Optional, Sequence, Tuple

import pytest
from helpers import FIXTURES

from exporter.netlink import sockdiag as sd
from exporter.netlink.transport import uniform_run, walk
from exporter.procfs import ParseError
from exporter.sockets.onepass import InetPass, ephemeral_range
from exporter.sockets.snapshot import Snapshot

NL = os.path.join(FIXTURES, "netlink")
SS_TO_NUM = {"ESTAB": 1, "SYN-SENT": 2, "SYN-RECV": 3, "FIN-WAIT-1": 4, "FIN-WAIT-2": 5,
             "TIME-WAIT": 6, "UNCONN": 7, "CLOSE-WAIT": 8, "LAST-ACK": 9, "LISTEN": 10,
             "CLOSING": 11}


class FakeSock:
    """Stands in for the netlink socket: records the request, replays chunks."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.chunks = list(chunks)
        self.sent: List[bytes] = []

    def sendto(self, data: bytes, addr: object) -> None:
        self.sent.append(data)

    def recv_into(self, buf: bytearray) -> int:
        if not self.chunks:
            return 0
        c = self.chunks.pop(0)
        buf[: len(c)] = c
        return len(c)

    def close(self) -> None:
        pass


def load(name: str) -> List[bytes]:
    with open(os.path.join(NL, name + ".bin"), "rb") as f:
        data = f.read()
    chunks, off = [], 0
    while off < len(data):
        (n,) = struct.unpack_from("<I", data, off)
        chunks.append(data[off + 4: off + 4 + n])
        off += 4 + n
    return chunks


def ss_states(name: str) -> Tuple[Counter, int, int]:
    states: Counter = Counter()
    rq = sq = 0
    with open(os.path.join(NL, name)) as f:
        for line in f:
            p = line.split()
            states[SS_TO_NUM[p[0]]] += 1
            if p[0] != "LISTEN":
                rq, sq = rq + int(p[1]), sq + int(p[2])
    return states, rq, sq


def msg(state: int, rq: int = 0, wq: int = 0, attrs: bytes = b"", flags: int = 2,
        family: int = socket.AF_INET) -> bytes:
    body = struct.pack("<BBBB", family, state, 0, 0) + b"\0" * 48 \
        + struct.pack("<IIIII", 0, rq, wq, 0, 1000 + state)
    body += attrs
    return struct.pack("<IHHII", 16 + len(body), sd.SOCK_DIAG_BY_FAMILY, flags, 1, 0) + body


def done(err: int = 0) -> bytes:
    return struct.pack("<IHHIIi", 20, sd.NLMSG_DONE, 2, 1, 0, err)


def attr(typ: int, payload: bytes) -> bytes:
    a = struct.pack("<HH", 4 + len(payload), typ) + payload
    return a + b"\0" * (-len(a) % 4)


def count_inet(family: int, protocol: int, sock: FakeSock,
               states: int = sd.ALL_STATES) -> sd.QueueCounts:
    """One family's sockets per state and queue bytes, as the snapshot counts a dump."""
    sink = sd.CountSink()
    intr = sd.dump_records(sd.inet_request(family, protocol, states), sink, sock=sock)
    return sink.family(family, intr)


# --- captured dumps ----------------------------------------------------------------------------

def test_captured_tcp_dump_matches_ss() -> None:
    got = count_inet(socket.AF_INET, 6, FakeSock(load("tcp4_all")))
    want, rq, sq = ss_states("ss-tan4.txt")
    # The capture holds one bound-but-idle socket, which the kernel reports as close and ss 6.1
    # does not list.
    assert got.states - Counter({7: 1}) == want
    assert got.states[7] == 1
    assert (got.rx_queue, got.tx_queue) == (rq, sq)
    assert not got.interrupted


def test_captured_udp_and_unix_dumps_match_ss() -> None:
    udp = count_inet(socket.AF_INET, 17, FakeSock(load("udp4_all")))
    want: Counter = Counter()
    with open(os.path.join(NL, "ss-uan4.txt")) as f:
        for line in f:
            want[{"ESTAB": 1, "UNCONN": 7}[line.split()[0]]] += 1
    assert udp.states == want
    counts, _, _, _ = sd.count_unix(sock=FakeSock(load("unix_all")))
    kinds = {"u_str": 1, "u_dgr": 2, "u_seq": 5}
    states = {"ESTAB": 1, "UNCONN": 7, "LISTEN": 10}
    want_unix: Counter = Counter()
    with open(os.path.join(NL, "ss-xan.txt")) as f:
        for line in f:
            p = line.split()
            want_unix[(kinds[p[0]], states[p[1]])] += 1
    assert counts == want_unix


def test_captured_decode_of_every_socket() -> None:
    out = sd.list_inet(socket.AF_INET6, 6, sock=FakeSock(load("tcp6_all")))
    listeners = [s for s in out if s.state == sd.TCP_LISTEN]
    assert [(s.src, s.sport) for s in listeners] == [("::1", 7002)]
    assert listeners[0].wqueue == 8  # the backlog the test passed to listen()
    assert {s.dport for s in out if s.state == 1} >= {7002}


def test_missing_handler_is_an_error_not_an_empty_dump() -> None:
    with pytest.raises(sd.NetlinkError) as e:
        count_inet(socket.AF_INET, 255, FakeSock(load("raw4_enoent")))
    assert e.value.errno == 2


# --- constructed dumps -------------------------------------------------------------------------

MIXED = [msg(10, rq=3, wq=128), msg(1, rq=5, wq=7, attrs=attr(8, b"\x00")), msg(6), msg(6),
         msg(8, rq=11, attrs=attr(8, b"\x00")), msg(3)]


def expected(msgs: Sequence[bytes]) -> Tuple[Counter, int, int]:
    states: Counter = Counter()
    rq = wq = 0
    for m in msgs:
        st = m[17]
        states[st] += 1
        if st != 10:
            r, w = struct.unpack_from("<II", m, 72)
            rq, wq = rq + r, wq + w
    return states, rq, wq


@pytest.mark.parametrize("msgs", [
    [msg(6)] * 50,  # uniform: the strided path
    [msg(1, rq=i, wq=2 * i) for i in range(40)] + [msg(10, rq=9, wq=4096)] * 3,  # uniform with listeners
    MIXED,  # lengths differ: the per-message path
    MIXED * 20,
])
def test_both_paths_count_the_same(msgs: List[bytes]) -> None:
    states, rq, wq = expected(msgs)
    for chunking in (1, 7, len(msgs)):
        chunks = [b"".join(msgs[i:i + chunking]) for i in range(0, len(msgs), chunking)]
        chunks[-1] += done()
        got = count_inet(socket.AF_INET, 6, FakeSock(chunks))
        assert (got.states, got.rx_queue, got.tx_queue) == (states, rq, wq), chunking


def test_uniform_path_is_taken_for_one_kind_of_socket() -> None:
    seen: List[str] = []

    def read(buf: bytearray) -> None:
        n = len(buf)
        walk(buf, 0, n, lambda *a: seen.append("one"),
             on_run=lambda off: uniform_run(buf, off, n, lambda *a: seen.append("run")))

    read(bytearray(b"".join([msg(6)] * 10) + done()))
    assert seen == ["run"]
    seen.clear()
    read(bytearray(b"".join(MIXED) + done()))
    assert seen == ["one"] * len(MIXED)


def test_request_is_inet_diag_req_v2() -> None:
    fake = FakeSock([done()])
    count_inet(socket.AF_INET6, 17, fake, 0x400)
    (req,) = fake.sent
    ln, typ, flags, _, _ = struct.unpack_from("<IHHII", req)
    assert (ln, typ, flags) == (16 + 56, sd.SOCK_DIAG_BY_FAMILY, 0x301)
    fam, proto, ext, pad, states = struct.unpack_from("<BBBBI", req, 16)
    assert (fam, proto, ext, pad, states) == (socket.AF_INET6, 17, 0, 0, 0x400)


@pytest.mark.parametrize("chunks, what", [
    ([msg(1)[:40]], "bad netlink message length"),
    ([msg(1)[:10]], "truncated netlink header"),
    ([struct.pack("<IHHII", 16 + 8, sd.SOCK_DIAG_BY_FAMILY, 2, 1, 0) + b"\0" * 8 + done()],
     "inet_diag_msg of 24 bytes"),
    ([msg(1)], "closed before NLMSG_DONE"),  # the socket went quiet with no NLMSG_DONE
])
def test_malformed_dumps_raise_parse_error(chunks: List[bytes], what: str) -> None:
    with pytest.raises(ParseError) as e:
        count_inet(socket.AF_INET, 6, FakeSock(chunks))
    assert what in str(e.value)


def test_nlmsg_error_reply() -> None:
    err = struct.pack("<IHHIIi", 36, sd.NLMSG_ERROR, 0, 1, 0, -13) + b"\0" * 16
    with pytest.raises(sd.NetlinkError) as e:
        count_inet(socket.AF_INET, 6, FakeSock([err]))
    assert e.value.errno == 13


def test_dump_interrupted_is_reported() -> None:
    chunks = [msg(1, flags=2 | sd.NLM_F_DUMP_INTR) + msg(6, flags=2 | sd.NLM_F_DUMP_INTR) + done()]
    assert count_inet(socket.AF_INET, 6, FakeSock(chunks)).interrupted


@pytest.mark.parametrize("shutdown", [False, True])
def test_unix_queue_bytes_skip_listeners(shutdown: bool) -> None:
    """Also with the UNIX_DIAG_SHUTDOWN attribute after RQLEN, as every kernel since 3.10 sends
    it (52-byte messages), in bulk and message by message."""
    def umsg(typ: int, state: int, rq: int, wq: int) -> bytes:
        body = struct.pack("<BBBBIII", socket.AF_UNIX, typ, state, 0, 5, 0, 0)
        body += attr(sd.UNIX_DIAG_RQLEN, struct.pack("<II", rq, wq))
        if shutdown:
            body += attr(6, b"\0")  # UNIX_DIAG_SHUTDOWN
        return struct.pack("<IHHII", 16 + len(body), sd.SOCK_DIAG_BY_FAMILY, 2, 1, 0) + body

    msgs = [umsg(1, 10, 2, 128), umsg(1, 1, 100, 0), umsg(2, 7, 0, 768), umsg(1, 1, 1, 1)]
    for chunks in ([b"".join(msgs) + done()], [m for m in msgs] + [done()]):
        counts, rq, wq, _ = sd.count_unix(sock=FakeSock(chunks))
        assert counts == Counter({(1, 10): 1, (1, 1): 2, (2, 7): 1})
        assert (rq, wq) == (101, 769)


@pytest.mark.parametrize("case", ["bulk", "state 16", "type 16", "other first attribute"])
def test_unix_runs_count_like_the_messages_say(case: str) -> None:
    """A chunk of 600 unix messages of one length, read column-wise, gives what each message
    says: counts by (type, state), queue bytes without the listeners'. Values that do not fit
    a nibble, and a run whose first attribute is not RQLEN, take the other paths."""
    import random
    rnd = random.Random(7)
    msgs, want, rq_sum, wq_sum = [], Counter(), 0, 0
    for i in range(600):
        typ, state = rnd.choice((1, 2, 5)), rnd.choice((1, 2, 7, 10))
        rq, wq = rnd.choice((0, 0, 0, 5, 70000)), rnd.choice((0, 0, 1, 1 << 20))
        if i == 300 and case == "state 16":
            state = 16
        if i == 300 and case == "type 16":
            typ = 16
        first = sd.UNIX_DIAG_RQLEN if not (i == 599 and case == "other first attribute") else 7
        body = struct.pack("<BBBBIII", socket.AF_UNIX, typ, state, 0, i, 0, 0)
        body += attr(first, struct.pack("<II", rq, wq)) + attr(6, b"\0")
        msgs.append(struct.pack("<IHHII", 16 + len(body), sd.SOCK_DIAG_BY_FAMILY, 2, 1, 0) + body)
        want[(typ, state)] += 1
        if state != 10 and first == sd.UNIX_DIAG_RQLEN:
            rq_sum += rq
            wq_sum += wq
    counts, rq_got, wq_got, _ = sd.count_unix(sock=FakeSock([b"".join(msgs) + done()]))
    assert counts == want
    assert (rq_got, wq_got) == (rq_sum, wq_sum)


# --- both families in one dump (TCPDIAG_GETSOCK) -------------------------------------------------

def compat(m: bytes) -> bytes:
    """The same message as the legacy request's reply carries it (type TCPDIAG_GETSOCK)."""
    return m[:4] + struct.pack("<H", sd.TCPDIAG_GETSOCK) + m[6:]


@pytest.mark.parametrize("msgs", [
    [msg(6)] * 30 + [msg(6, family=socket.AF_INET6)] * 4,  # one family per run
    [msg(1, rq=i, family=socket.AF_INET6 if i % 3 else socket.AF_INET) for i in range(30)],
    [msg(10, rq=2, wq=64), msg(10, rq=1, wq=128, family=socket.AF_INET6)] * 5,  # listeners
    MIXED + [msg(8, rq=4, family=socket.AF_INET6, attrs=attr(8, b"\x00"))],
])
def test_both_families_in_one_dump_split_exactly(msgs: List[bytes]) -> None:
    want = {fam: expected([m for m in msgs if m[16] == fam]) for fam in (2, 10)}
    chunks = [b"".join(compat(m) for m in msgs) + struct.pack("<IHHIIi", 20, sd.NLMSG_DONE, 2,
                                                              1, 0, 0)]
    fake = FakeSock(chunks)
    sink = sd.CountSink()
    sd.dump_records(sd.tcp_request_both_families(), sink, sock=fake,
                    msg_type=sd.TCPDIAG_GETSOCK)
    got = {f: sink.family(f) for f in (socket.AF_INET, socket.AF_INET6)}
    assert {f: (c.states, c.rx_queue, c.tx_queue) for f, c in got.items()} == want
    (req,) = fake.sent
    assert struct.unpack_from("<H", req, 4)[0] == sd.TCPDIAG_GETSOCK
    assert len(req) == 16 + sd.INET_REQ_V1.size


def test_both_families_fall_back_to_one_dump_each(tmp_path: pathlib.Path) -> None:
    refused = struct.pack("<IHHIIi", 36, sd.NLMSG_ERROR, 0, 1, 0, -22) + b"\0" * 16
    v4 = b"".join([msg(1), msg(6), msg(6)]) + done()
    v6 = msg(10, family=socket.AF_INET6) + done()
    fake = FakeSock([refused, v4, v6])
    with Snapshot(str(tmp_path), "netlink", netlink=fake) as snap:
        tables = snap.inet("tcp")
    assert tables is not None
    got = tables.counts
    assert got["ipv4"].states == Counter({6: 2, 1: 1})
    assert got["ipv6"].states == Counter({10: 1})
    assert [struct.unpack_from("<H", r, 4)[0] for r in fake.sent] == \
        [sd.TCPDIAG_GETSOCK, sd.SOCK_DIAG_BY_FAMILY, sd.SOCK_DIAG_BY_FAMILY]


def peer_msg(family: int, src: str, sport: int, dst: str, dport: int, state: int = 1) -> bytes:
    size = 4 if family == socket.AF_INET else 16
    addr = [socket.inet_pton(family, a).ljust(16, b"\0") for a in (src, dst)]
    assert all(len(a) == 16 for a in addr) and size in (4, 16)
    body = struct.pack("<BBBB", family, state, 0, 0) + struct.pack(">HH", sport, dport) \
        + addr[0] + addr[1] + b"\0" * 12 + struct.pack("<IIIII", 0, 0, 0, 0, 7)
    return struct.pack("<IHHII", 16 + len(body), sd.SOCK_DIAG_BY_FAMILY, 2, 1, 0) + body


def test_local_port_use_groups_by_peer_without_decoding() -> None:
    f6 = socket.AF_INET6
    msgs = [peer_msg(f6, "fd00::2", 40001, "fd00::9", 443),
            peer_msg(f6, "fd00::2", 40002, "fd00::9", 443),
            peer_msg(f6, "fd00::2", 40002, "fd00::8", 443),  # same local port, other peer
            peer_msg(f6, "::", 40003, "::", 0, state=7),  # bound, no peer
            peer_msg(f6, "fd00::2", 22, "fd00::9", 50000)]  # local port outside the range
    for proto in ("tcp", "udp"):
        sink = InetPass(proto, listeners=False, connections=False,
                        ephemeral=ephemeral_range(40000, 40099, []))
        sd.dump_records(sd.inet_request(f6, 6), sink, sock=FakeSock([b"".join(msgs) + done()]))
        use = sink.result("netlink", ["ipv6"]).ports
        assert use is not None
        assert use.used == 3  # 40001, 40002, 40003
        assert use.destinations == Counter({"fd00::2->[fd00::9]:443": 2,
                                            "fd00::2->[fd00::8]:443": 1})


@pytest.mark.parametrize("err, absent, falls_back", [
    (2, True, True),     # ENOENT: no diag handler for the protocol (raw_diag not built)
    (97, True, True),    # EAFNOSUPPORT: IPv6 off
    (1, False, True),    # EPERM: refused by policy, /proc/net may still be readable
    (13, False, True),   # EACCES
    (None, False, True),  # the socket call failed without an errno
    (16, False, False),  # EBUSY: a real error, not a reason to switch sources
])
def test_which_netlink_errors_mean_no_data_or_fall_back(err, absent: bool,
                                                        falls_back: bool) -> None:
    e = sd.NetlinkError(err, "x")
    assert (e.absent, e.falls_back) == (absent, falls_back)


@pytest.mark.parametrize("change, uniform", [
    (None, True),
    ("type", False),  # the same length, another message type
    ("high length byte", False),  # 52 against 52 + 256: only the second byte differs
])
def test_uniform_run_checks_every_header(change: Optional[str], uniform: bool) -> None:
    from exporter.netlink.transport import uniform_run
    body = b"\0" * 36
    msgs = [struct.pack("<IHHII", 52, sd.SOCK_DIAG_BY_FAMILY, 2, 1, 0) + body for _ in range(50)]
    if change == "type":
        msgs[31] = struct.pack("<IHHII", 52, sd.NLMSG_DONE, 2, 1, 0) + body
    if change == "high length byte":
        msgs[17] = struct.pack("<IHHII", 52 + 256, sd.SOCK_DIAG_BY_FAMILY, 2, 1, 0) + body
    buf = bytearray(b"".join(msgs))
    runs: List[Tuple[int, int, int]] = []
    end = uniform_run(buf, 0, len(buf), lambda b, s, e, ln: runs.append((s, e, ln)))
    assert (runs == [(0, len(buf), 52)] and end == len(buf)) if uniform else \
        (runs == [] and end == 0)
