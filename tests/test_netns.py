"""The netns collector on fixture trees: namespace discovery, naming by each runtime's cgroup
layout, pinned namespaces, the bounds, and broken input. The real namespaces are in
test_netns_live.py."""

from __future__ import annotations

import os
import shutil
from typing import Dict, Iterator, List, Optional

import pytest
from helpers import FIXTURES, run_cli
from prometheus_client import CollectorRegistry

from exporter.collectors import netns as collector
from exporter.config import Config
from exporter.procfs import ParseError, pid_status
from exporter.procfs import namespaces as pns
from exporter.procfs.namespace_counters import COUNTER_FILES, parse_counters
from exporter.procfs.snmp import parse_snmp
from exporter.scrape import Exporter

HERE = os.path.join(FIXTURES, "netns")
CONTAINER = "6a1f0c5e9b2d4f7a8c3e1b0d9f8e7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f"
POD = "0f6d7e2a-1b2c-4d5e-8f90-123456789abc"
STATIC = "3c1b7e0d9a8f6e5d4c3b2a1908f7e6d5"


def cgroup(name: str) -> List[str]:
    path = os.path.join(HERE, "cgroup", name)
    with open(path) as f:
        return pns.parse_cgroup(f.read(), path)


# --- naming ------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout,pod,container", [
    ("cgroupfs-containerd-v1", POD, CONTAINER),
    ("cgroupfs-guaranteed-v2", POD, CONTAINER),
    ("systemd-containerd-v2", POD, CONTAINER),
    ("systemd-crio-v2", POD, CONTAINER),
    ("systemd-crio-conmon-v2", POD, ""),
    ("systemd-static-pod-v2", STATIC, CONTAINER),
    ("cgroupfs-static-pod-v1", STATIC, CONTAINER),
    ("cgroupns-relative-v2", POD, CONTAINER),
    ("docker-cgroupfs-v1", "", CONTAINER),
    ("docker-systemd-v2", "", CONTAINER),
    ("podman-v2", "", CONTAINER),
    ("host-service-v2", "", ""),
    ("host-root-v1", "", ""),
])
def test_cgroup_layouts_name_pod_and_container(layout: str, pod: str, container: str) -> None:
    assert pns.pod_and_container(cgroup(layout)) == (pod, container)


@pytest.mark.parametrize("layout", ["broken-no-colons", "broken-bad-hierarchy"])
def test_malformed_cgroup_names_file_and_line(layout: str) -> None:
    with pytest.raises(ParseError, match=f"{layout}:[12]: expected 'hierarchy"):
        cgroup(layout)


def test_identity_prefers_pod_then_container_then_mount_name() -> None:
    ns = pns.Namespace(("nsfs", 4, 99), [10, 11], ["/run/netns/cni-1234"])
    docker = cgroup("docker-systemd-v2")
    pod = cgroup("systemd-containerd-v2")
    host = cgroup("host-service-v2")
    assert pns.identify(ns, [docker, pod]) == pns.Identity("pod", POD, POD, CONTAINER)
    assert pns.identify(ns, [None, docker]) == pns.Identity(
        "container", CONTAINER, container_id=CONTAINER, name="cni-1234")
    assert pns.identify(ns, [host]) == pns.Identity("named", "cni-1234", name="cni-1234")
    assert pns.identify(pns.Namespace(("nsfs", 4, 99), [10]), [host]) == \
        pns.Identity("anonymous", "inode-99")
    host_ns = pns.Namespace(("nsfs", 4, 1), [1], host=True)
    assert pns.identify(host_ns, [pod]).kind == "host"


def test_two_namespaces_claiming_one_name_stay_distinct() -> None:
    a, b = pns.Identity("pod", POD, POD), pns.Identity("pod", POD, POD)
    out = pns.unique_labels([a, b], [("nsfs", 4, 1), ("nsfs", 4, 2)])
    assert [i.netns for i in out] == [POD, f"{POD}/inode-2"]


