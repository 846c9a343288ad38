"""The tcpevents collector's pure parts: the eBPF assembler, the tracefs format reader, the
programs built from formats (offsets from the format, never hard-coded), and the collector's
output and failure, without a kernel (tests/test_tcpevents_live.py has the real thing)."""

from __future__ import annotations

import os
import struct
from typing import List, Tuple

import pytest
from helpers import FIXTURES

from exporter.bpf import asm, tracefs
from exporter.bpf import tcpevents as te
from exporter.bpf.asm import FP, R0, R1, R2, R6, R10, Asm, AsmError, reg
from exporter.collectors import tcpevents as coll
from exporter.config import Config, ConfigError
from exporter.vocabulary import model as te_model

TRACEFS = os.path.join(FIXTURES, "tracefs")


def insns(code: bytes) -> List[Tuple[int, int, int, int, int]]:
    """(opcode, dst, src, off, imm) of each 8-byte slot, little-endian host."""
    out = []
    for i in range(0, len(code), 8):
        op, regs, off, imm = struct.unpack("<BBhi", code[i:i + 8])
        out.append((op, regs & 0xF, regs >> 4, off, imm))
    return out


# --- the assembler ---------------------------------------------------------------------------


@pytest.mark.parametrize("emit,expected", [
    # Encodings as the kernel's own tests and llvm-objdump print them.
    (lambda a: a.mov(R0, 0), "b700000000000000"),  # r0 = 0
    (lambda a: a.exit(), "9500000000000000"),  # exit
    (lambda a: a.mov(R6, reg(R1)), "bf16000000000000"),  # r6 = r1
    (lambda a: a.add(R2, -4), "07020000fcffffff"),  # r2 += -4
    (lambda a: a.ldx(4, R2, R1, 16), "6112100000000000"),  # r2 = *(u32 *)(r1 + 16)
    (lambda a: a.ldx(2, R2, R1, 30), "69121e0000000000"),  # r2 = *(u16 *)(r1 + 30)
    (lambda a: a.ldx(8, R2, R0, 0), "7902000000000000"),  # r2 = *(u64 *)(r0 + 0)
    (lambda a: a.stx(4, FP, -4, R1), "631afcff00000000"),  # *(u32 *)(r10 - 4) = r1
    (lambda a: a.st(4, FP, -4, 261), "620afcff05010000"),  # *(u32 *)(r10 - 4) = 261
    (lambda a: a.atomic_add(8, R0, 8, R1), "db10080000000000"),  # lock *(u64 *)(r0 + 8) += r1
    (lambda a: a.call(asm.MAP_LOOKUP_ELEM), "8500000001000000"),  # call 1
    (lambda a: a.lsh(R1, 4), "6701000004000000"),  # r1 <<= 4
    (lambda a: a.or_(R1, reg(R2)), "4f21000000000000"),  # r1 |= r2
    (lambda a: a.to_be(R1, 16), "dc01000010000000"),  # r1 = be16 r1
])
def test_encodings(emit, expected: str) -> None:
    a = Asm()
    emit(a)
    assert a.assemble(byteorder="little").hex() == expected


def test_map_fd_load_takes_two_slots() -> None:
    a = Asm()
    a.ld_map_fd(R1, 7)
    code = a.assemble(byteorder="little")
    assert len(a) == 2 and code.hex() == "1811000007000000" + "0000000000000000"


def test_jumps_resolve_forward_and_backward() -> None:
    a = Asm()
    a.label("top")
    a.jmp("eq", R0, 0, "end")  # pc 0: to pc 4 -> off 3
    a.ld_map_fd(R1, 3)  # pc 1, 2
    a.ja("top")  # pc 3: to pc 0 -> off -4
    a.label("end")
    a.exit()
    ins = insns(a.assemble(byteorder="little"))
    assert ins[0] == (0x15, R0, 0, 3, 0)
    assert ins[3] == (0x05, 0, 0, -4, 0)


def test_jump_with_register_and_32_bits() -> None:
    a = Asm()
    a.jmp("sgt", R1, reg(R2), "x", bits=32)
    a.label("x")
    assert insns(a.assemble(byteorder="little"))[0] == (0x6E, R1, R2, 0, 0)


