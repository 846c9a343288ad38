"""protocols: /proc/net/snmp, netstat and snmp6 parsers, the field table, the collector on
fixture trees, and a live cross-check against nstat inside a fresh network namespace."""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Dict, Optional, Tuple

import pytest
from helpers import FIXTURES, run_cli, value
from nshelpers import Holder, dump, needs_root, netns, read_sysctl, run
from prometheus_client import CollectorRegistry

from exporter import docs
from exporter.collectors.protocols import DEFAULT_PROTOCOLS_FIELDS, ProtocolsCollector, ProtocolsOptions
from exporter.collectors.protocols.table import FILES, NATIVE, TABLE, lookup, snake
from exporter.config import Config
from exporter.procfs import snmp, snmp6
from exporter.procfs.errors import ParseError

PROC = os.path.join(FIXTURES, "proc")


# --- parsers --------------------------------------------------------------------------------

def test_parse_snmp_pairs_and_negative_values() -> None:
    g = snmp.parse_snmp("Tcp: RtoMin MaxConn CurrEstab\nTcp: 200 -1 3\nUdp: InDatagrams\n"
                        "Udp: 7\n", "snmp")
    assert g == {"Tcp": {"RtoMin": 200, "MaxConn": -1, "CurrEstab": 3},
                 "Udp": {"InDatagrams": 7}}


@pytest.mark.parametrize("text,line,message", [
    ("Tcp: A B C\nTcp: 1 2\n", 2, "Tcp has 3 fields but 2 values"),
    ("Tcp: A B\nTcp: 1 x\n", 2, "value of Tcp B is not a number: 'x'"),
    ("Tcp: A B\nTcp: 1 2\nUdp: A B\n", 3, "header of Udp has no value line"),
    ("Tcp: A B\nUdp: 1 2\n", 2, "expected the value line of Tcp"),
    ("garbage\n", 1, "expected a 'Group: Field ...' header line"),
    ("Tcp: A\nTcp: 1\nTcp: A\nTcp: 2\n", 3, "group Tcp appears twice"),
])
def test_parse_snmp_rejects_with_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ParseError) as e:
        snmp.parse_snmp(text, "/proc/net/snmp")
    assert e.value.line == line and message in str(e.value)
    assert str(e.value).startswith(f"/proc/net/snmp:{line}: ")


def test_parse_snmp6_splits_groups() -> None:
    g = snmp6.parse_snmp6("Ip6InReceives  \t5\nUdpLite6InErrors 1\nUdp6InErrors 2\n"
                          "Icmp6OutType135 4\nSctpX 1\n", "snmp6")
    assert g == {"Ip6": {"InReceives": 5}, "UdpLite6": {"InErrors": 1},
                 "Udp6": {"InErrors": 2}, "Icmp6": {"OutType135": 4}, "": {"SctpX": 1}}


@pytest.mark.parametrize("text,line", [("Ip6InReceives 1\nIp6InDelivers x\n", 2),
                                       ("Ip6InReceives 1 2\n", 1), ("Ip6InReceives\n", 1)])
def test_parse_snmp6_rejects_with_line(text: str, line: int) -> None:
    with pytest.raises(ParseError) as e:
        snmp6.parse_snmp6(text, "snmp6")
    assert e.value.line == line


def test_fixture_scenarios_read() -> None:
    new = snmp.read_netstat(os.path.join(PROC, "new"))
    old = snmp.read_netstat(os.path.join(PROC, "old"))
    assert new is not None and old is not None
    assert "MPTcpExt" in new and "MPTcpExt" not in old
    assert len(old["TcpExt"]) < len(new["TcpExt"])
    assert snmp6.read_snmp6(os.path.join(PROC, "ipv6-disabled")) is None
    with pytest.raises(ParseError, match=r"net/snmp:8: "):
        snmp.read_snmp(os.path.join(PROC, "malformed"))
    with pytest.raises(ParseError, match=r"net/snmp6:\d+: value of Udp6InErrors"):
        snmp6.read_snmp6(os.path.join(PROC, "malformed"))
    with pytest.raises(ParseError, match=r"net/netstat:3: header of IpExt has no value line"):
        snmp.read_netstat(os.path.join(PROC, "truncated"))