def test_netns_name_only_for_netns_directories() -> None:
    assert pns.netns_name("/run/netns/blue") == "blue"
    assert pns.netns_name("/var/run/netns/blue") == "blue"
    assert pns.netns_name("/run/docker/netns/1a2b3c4d5e6f") == "1a2b3c4d5e6f"
    assert pns.netns_name("/tmp/pinned-here") == ""


# --- mountinfo ---------------------------------------------------------------------------------

def read_mountinfo(name: str) -> List:
    path = os.path.join(HERE, "mountinfo", name)
    with open(path) as f:
        return pns.parse_mountinfo_nsfs(f.read(), path)


def test_mountinfo_lists_network_namespace_mounts() -> None:
    dev = os.makedev(0, 4)
    assert read_mountinfo("pinned") == [
        (("nsfs", dev, 4026532177), "/run/netns/blue"),
        (("nsfs", dev, 4026532177), "/var/run/netns/blue"),
        (("nsfs", dev, 4026532300), "/run/docker/netns/1a2b3c4d5e6f"),
        (("nsfs", dev, 4026532400), "/run/netns/with space"),
        (("nsfs", dev, 4026532600), "/tmp/pinned-here"),
    ]


@pytest.mark.parametrize("name,message", [
    ("broken-no-separator", "broken-no-separator:1: expected optional fields ended by ' - '"),
    ("broken-device", "broken-device:1: malformed device 'zero'"),
    ("truncated", "truncated:1: no filesystem type"),
])
def test_malformed_mountinfo(name: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        read_mountinfo(name)


def test_capabilities_parse() -> None:
    caps = pid_status.parse_cap_eff("Name:\tx\nCapEff:\t0000000000280000\n", "status")
    assert caps >> pid_status.CAP_SYS_ADMIN & 1 and caps >> pid_status.CAP_SYS_PTRACE & 1
    with pytest.raises(ParseError, match="status:2: CapEff: not hexadecimal"):
        pid_status.parse_cap_eff("Name:\tx\nCapEff:\tzz\n", "status")


# --- a whole fake /proc ------------------------------------------------------------------------

def _proc(root: str, pid: int, nsfile: Optional[str], layout: str,
          net: Optional[Dict[str, str]] = None) -> None:
    d = os.path.join(root, str(pid))
    os.makedirs(os.path.join(d, "ns"))
    if nsfile is not None:
        os.symlink(os.path.join("..", "..", "..", "nsfiles", nsfile), os.path.join(d, "ns", "net"))
    shutil.copy(os.path.join(HERE, "cgroup", layout), os.path.join(d, "cgroup"))
    shutil.copytree(os.path.join(HERE, "net"), os.path.join(d, "net"))
    for name, text in (net or {}).items():
        with open(os.path.join(d, "net", name), "w") as f:
            f.write(text)


def with_value(field: str, value: int) -> str:
    """The fixture's net/snmp with Tcp ``field`` set to ``value``."""
    with open(os.path.join(HERE, "net", "snmp")) as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Tcp: ") and field in line.split():
            at = line.split().index(field)
            values = lines[i + 1].split()
            values[at] = str(value)
            lines[i + 1] = " ".join(values)
    return "\n".join(lines) + "\n"


@pytest.fixture
def proc(tmp_path) -> Iterator[str]:
    """host (pid 1, 2), a pod (100, 101), a Docker container (200), an ip netns namespace
    with a process (300), one pinned with no process, and a process that is gone (400)."""
    root = str(tmp_path / "proc")
    os.makedirs(os.path.join(root, "..", "nsfiles"))
    for name in ("host", "pod", "docker", "named"):
        open(os.path.join(root, "..", "nsfiles", name), "w").close()
    _proc(root, 1, "host", "host-root-v1")
    _proc(root, 2, "host", "host-service-v2")
    _proc(root, 100, "pod", "host-service-v2", {"snmp": with_value("ActiveOpens", 1234)})
    # The pod's first process is the sandbox; the second one names the pod.
    _proc(root, 101, "pod", "systemd-containerd-v2")
    _proc(root, 200, "docker", "docker-systemd-v2", {"snmp": with_value("ActiveOpens", 2)})
    _proc(root, 300, "named", "host-service-v2")
    _proc(root, 400, "gone", "host-service-v2")
    os.symlink("1", os.path.join(root, "self"))
    st = os.stat(os.path.join(root, "..", "nsfiles", "named"))
    with open(os.path.join(root, "1", "mountinfo"), "w") as f:
        f.write(f"40 25 {os.major(st.st_dev)}:{os.minor(st.st_dev)} net:[{st.st_ino}] "
                f"/run/netns/blue rw - nsfs nsfs rw\n"
                "41 25 0:4 net:[4026599999] /run/netns/orphan rw - nsfs nsfs rw\n")
    yield root


def test_discovery_finds_each_namespace_once_host_first(proc: str) -> None:
    d = pns.discover(proc)
    assert [(ns.pids, ns.mounts, ns.host) for ns in d.namespaces] == [
        ([1, 2], [], True), ([100, 101], [], False), ([200], [], False),
        ([300], ["/run/netns/blue"], False), ([], ["/run/netns/orphan"], False)]
    idents = [pns.name_namespace(proc, ns) for ns in d.namespaces]
    assert [(i.kind, i.netns) for i in idents] == [
        ("host", "host"), ("pod", POD), ("container", CONTAINER), ("named", "blue"),
        ("named", "orphan")]


def scrape(proc: str, **options: object) -> CollectorRegistry:
    cfg = Config(procfs=proc, collectors=frozenset({"netns"}),
                 options={"netns": collector.NetnsOptions(**options)})  # type: ignore[arg-type]
    reg = CollectorRegistry()
    reg.register(Exporter(cfg).target())
    return reg


def tcp(field: str) -> float:
    with open(os.path.join(HERE, "net", "snmp")) as f:
        return float(parse_snmp(f.read(), "snmp")["Tcp"][field])


def test_collector_reads_each_namespace_from_its_processes(proc: str) -> None:
    reg = scrape(proc)
    get = reg.get_sample_value
    assert get("netstat_exporter_collector_success", {"collector": "netns"}) == 1
    assert get("netstat_netns_tcp_active_opens_total", {"netns": POD, "kind": "pod"}) == 1234
    assert get("netstat_netns_tcp_active_opens_total",
               {"netns": CONTAINER, "kind": "container"}) == 2
    assert get("netstat_netns_tcp_active_opens_total", {"netns": "host", "kind": "host"}) == \
        tcp("ActiveOpens")
    assert get("netstat_netns_tcp_curr_estab", {"netns": "blue", "kind": "named"}) == \
        tcp("CurrEstab")
    assert get("netstat_netns_info", {"netns": POD, "kind": "pod", "pod_uid": POD,
                                      "container_id": CONTAINER, "name": ""}) == 1
    # The pinned namespace has no process: found, counted as skipped, no series.
    assert get("netstat_netns_namespaces", {"kind": "named"}) == 2
    assert get("netstat_netns_skipped", {"tier": "1", "reason": "no_process"}) == 1
    assert get("netstat_netns_tcp_curr_estab", {"netns": "orphan", "kind": "named"}) is None
    # Host-wide sockstat fields are not exported per namespace.
    names = {m.name for m in reg.collect()}
    assert not any(w in n for n in names if n.startswith("netstat_netns")
                   for w in ("_orphan", "_alloc", "_memory")), names
    # Tier 2 is off: no socket metrics.
    assert "netstat_netns_tcp_sockets" not in names


def test_cap_on_namespaces_counts_the_rest(proc: str) -> None:
    reg = scrape(proc, max_namespaces=2)
    get = reg.get_sample_value
    assert get("netstat_netns_skipped", {"tier": "1", "reason": "max_namespaces"}) == 3
    # Only those within the cap are named and counted by kind.
    assert [get("netstat_netns_namespaces", {"kind": k}) for k in collector.KINDS] == \
        [1, 1, 0, 0, 0]
    assert get("netstat_netns_info", {"netns": "host", "kind": "host", "pod_uid": "",
                                      "container_id": "", "name": ""}) == 1
    assert get("netstat_netns_tcp_active_opens_total", {"netns": CONTAINER,
                                                        "kind": "container"}) is None


def test_time_budget_counts_what_it_left_out(proc: str, monkeypatch) -> None:
    clock = iter(range(0, 1000))  # every reading of the clock is one second later
    monkeypatch.setattr(collector.time, "monotonic", lambda: float(next(clock)))
    metrics = list(scrape(proc, time_budget=1.5).collect())  # one scrape
    values = {(m.name, tuple(sorted(s.labels.items()))): s.value
              for m in metrics for s in m.samples}
    skipped = values[("netstat_netns_skipped", (("reason", "time_budget"), ("tier", "1")))]
    read = sum(1 for name, _ in values if name == "netstat_netns_info")
    assert 1 <= skipped < 5
    assert read + skipped == 5  # every namespace is read or counted
    assert values[("netstat_exporter_collector_success", (("collector", "netns"),))] == 1


def test_one_broken_namespace_fails_only_itself(proc: str) -> None:
    with open(os.path.join(proc, "200", "net", "snmp"), "w") as f:
        f.write("Tcp: ActiveOpens PassiveOpens\nTcp: 1\n")
    reg = scrape(proc)
    get = reg.get_sample_value
    assert get("netstat_netns_skipped", {"tier": "1", "reason": "error"}) == 1
    assert get("netstat_netns_tcp_active_opens_total", {"netns": POD, "kind": "pod"}) == 1234
    assert get("netstat_exporter_collector_success", {"collector": "netns"}) == 1


def test_empty_procfs_fails_the_collector(tmp_path) -> None:
    reg = scrape(str(tmp_path))
    assert reg.get_sample_value("netstat_exporter_collector_success",
                                {"collector": "netns"}) == 0


def test_off_by_default_and_flags_checked() -> None:
    r = run_cli("dump")
    assert r.returncode == 0 and "netstat_netns_" not in r.stdout
    r = run_cli("--collector.netns", "--collector.netns.max-namespaces=0", "dump")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "max-namespaces" in r.stderr, r.stderr
    r = run_cli("--help")
    for flag in ("--collector.netns.sockets", "--collector.netns.time-budget",
                 "--collector.netns.max-namespaces", "--collector.netns.max-listeners"):
        assert flag in r.stdout


def test_snmp_reader_picks_groups_and_fields() -> None:
    path = os.path.join(HERE, "net", "netstat")
    with open(path) as f:
        text = f.read()
    full = parse_snmp(text, path)
    some = parse_snmp(text, path, frozenset({"TcpExt"}), frozenset({"ListenDrops", "TW"}))
    assert some == {"TcpExt": {k: full["TcpExt"][k] for k in ("ListenDrops", "TW")}}
    # Only what is parsed is checked: a broken group elsewhere does not matter, a broken
    # wanted field does.
    broken = text.replace("IpExt: ", "IpExt: x", 1) if "IpExt: " in text else text
    assert parse_snmp(broken, path, frozenset({"TcpExt"}), frozenset({"TW"})) == \
        {"TcpExt": {"TW": full["TcpExt"]["TW"]}}
    lines = text.splitlines()
    at = lines[0].split().index("TW")
    values = lines[1].split()
    values[at] = "many"
    bad = "\n".join([lines[0], " ".join(values)] + lines[2:]) + "\n"
    with pytest.raises(ParseError, match="netstat:2: value of TcpExt TW is not a number"):
        parse_snmp(bad, path, frozenset({"TcpExt"}), frozenset({"TW"}))


def test_parse_group_agrees_with_parse_snmp_and_checks_what_it_reads() -> None:
    from exporter.procfs.snmp import parse_group

    for name, group in (("snmp", "Tcp"), ("snmp", "Udp"), ("netstat", "TcpExt"),
                        ("netstat", "IpExt")):
        path = os.path.join(HERE, "net", name)
        with open(path, "rb") as f:
            data = f.read()
        full = parse_snmp(data.decode(), path)[group]
        fields = frozenset(list(full)[::3])
        assert parse_group(data, path, group, fields) == {k: full[k] for k in fields}
        # The same header again (every namespace of a kernel): the same answer.
        assert parse_group(data, path, group, fields) == {k: full[k] for k in fields}
    assert parse_group(b"Ip: A\nIp: 1\n", "p", "Tcp", frozenset({"A"})) is None
    for text, message in (
            (b"Tcp: A B\nTcp: 1 x\n", "p:2: value of Tcp B is not a number: 'x'"),
            (b"Tcp: A B\nTcp: 1\n", "p:2: Tcp has 2 fields but 1 values"),
            (b"Tcp: A B\n", "p:1: header of Tcp has no value line"),
            (b"Tcp: A B", "p:1: header of Tcp has no value line"),
            (b"Ip: X\nIp: 1\nTcp: A B\nUdp: 1 2\n", "p:4: expected the value line of Tcp")):
        with pytest.raises(ParseError, match=message):
            parse_group(text, "p", "Tcp", frozenset({"A", "B"}))


def test_tier1_from_fixture_files_and_a_vanished_process() -> None:
    directory = os.path.join(HERE, "net")
    texts = []
    for name in COUNTER_FILES:
        with open(os.path.join(directory, name), "rb") as f:
            texts.append(f.read())
    tcp_fields = {k for _, k in collector.SNMP_FIELDS}
    tcp_ext_fields = {k for _, k in collector.NETSTAT_FIELDS}
    t = parse_counters(texts, directory, tcp_fields, tcp_ext_fields)
    assert t is not None
    with open(os.path.join(directory, "snmp")) as f:
        tcp = parse_snmp(f.read(), "snmp")["Tcp"]
    assert t.tcp == {k: tcp[k] for _, k in collector.SNMP_FIELDS}
    # net/snmp gone: the process exited (or is a zombie) while being read.
    assert parse_counters([None, None, None, None], directory, tcp_fields,
                          tcp_ext_fields) is None
    with pytest.raises(ParseError, match="netstat: missing"):
        parse_counters([texts[0], None, texts[2], texts[3]], directory, tcp_fields,
                       tcp_ext_fields)


def test_a_namespace_that_keeps_failing_warns_once_then_again_after_it_recovers(
        proc: str, caplog) -> None:
    """One warning for a broken namespace, not one per scrape; after it reads again, a new
    failure warns at once. The skip is counted in every scrape."""
    import logging

    snmp = os.path.join(proc, "200", "net", "snmp")
    with open(snmp) as f:
        good = f.read()
    cfg = Config(procfs=proc, collectors=frozenset({"netns"}))
    reg = CollectorRegistry()
    reg.register(Exporter(cfg).target())

    def scrape_warnings() -> int:
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="exporter.collectors.netns"):
            reg.get_sample_value("netstat_netns_namespaces", {"kind": "pod"})
        return sum(1 for r in caplog.records
                   if r.levelno == logging.WARNING and "cannot read namespace" in r.message)

    def skipped() -> float:
        return reg.get_sample_value("netstat_netns_skipped", {"tier": "1", "reason": "error"})

    with open(snmp, "w") as f:
        f.write("Tcp: ActiveOpens PassiveOpens\nTcp: 1\n")
    assert scrape_warnings() == 1
    assert scrape_warnings() == 0 and skipped() == 1
    with open(snmp, "w") as f:
        f.write(good)
    assert scrape_warnings() == 0 and skipped() == 0
    with open(snmp, "w") as f:
        f.write("Tcp: ActiveOpens PassiveOpens\nTcp: 1\n")
    assert scrape_warnings() == 1