def test_big_endian_hosts_swap_the_register_nibbles() -> None:
    assert asm.encode(0xBF, R6, R1, 0, 0, byteorder="big").hex() == "bf61000000000000"
    assert asm.encode(0x61, R2, R1, 16, 0, byteorder="big").hex() == "6121001000000000"


@pytest.mark.parametrize("bad", [
    lambda a: a.mov(11, 0),
    lambda a: a.mov(R0, 1 << 31),
    lambda a: a.ldx(3, R0, R1, 0),
    lambda a: a.ldx(4, R0, R1, 1 << 15),
    lambda a: a.alu("nope", R0, 1),
    lambda a: a.jmp("nope", R0, 1, "x"),
    lambda a: a.atomic_add(2, R0, 0, R1),
    lambda a: a.to_be(R0, 8),
    lambda a: (a.label("x"), a.label("x")),
])
def test_what_cannot_be_encoded_is_refused(bad) -> None:
    with pytest.raises(AsmError):
        bad(Asm())


def test_undefined_label() -> None:
    a = Asm()
    a.ja("nowhere")
    with pytest.raises(AsmError, match="nowhere"):
        a.assemble()


def test_wide_immediate() -> None:
    a = Asm()
    a.ld_imm64(R0, 0x1122334455667788)
    ins = insns(a.assemble(byteorder="little"))
    assert ins[0][4] & 0xFFFFFFFF == 0x55667788 and ins[1][4] == 0x11223344
    assert R10 == FP


# --- tracefs -------------------------------------------------------------------------------------


def fmt(version: str, event: str) -> tracefs.Format:
    system, name = event.split(":")
    return tracefs.read_format(os.path.join(TRACEFS, version), system, name)


def test_format_fields_and_id() -> None:
    f = fmt("6.18", te.SET_STATE)
    assert f.id == 2287 and f.name == "inet_sock_set_state"
    assert f.field("oldstate") == tracefs.Field("oldstate", "int", 16, 4, True)
    assert f.field("sport").offset == 24 and f.field("protocol").offset == 30
    assert f.field("saddr_v6").array == 16 and f.field("saddr_v6").size == 16
    assert f.field("skaddr").ctype == "const void *"
    with pytest.raises(tracefs.TracefsError, match="no field 'nope'"):
        f.field("nope")


def test_format_without_id_is_an_error() -> None:
    with pytest.raises(tracefs.TracefsError, match="no ID"):
        tracefs.parse_format("name: x\nformat:\n", "s", "x")


def test_a_missing_tracepoint_is_named() -> None:
    with pytest.raises(tracefs.TracefsError, match="no tracepoint tcp:nope"):
        tracefs.read_format(os.path.join(TRACEFS, "6.18"), "tcp", "nope")
    got = tracefs.read_formats(os.path.join(TRACEFS, "5.15"), ["tcp:tcp_send_reset"],
                               optional=["tcp:tcp_retransmit_synack"])
    assert list(got) == ["tcp:tcp_send_reset"]


def test_ports_of_a_record_in_either_layout() -> None:
    # Since Linux 6.10 tcp_send_reset has sockaddrs (port in network order at byte 2).
    assert te._port(fmt("6.18", te.SEND_RESET), "s") == te.PortSource(34, True)
    assert te._port(fmt("6.18", te.SEND_RESET), "d") == te.PortSource(62, True)
    assert te._port(fmt("5.15", te.SEND_RESET), "s") == te.PortSource(28, False)
    assert te._port(fmt("6.18", te.RETRANSMIT), "d") == te.PortSource(30, False)


def test_mounted_reads_the_mount_table(tmp_path) -> None:
    root = tmp_path / "tracing"
    (root / "events").mkdir(parents=True)
    mounts = tmp_path / "mounts"
    mounts.write_text(f"proc /proc proc rw 0 0\nnodev {root} tracefs rw 0 0\n")
    assert tracefs.mounted(str(mounts)) == str(root)
    mounts.write_text("proc /proc proc rw 0 0\n")
    assert tracefs.mounted(str(mounts)) is None
    with pytest.raises(tracefs.TracefsError, match="tracefs is not mounted"):
        tracefs.find(mount_if_missing=False, target=str(tmp_path / "none"), mounts=str(mounts))