# --- the table ------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel,name", [
    ("ListenOverflows", "listen_overflows"), ("TCPTimeWaitOverflow", "tcp_time_wait_overflow"),
    ("TWRecycled", "tw_recycled"), ("TW", "tw"), ("MPTcpExt", "mptcp_ext"),
    ("UdpLite6", "udp_lite6"), ("IcmpMsg", "icmp_msg"), ("RcvbufErrors", "rcvbuf_errors"),
    ("InType3", "in_type3"), ("DelayedACKs", "delayed_acks"), ("InECT1Pkts", "in_ect1_pkts"),
    ("MPJoinAckHMacFailure", "mp_join_ack_hmac_failure"),
    # Capital abbreviations run together or made plural are words, spelt one way everywhere.
    ("FragOKs", "frag_oks"), ("TCPSpuriousRTOs", "tcp_spurious_rtos"),
    ("InMLDv2Reports", "in_mldv2_reports"), ("TCPSACKReneging", "tcp_sack_reneging"),
    ("TCPSackShifted", "tcp_sack_shifted"), ("TCPDSACKUndo", "tcp_dsack_undo"),
    ("TCPHPHits", "tcp_hp_hits"), ("TCPACKSkippedSeq", "tcp_ack_skipped_seq"),
    ("MPCapableSYNACKRX", "mp_capable_syn_ack_rx"), ("MPTCPRetrans", "mptcp_retrans"),
    ("TCPMD5Failure", "tcp_md5_failure"), ("TSEcrRejected", "ts_ecr_rejected"),
    # Base units: octets are bytes.
    ("InOctets", "in_bytes"), ("OutBcastOctets", "out_bcast_bytes"),
])
def test_snake(kernel: str, name: str) -> None:
    assert snake(kernel) == name


CONTRACT = {  # the names alerts and dashboards rely on (contract.md, protocols)
    "netstat_tcp_retrans_segs_total", "netstat_tcp_out_segs_total", "netstat_tcp_in_segs_total",
    "netstat_tcp_out_rsts_total", "netstat_tcp_estab_resets_total",
    "netstat_tcp_attempt_fails_total", "netstat_tcp_active_opens_total",
    "netstat_tcp_passive_opens_total", "netstat_tcp_in_errs_total", "netstat_tcp_curr_estab",
    "netstat_tcp_ext_listen_overflows_total", "netstat_tcp_ext_listen_drops_total",
    "netstat_tcp_ext_syncookies_sent_total", "netstat_tcp_ext_syncookies_recv_total",
    "netstat_tcp_ext_syncookies_failed_total", "netstat_tcp_ext_tw_total",
    "netstat_tcp_ext_tw_recycled_total", "netstat_tcp_ext_tw_killed_total",
    "netstat_tcp_ext_tcp_time_wait_overflow_total", "netstat_tcp_ext_tcp_backlog_drop_total",
    "netstat_tcp_ext_tcp_abort_on_memory_total", "netstat_tcp_ext_tcp_abort_on_timeout_total",
    "netstat_udp_rcvbuf_errors_total", "netstat_udp_sndbuf_errors_total",
    "netstat_udp_in_errors_total", "netstat_udp_in_datagrams_total",
    "netstat_udp_out_datagrams_total", "netstat_udp_no_ports_total",
    "netstat_udp6_rcvbuf_errors_total", "netstat_udp6_in_errors_total",
}


def test_contract_names_are_in_the_default_set() -> None:
    default = re.compile(DEFAULT_PROTOCOLS_FIELDS)
    names = {f.name: f for f in TABLE.values()}
    for n in CONTRACT:
        assert n in names, n
        assert default.match(names[n].key), f"{names[n].key} not in the default set"