# --- the programs ----------------------------------------------------------------------------


MAPS = te.Maps(counts=3, port_class=4, seen_listen=5, ports=6, max_ports=64)


def ctx_loads(code: bytes) -> List[int]:
    """Offsets of the loads from the record, before the first call (r1 or r6 as source)."""
    out = []
    for op, _dst, src, off, _imm in insns(code):
        if op == 0x85:
            break
        if op & 0x07 == asm.LDX and src in (R1, R6):
            out.append(off)
    return out


@pytest.mark.parametrize("version", ["6.18", "5.15"])
def test_programs_build_from_each_format(version: str) -> None:
    root = os.path.join(TRACEFS, version)
    for tp, build in te.PROGRAMS.items():
        system, name = tp.split(":")
        if not os.path.exists(os.path.join(root, "events", system, name)):
            continue
        f = tracefs.read_format(root, system, name)
        code = build(f, MAPS)
        assert len(code) % 8 == 0 and 20 < len(code) // 8 < 400
        assert insns(code)[-1][0] == 0x95  # ends in exit
        fields = {x.offset for x in f.fields.values()} | \
            {x.offset + 2 for x in f.fields.values() if x.size >= 16}
        assert set(ctx_loads(code)) <= fields, tp


def test_offsets_come_from_the_format_file() -> None:
    """Move every field 8 bytes on: every load from the record moves with it."""
    path = os.path.join(TRACEFS, "6.18", "events", "sock", "inet_sock_set_state", "format")
    with open(path) as fh:
        text = fh.read()
    import re

    def shift(m: re.Match[str]) -> str:
        off = int(m.group(2))
        return f"{m.group(1)}{off + 8 if off >= 8 else off};"

    moved = tracefs.parse_format(re.sub(r"(offset:)(\d+);", shift, text))
    a = ctx_loads(te.set_state_program(tracefs.parse_format(text), MAPS))
    b = ctx_loads(te.set_state_program(moved, MAPS))
    assert a and [x + 8 for x in a] == b


def test_network_order_ports_are_swapped() -> None:
    code = insns(te.send_reset_program(fmt("6.18", te.SEND_RESET), MAPS))
    assert any(op == 0xDC and imm == 16 for op, _d, _s, _o, imm in code)  # be16
    code = insns(te.send_reset_program(fmt("5.15", te.SEND_RESET), MAPS))
    assert not any(op == 0xDC for op, *_ in code)


def test_the_map_fds_are_in_the_program() -> None:
    code = insns(te.set_state_program(fmt("6.18", te.SET_STATE), MAPS))
    fds = {imm for op, _d, src, _o, imm in code if op == 0x18 and src == asm.PSEUDO_MAP_FD}
    assert fds == {3, 4, 5, 6}


def test_port_filter_adds_a_check() -> None:
    f = fmt("6.18", te.RECEIVE_RESET)
    assert len(te.receive_reset_program(f, MAPS, (7000, 7100))) > \
        len(te.receive_reset_program(f, MAPS))


# --- the collector ---------------------------------------------------------------------------


def config(**opts) -> Config:
    return Config(collectors=frozenset({"tcpevents"}),
                  options={"tcpevents": coll.TcpEventsOptions(**opts)})


def test_a_load_failure_is_one_line_every_scrape(monkeypatch) -> None:
    calls = []

    def refuse(*a, **k):
        calls.append(1)
        raise te.LoadError("needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) to load BPF\n"
                           "programs")

    class NoSockets:  # a scrape's snapshot of a host with no TCP table and no range
        def inet(self, protocol):
            return None

        def ephemeral(self):
            return None

    monkeypatch.setattr(te, "TcpEvents", refuse)
    c = coll.TcpEventsCollector(config())
    with pytest.raises(RuntimeError) as e:
        list(c.collect_snapshot(NoSockets()))  # type: ignore[arg-type]
    assert str(e.value) == "needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) to load BPF programs"
    assert len(calls) == 2  # at start, and tried again at the scrape


def test_the_programs_are_told_the_ports_before_they_attach(monkeypatch) -> None:
    """The programs get the listening ports and the ephemeral range as they load; when no
    snapshot can be had at start, they load at the first scrape, with that scrape's."""
    made = []

    class Loaded:
        def __init__(self, *a, ports=None, **k):
            made.append(ports)

        def set_ports(self, *ports):
            pass

        def read(self):
            return te.Reading({}, {}, (0,) * len(te.KINDS), 0, 0, ())

    class Snap:
        def inet(self, protocol):
            return None

        def ephemeral(self):
            return te_model.EphemeralRange(frozenset({40000, 40001}))

    def no_snapshot(self):
        raise OSError("netlink: no")

    monkeypatch.setattr(te, "TcpEvents", Loaded)
    monkeypatch.setattr(coll.TcpEventsCollector, "snapshot", no_snapshot)
    c = coll.TcpEventsCollector(config())
    assert made == []
    list(c.collect_snapshot(Snap()))  # type: ignore[arg-type]
    assert made == [([], frozenset({40000, 40001}))]


def test_output_of_a_reading(monkeypatch) -> None:
    monkeypatch.setattr(te, "TcpEvents", lambda *a, **k: (_ for _ in ()).throw(te.LoadError("x")))
    c = coll.TcpEventsCollector(config(max_ports=64))
    r = te.Reading(transitions={(2, 1): 5, (4, 4): 1},
                   ports={(te.SIDE_LOCAL, 443): (1, 2, 3, 0, 4, 5),
                          (te.SIDE_REMOTE, 5432): (0, 0, 0, 1, 0, 2),
                          (te.SIDE_UNKNOWN, 0): (1, 0, 0, 0, 0, 0)},
                   overflow=(0, 0, 0, 7, 0, 0), missed=3, map_entries=3)
    fams = {f.name: f for f in c._families(r)}
    tr = {(s.labels["from"], s.labels["to"]): s.value
          for s in fams["netstat_tcpevents_transitions"].samples}
    assert tr[("syn_sent", "established")] == 5 and tr[("fin_wait1", "fin_wait1")] == 1
    assert tr[("last_ack", "close")] == 0  # the common ones always, zero included
    ports = {(s.labels["port"], s.labels["side"], s.labels["event"]): s.value
             for s in fams["netstat_tcpevents_port_events"].samples}
    assert ports[("443", "local", "retransmit")] == 1
    assert ports[("443", "local", "reset_received")] == 3
    assert ports[("5432", "remote", "connect_failed")] == 1
    assert ports[("ephemeral", "unknown", "retransmit")] == 1
    assert ("5432", "remote", "retransmit") not in ports  # only the events a port has had
    assert len(ports) == 5 + 2 + 1
    overflow = {s.labels["event"]: s.value for s in fams["netstat_tcpevents_port_overflow"].samples}
    assert overflow["connect_failed"] == 7
    assert fams["netstat_tcpevents_missed"].samples[0].value == 3
    assert fams["netstat_tcpevents_ports_limit"].samples[0].value == 64


def reference_port_samples(ports):
    """netstat_tcpevents_port_events_total as the plain loop builds it: sorted by side and
    port, the kinds in their order, only those a port has had, each a Sample of floats."""
    from prometheus_client.samples import Sample
    out = []
    for (side, port), counts in sorted(ports.items()):
        for kind, n in zip(te.KINDS, counts):
            if n:
                out.append(Sample("netstat_tcpevents_port_events_total",
                                  {"port": "ephemeral" if side == te.SIDE_UNKNOWN else str(port),
                                   "side": te.SIDES.get(side, "unknown"), "event": kind},
                                  float(n)))
    return out