def test_table_types_and_names() -> None:
    gauges = {f.key for f in TABLE.values() if f.kind == "gauge"}
    assert gauges == {"Ip_Forwarding", "Ip_DefaultTTL", "Tcp_RtoAlgorithm", "Tcp_RtoMin",
                      "Tcp_RtoMax", "Tcp_MaxConn", "Tcp_CurrEstab", "MPTcpExt_MPCurrEstab"}
    names = [f.name for f in TABLE.values()]
    assert len(names) == len(set(names))
    for f in TABLE.values():
        if f.group in NATIVE:  # another system's own counters: HELP names its source
            assert f.help.startswith(f"{f.group} {f.field} in "
                                     f"{NATIVE[f.group].format(field=f.field)}: ")
            continue
        assert f.help.startswith(f"{f.group} {f.field} in /proc/net/{FILES[f.group]}: ")


def test_table_covers_every_field_of_the_new_kernel_fixture() -> None:
    root = os.path.join(PROC, "new")
    for groups in (snmp.read_snmp(root), snmp.read_netstat(root), snmp6.read_snmp6(root)):
        assert groups is not None
        for g, fields in groups.items():
            for f in fields:
                if g in ("IcmpMsg", "Icmp6") and re.match(r"(In|Out)Type\d+$", f):
                    continue  # per-type counters, matched by pattern
                assert (g, f) in TABLE, f"{g} {f} missing from the table"


# --- the collector on fixtures --------------------------------------------------------------

def collect(root: str, fields: Optional[str] = None) -> CollectorRegistry:
    cfg = Config(procfs=root, options={
        "protocols": ProtocolsOptions(fields=fields or DEFAULT_PROTOCOLS_FIELDS)})
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ProtocolsCollector(cfg))
    return reg


def test_default_set_on_new_kernel() -> None:
    reg = collect(os.path.join(PROC, "new"))
    tcp = snmp.read_snmp(os.path.join(PROC, "new"))["Tcp"]  # type: ignore[index]
    assert reg.get_sample_value("netstat_tcp_retrans_segs_total") == tcp["RetransSegs"]
    assert reg.get_sample_value("netstat_tcp_curr_estab") == tcp["CurrEstab"]
    assert reg.get_sample_value("netstat_tcp_ext_tw_total") is not None
    assert reg.get_sample_value("netstat_udp6_in_errors_total") is not None
    # Not in the default set:
    assert reg.get_sample_value("netstat_tcp_ext_tcp_hp_hits_total") is None
    assert reg.get_sample_value("netstat_tcp_rto_min_seconds") is None
    names = {m.name for m in reg.collect()}
    assert not any(n.startswith("netstat_mptcp_ext") for n in names)


def test_regex_chooses_fields_and_types_them() -> None:
    reg = collect(os.path.join(PROC, "new"), r"TcpExt_TW.*|Tcp_Rto.*|MPTcpExt_MPCurrEstab")
    got = {(m.name, m.type) for m in reg.collect()}
    assert got == {("netstat_tcp_ext_tw", "counter"), ("netstat_tcp_ext_tw_recycled", "counter"),
                   ("netstat_tcp_ext_tw_killed", "counter"), ("netstat_tcp_rto_algorithm", "gauge"),
                   ("netstat_tcp_rto_min_seconds", "gauge"), ("netstat_tcp_rto_max_seconds", "gauge"),
                   ("netstat_mptcp_ext_mp_curr_estab", "gauge")}
    # The kernel prints milliseconds; the metric is in seconds.
    tcp = snmp.read_snmp(os.path.join(PROC, "new"))["Tcp"]  # type: ignore[index]
    assert tcp["RtoMin"] == 200
    assert reg.get_sample_value("netstat_tcp_rto_min_seconds") == tcp["RtoMin"] / 1000
    assert reg.get_sample_value("netstat_tcp_rto_max_seconds") == tcp["RtoMax"] / 1000


def test_old_kernel_lacks_fields_without_failing() -> None:
    reg = collect(os.path.join(PROC, "old"), ".*")
    assert reg.get_sample_value("netstat_ip_out_transmits_total") is None
    assert reg.get_sample_value("netstat_mptcp_ext_mp_curr_estab") is None
    assert reg.get_sample_value("netstat_ip_in_receives_total") is not None