def test_port_samples_are_the_plain_loops_in_order(monkeypatch) -> None:
    import random
    monkeypatch.setattr(te, "TcpEvents", lambda *a, **k: (_ for _ in ()).throw(te.LoadError("x")))
    c = coll.TcpEventsCollector(config())
    rnd = random.Random(21)
    ports = {(side, port): tuple(rnd.choice((0, 0, 0, 1, 7, 2 ** 40)) for _ in te.KINDS)
             for side, port in {(rnd.choice((1, 2, 3, 9)), rnd.randrange(65536))
                                for _ in range(1500)}}
    ports[(te.SIDE_UNKNOWN, 0)] = (1, 0, 0, 0, 0, 2)
    ports[(te.SIDE_LOCAL, 8080)] = (0,) * len(te.KINDS)  # a key with nothing: no sample
    shuffled = dict(rnd.sample(list(ports.items()), len(ports)))
    r = te.Reading(transitions={}, ports=shuffled, overflow=(0,) * len(te.KINDS), missed=0)
    fam = next(f for f in c._families(r) if f.name == "netstat_tcpevents_port_events")
    want = reference_port_samples(ports)
    assert fam.samples == want
    assert [type(s) for s in fam.samples] == [type(s) for s in want]
    assert all(type(s.value) is float for s in fam.samples)
    assert {s.labels["side"] for s in fam.samples} == {"local", "remote", "unknown"}


def test_per_port_keys_come_in_key_order() -> None:
    rnd = __import__("random").Random(7)
    keys = rnd.sample([side << 16 | port for side in (1, 2, 3) for port in range(0, 65536, 7)],
                      3000)
    raw = struct.pack(f"={len(keys)}I", *keys)
    values = [(k, k + 1) for k in keys]
    got = te._in_key_order(raw, values)
    assert list(got) == sorted((k >> 16, k & 0xFFFF) for k in keys)
    assert all(v == ((s << 16 | p), (s << 16 | p) + 1) for (s, p), v in got.items())
    assert te._in_key_order(b"", []) == {}


def test_max_ports_is_checked() -> None:
    with pytest.raises(ConfigError):
        coll.TcpEventsOptions(max_ports=1)


def test_off_by_default() -> None:
    from exporter.collectors.api import specs

    assert specs()["tcpevents"].default_enabled is False


# --- per-CPU maps ----------------------------------------------------------------------------


def test_per_cpu_values_are_summed_by_slot() -> None:
    # Two keys, three CPUs, four slots of which the first three are used.
    values = [[(k + 1) * 100 + c * 10 + s for s in range(4)] for k in range(2) for c in range(3)]
    blob = struct.pack(f"={2 * 3 * 4}Q", *(v for rec in values for v in rec))
    got = te._sum_cpus(blob, 2, 4, 3, 3)
    assert got == [tuple(sum(100 + c * 10 + s for c in range(3)) for s in range(3)),
                   tuple(sum(200 + c * 10 + s for c in range(3)) for s in range(3))]
    assert te._sum_cpus(b"", 0, 8, 6, 2) == []


@pytest.mark.parametrize("text,n", [("0-1\n", 2), ("0\n", 1), ("0,2-5\n", 5), ("0-3,8-11", 8)])
def test_possible_cpus_counts_the_list(tmp_path, text: str, n: int) -> None:
    from exporter.bpf import syscalls as sc

    p = tmp_path / "possible"
    p.write_text(text)
    assert sc.possible_cpus(str(p)) == n


# --- BTF and the program on the typed raw tracepoint -------------------------------------------


def btf_blob(bitfield_protocol: bool = False) -> bytes:
    """A BTF with what the program needs, laid out as a kernel's: struct sock_common with the
    ports in an anonymous struct inside an anonymous union, struct sock holding it and
    sk_protocol, struct inet_sock holding a sock and inet_sport, and the tracepoint's typedef."""
    names = b"\0"
    offs = {}
    for n in ("u16", "u32", "__be16", "skc_dport", "skc_num", "skc_portpair", "sock_common",
              "__sk_common", "sk_protocol", "sock", "sk", "inet_sport", "inet_sock",
              "btf_trace_inet_sock_set_state"):
        offs[n] = len(names)
        names += n.encode() + b"\0"
    types = b""

    def t(name: str, kind: int, vlen: int, size: int, extra: bytes = b"", kflag: int = 0) -> None:
        nonlocal types
        types += struct.pack("=III", offs.get(name, 0), kflag << 31 | kind << 24 | vlen,
                             size) + extra

    def m(name: str, tid: int, bits: int) -> bytes:
        return struct.pack("=III", offs.get(name, 0), tid, bits)

    t("u16", 1, 0, 2, struct.pack("=I", 16))  # 1
    t("u32", 1, 0, 4, struct.pack("=I", 32))  # 2
    t("__be16", 8, 0, 1)  # 3: typedef -> u16
    t("", 4, 2, 4, m("skc_dport", 3, 0) + m("skc_num", 1, 16))  # 4: anonymous struct
    t("", 5, 2, 4, m("skc_portpair", 2, 0) + m("", 4, 0))  # 5: anonymous union
    t("sock_common", 4, 2, 16, m("", 2, 0) + m("", 5, 96))  # 6
    prot = m("sk_protocol", 1, (16 << 24 | 8 * 40) if bitfield_protocol else 8 * 40)
    t("sock", 4, 2, 48, m("__sk_common", 6, 0) + prot, kflag=int(bitfield_protocol))  # 7
    t("inet_sock", 4, 2, 64, m("sk", 7, 0) + m("inet_sport", 3, 8 * 52))  # 8
    t("", 2, 0, 7)  # 9: pointer to sock
    t("btf_trace_inet_sock_set_state", 8, 0, 9)  # 10
    hdr = struct.pack("=HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(names))
    return hdr + types + names


def test_btf_members_through_anonymous_unions() -> None:
    from exporter.bpf import btf

    b = btf.Btf(btf_blob())
    assert b.member("sock", "__sk_common", "skc_dport") == btf.Member(12, 2)
    assert b.member("sock", "__sk_common", "skc_num") == btf.Member(14, 2)
    assert b.member("sock", "sk_protocol") == btf.Member(40, 2)
    assert b.member("inet_sock", "inet_sport") == btf.Member(52, 2)
    assert b.typedef("btf_trace_inet_sock_set_state") == 10
    f = te.sock_fields(b)
    assert (f.protocol.offset, f.sport.offset, f.dport.offset, f.attach_btf_id) == (40, 52, 12, 10)


@pytest.mark.parametrize("ask", [("nosuch", "x"), ("sock", "nosuch"), ("sock", "sk_protocol", "x")])
def test_btf_what_is_not_there_is_an_error(ask) -> None:
    from exporter.bpf import btf

    with pytest.raises(btf.BtfError):
        btf.Btf(btf_blob()).member(*ask)


def test_btf_a_bitfield_is_refused_and_bad_blobs_too(tmp_path) -> None:
    from exporter.bpf import btf

    with pytest.raises(btf.BtfError, match="bitfield"):
        te.sock_fields(btf.Btf(btf_blob(bitfield_protocol=True)))
    with pytest.raises(btf.BtfError):
        btf.Btf(b"\0" * 24)
    with pytest.raises(btf.BtfError):
        btf.Btf(btf_blob()[:40])  # sections past the end
    with pytest.raises(btf.BtfError):
        btf.load(str(tmp_path / "none"))


def test_the_btf_program_reads_the_ports_only_where_needed() -> None:
    """Every transition loads the protocol from the socket; the local port (a probe read) and
    the remote one only after the transition is counted, for the few that need them."""
    from exporter.bpf import btf

    f = te.sock_fields(btf.Btf(btf_blob()))
    code = insns(te.set_state_btf_program(f, MAPS))
    calls = [imm for op, _d, _s, _o, imm in code if op == 0x85]
    assert calls[0] == asm.MAP_LOOKUP_ELEM and asm.PROBE_READ_KERNEL in calls
    first_call = next(i for i, x in enumerate(code) if x[0] == 0x85)
    loads = [(off, op) for op, _d, _s, off, _i in code[:first_call] if op & 0x07 == asm.LDX]
    assert (40, 0x69) in loads  # the protocol, u16
    assert not any(off in (12, 52) for off, _ in loads)  # no port before the count
    probe = [i for i, x in enumerate(code) if x[0] == 0x85 and x[4] == asm.PROBE_READ_KERNEL]
    assert any(op == 0x07 and imm == 52 for op, _d, _s, _o, imm in code[:probe[0]])  # sk + 52
    filtered = insns(te.set_state_btf_program(f, MAPS, (7000, 7100)))
    assert [x[4] for x in filtered if x[0] == 0x85][0] == asm.PROBE_READ_KERNEL
    fds = {imm for op, _d, src, _o, imm in code if op == 0x18 and src == asm.PSEUDO_MAP_FD}
    assert fds == {3, 4, 5, 6}