def test_ipv6_disabled_is_no_data() -> None:
    reg = collect(os.path.join(PROC, "ipv6-disabled"), ".*")
    names = {m.name for m in reg.collect()}
    assert "netstat_tcp_in_segs" in names
    assert not any(n.startswith(("netstat_ip6_", "netstat_udp6_", "netstat_icmp6_")) for n in names)


def test_unknown_field_of_a_newer_kernel_works_through_the_regex(tmp_path: os.PathLike[str]
                                                                 ) -> None:
    root = str(tmp_path)
    os.makedirs(os.path.join(root, "net"))
    with open(os.path.join(root, "net", "netstat"), "w") as f:
        f.write("TcpExt: TW TCPShinyNewThing\nTcpExt: 4 9\nFooExt: BarCount\nFooExt: 2\n")
    open(os.path.join(root, "net", "snmp"), "w").close()  # every kernel has it
    reg = collect(root, r"TcpExt_.*|FooExt_.*")
    assert reg.get_sample_value("netstat_tcp_ext_tcp_shiny_new_thing_total") == 9
    assert reg.get_sample_value("netstat_foo_ext_bar_count_total") == 2
    fam = [m for m in reg.collect() if m.name == "netstat_tcp_ext_tcp_shiny_new_thing"][0]
    assert fam.type == "counter" and fam.documentation.startswith("TcpExt TCPShinyNewThing in")
    # The default set does not pick it up by itself.
    assert collect(root).get_sample_value("netstat_tcp_ext_tcp_shiny_new_thing_total") is None


def test_one_collector_follows_fields_that_appear_and_names_taken_twice(
        tmp_path: os.PathLike[str]) -> None:
    """The selection is worked out once per layout of the files: a field the kernel starts
    printing between scrapes (an ICMP type first seen) shows up in the next scrape, values are
    read afresh every scrape, and a field mapping to a name already exported is left out."""
    root = str(tmp_path)
    os.makedirs(os.path.join(root, "net"))
    path = os.path.join(root, "net", "snmp")
    open(os.path.join(root, "net", "netstat"), "w").close()  # every kernel has it

    def write(text: str) -> None:
        with open(path, "w") as f:
            f.write(text)

    c = ProtocolsCollector(Config(procfs=root, options={
        "protocols": ProtocolsOptions(fields=r"Tcp_.*|IcmpMsg_.*")}))

    def scrape() -> CollectorRegistry:
        reg = CollectorRegistry()
        reg.register(c)
        return reg

    write("Tcp: ActiveOpens\nTcp: 5\n")
    assert scrape().get_sample_value("netstat_tcp_active_opens_total") == 5
    write("Tcp: ActiveOpens\nTcp: 6\nIcmpMsg: InType3\nIcmpMsg: 2\n")
    reg = scrape()
    assert reg.get_sample_value("netstat_tcp_active_opens_total") == 6
    assert reg.get_sample_value("netstat_icmp_msg_in_type3_total") == 2
    write("Tcp: ActiveOpens\nTcp: 7\n")
    reg = scrape()
    assert reg.get_sample_value("netstat_tcp_active_opens_total") == 7
    assert reg.get_sample_value("netstat_icmp_msg_in_type3_total") is None
    # "Active_Opens" snake-cases to the same name as "ActiveOpens": the first one wins.
    write("Tcp: ActiveOpens Active_Opens\nTcp: 8 9\n")
    metrics = [m for m in scrape().collect() if m.name == "netstat_tcp_active_opens"]
    assert len(metrics) == 1 and metrics[0].samples[0].value == 8


def test_icmp_type_counters_by_pattern() -> None:
    f = lookup("IcmpMsg", "InType3")
    assert f.name == "netstat_icmp_msg_in_type3_total" and "type 3 received" in f.help


# --- live: against nstat in a fresh namespace -----------------------------------------------

_GROUPS = sorted(FILES, key=len, reverse=True)  # longest first: "TcpExt" before "Tcp"


def _split(nstat_name: str) -> Optional[Tuple[str, str]]:
    for g in _GROUPS:
        if nstat_name.startswith(g) and len(nstat_name) > len(g):
            return g, nstat_name[len(g):]
    return None


def _nstat(ns: str, history: str) -> Dict[str, int]:
    # -a absolute values, -z zeros too, -s leave the history file alone; -j JSON.
    out = json.loads(run(ns, "env", f"NSTAT_HISTORY={history}", "nstat", "-azsj"))
    return {k: int(v) for k, v in out["kernel"].items()}


TRAFFIC = r"""
import json, socket
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(16)
clients, accepted = [], []
for _ in range(3):
    c = socket.create_connection(srv.getsockname()); clients.append(c)
    a, _ = srv.accept(); accepted.append(a); c.sendall(b"x" * 1000); a.recv(1000)
# one connection closed by the client: ends in TIME_WAIT on the client side
c = socket.create_connection(srv.getsockname()); a, _ = srv.accept(); c.close(); a.close()
# datagrams to a closed port: Udp NoPorts, Icmp out
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(4):
    u.sendto(b"y", ("127.0.0.1", 9))
print(json.dumps({"established": 2 * len(clients)}), flush=True)
import sys; sys.stdin.read()
"""


@needs_root
@pytest.mark.skipif(shutil.which("nstat") is None, reason="nstat comes with iproute2")
def test_live_against_nstat(tmp_path: os.PathLike[str]) -> None:
    history = os.path.join(str(tmp_path), "nstat.history")
    with netns("proto") as ns:
        holder = Holder(ns, TRAFFIC)
        try:
            established = json.loads(holder.ready)["established"]
            before = _nstat(ns, history)
            samples = dump(ns, "--collector.disable-defaults", "--collector.protocols",
                           "--collector.protocols.fields=.*")
            after = _nstat(ns, history)
            sysctl = {k: int(read_sysctl(ns, f"net/ipv4/{k}"))
                      for k in ("ip_forward", "ip_default_ttl")}
        finally:
            holder.close()
    got = {n: v for n, _, v in samples}
    assert value(samples, "netstat_exporter_collector_success", collector="protocols") == 1
    checked = 0
    for name, b in before.items():
        parts = _split(name)
        if parts is None:
            continue  # a group this collector does not read (e.g. Sctp)
        metric = lookup(*parts).name
        assert metric in got, f"{name} (nstat) has no {metric}"
        a = after.get(name, b)
        assert min(a, b) <= got[metric] <= max(a, b), (name, b, got[metric], a)
        checked += 1
    assert checked > 300, checked  # snmp, netstat and snmp6 all compared
    # The known traffic is visible.
    assert got["netstat_udp_no_ports_total"] >= 4
    assert got["netstat_tcp_active_opens_total"] >= 4
    # The levels nstat leaves out, checked against what the namespace knows.
    assert got["netstat_tcp_curr_estab"] == established
    assert got["netstat_ip_forwarding"] == (1 if sysctl["ip_forward"] else 2)
    assert got["netstat_ip_default_ttl"] == sysctl["ip_default_ttl"]
    # Every exported protocol counter maps back to an nstat name.
    counters = {lookup(*p).name for p in map(_split, before) if p}
    for n in got:
        if n.startswith("netstat_") and n.endswith("_total") and "exporter" not in n:
            assert n in counters, f"{n} has no nstat counterpart"



# --- flags and reference --------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["--collector.protocols.fields=(",
                                  "--collector.interfaces.device-include=[",
                                  "--collector.interfaces.device-exclude=*x",
                                  "--collector.routes.max-routes=-1",
                                  "--collector.ports.top-destinations=many"])
def test_bad_flag_is_one_line_and_exit_2(flag: str) -> None:
    r = run_cli(flag, "dump")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netstat-exporter: error: "), r.stderr
    assert flag.split("=")[0] in lines[0]


def test_reference_lists_every_table_field_and_the_default_set() -> None:
    text = docs.render()
    default = re.compile(DEFAULT_PROTOCOLS_FIELDS)
    for f in TABLE.values():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{f.name}` |"))
        assert f"{f.group} {f.field} in" in row
        assert ("*(default)*" in row) == bool(default.match(f.key)), row
