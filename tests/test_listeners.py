"""The listeners collector: readers on fixture trees, the owner cache, the expected-listeners file,
and real listeners on loopback (and in network namespaces made here) checked against `ss`."""

from __future__ import annotations

import atexit
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from helpers import (
    FIXTURES,
    ROOT,
    Sample,
    close_pipes,
    parse,
    poll,
    run_cli,
    running_exporter,
    select,
    value,
)
from nshelpers import SS_STATE, Holder
from prometheus_client.exposition import generate_latest

from exporter.collectors.listeners import ZERO_STATES, ListenersOptions
from exporter.config import Config, ConfigError
from exporter.listeners import expected, owners
from exporter.procfs import net_sockets, pid_fd, pid_stat, pid_status
from exporter.procfs.errors import ParseError
from exporter.scrape import Exporter
from exporter.vocabulary.names import LISTENER_CONNECTION_STATES

FIX = os.path.join(FIXTURES, "listeners")


def _proc_tree() -> str:
    """The fixture /proc tree, copied to a temporary directory to add what git cannot hold: an
    empty fd/ directory (pid 2 is a process with no open descriptors, as kernel threads are)."""
    tmp = tempfile.mkdtemp(prefix="listeners-proc-")
    atexit.register(shutil.rmtree, tmp, True)
    dst = os.path.join(tmp, "proc")
    shutil.copytree(os.path.join(FIX, "proc"), dst, symlinks=True)
    os.makedirs(os.path.join(dst, "2", "fd"), exist_ok=True)
    return dst


PROC = _proc_tree()
BROKEN = os.path.join(FIX, "broken")
EXPECTED = os.path.join(FIX, "expected")
INFO = "netstat_listener_info"

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, setpriv)")


def user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def service(port: int, proto: str) -> str:
    try:
        return socket.getservbyport(port, proto)
    except OSError:
        return ""


def collect(ex: Exporter) -> List[Sample]:
    return parse(generate_latest(ex.target(["listeners"])).decode())


def make_exporter(procfs: str = "/proc", **kw: Any) -> Exporter:
    """An exporter with the listeners collector, given its options (ListenersOptions)."""
    return Exporter(Config(collectors=frozenset({"listeners"}), procfs=procfs,
                           options={"listeners": ListenersOptions(**kw)}))


def info(samples: List[Sample], **labels: str) -> List[Dict[str, str]]:
    return [lab for _n, lab, _v in select(samples, INFO, **labels)]


# --- readers ---------------------------------------------------------------------------------

def test_parse_stat() -> None:
    st = pid_stat.read_stat(PROC, 100)
    assert (st.pid, st.comm, st.state, st.ppid, st.starttime) == (100, "sshd", "S", 1, 1100)
    # comm may hold spaces and parentheses: it runs to the last ')'.
    line = "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 555 0 0"
    assert pid_stat.parse_stat(line, "x").comm == "a) b (c)"
    assert pid_stat.parse_stat(line, "x").starttime == 555


@pytest.mark.parametrize("name, line, message", [
    ("stat-truncated", 1, "expected at least"),
    ("stat-no-parens", 1, "pid (comm)"),
    ("stat-bad-starttime", 1, "not a number"),
    ("status-no-uid", None, "no Uid"),  # no line to point at
    ("status-bad-uid", 2, "not numbers"),
    ("status-short-uid", 2, "expected 4 values"),
])
def test_parse_broken(name: str, line: Optional[int], message: str) -> None:
    """A broken stat or status file (the fixture's name says which) names itself, and the line
    where there is one."""
    parse = {"stat": pid_stat.parse_stat, "status": pid_status.parse_status}[name.split("-")[0]]
    path = os.path.join(BROKEN, name)
    with open(path) as f, pytest.raises(ParseError) as e:
        parse(f.read(), path)
    assert message in str(e.value)
    assert str(e.value).startswith(f"{path}:{line}:" if line else f"{path}: ")


def test_read_stat_empty_is_a_vanished_process(tmp_path: Any) -> None:
    (tmp_path / "9").mkdir()
    (tmp_path / "9" / "stat").write_text("")
    with pytest.raises(ProcessLookupError):
        pid_stat.read_stat(str(tmp_path), 9)
    with pytest.raises(FileNotFoundError):
        pid_stat.read_stat(str(tmp_path), 10)


def test_list_pids_newest_first() -> None:
    assert pid_stat.list_pids(PROC) == [400, 300, 201, 200, 100, 2]


def test_parse_status() -> None:
    st = pid_status.read_status(PROC, 201)
    assert st.name == "nginx" and st.uids == (33, 33, 33, 33) and st.euid == 33


def test_fd_links() -> None:
    assert sorted(pid_fd.socket_fds(PROC, 100)) == [(3, 1001), (4, 1004), (5, 2001), (6, 2005)]
    assert pid_fd.socket_fds(PROC, 2) == []
    assert pid_fd.parse_socket_link("socket:[42]") == 42
    assert pid_fd.parse_socket_link("pipe:[42]") is None
    assert pid_fd.parse_socket_link("/dev/null") is None
    for bad in ("socket:[42", "socket:[x]"):
        with pytest.raises(ParseError):
            pid_fd.parse_socket_link(bad, "fd/3")
    with pytest.raises(FileNotFoundError):
        pid_fd.socket_fds(PROC, 999)


def test_exe_link() -> None:
    assert pid_fd.read_exe(PROC, 100) == "/usr/sbin/sshd"
    assert pid_fd.read_exe(PROC, 300) == "/usr/sbin/dnsmasq"  # " (deleted)" dropped
    with pytest.raises(FileNotFoundError):
        pid_fd.read_exe(PROC, 2)  # kernel threads have no executable


def test_socket_rows() -> None:
    rows = net_sockets.read_socket_rows(PROC, "tcp")
    assert rows is not None and len(rows) == 8
    r = rows[0]
    assert (r.family, r.local, r.local_port, r.state, r.rx_queue, r.uid, r.inode) == (
        socket.AF_INET, "127.0.0.1", 22, 10, 2, 0, 1001)
    rows6 = net_sockets.read_socket_rows(PROC, "tcp6")
    assert rows6 is not None and (rows6[0].family, rows6[0].local, rows6[1].local) == (
        socket.AF_INET6, "::", "::1")
    assert net_sockets.read_socket_rows(PROC, "udp6") == []
    assert net_sockets.read_socket_rows(PROC, "raw9") is None


@pytest.mark.parametrize("name, line", [
    ("tcp-truncated", 3), ("tcp-bad-address", 2), ("tcp-no-header", 1)])
def test_socket_rows_broken(name: str, line: int) -> None:
    path = os.path.join(BROKEN, name)
    with open(path) as f, pytest.raises(ParseError) as e:
        net_sockets.parse_socket_rows(f, path)
    assert str(e.value).startswith(f"{path}:{line}:")


# --- owner cache on a fixture tree -----------------------------------------------------------

LISTENER_INODES = {1001, 1002, 1003, 1004, 1005}


@pytest.fixture
def proc_tree(tmp_path: Any) -> str:
    dst = str(tmp_path / "proc")
    shutil.copytree(PROC, dst, symlinks=True)
    return dst


def test_owner_cache_attributes_and_caches(proc_tree: str) -> None:
    cache = owners.OwnerCache(proc_tree)
    got = cache.owners(LISTENER_INODES)
    ident = {ino: sorted((o.pid, o.identity.name, o.identity.exe, o.identity.user) for o in os_)
             for ino, os_ in got.items()}
    assert ident == {
        1001: [(100, "sshd", "/usr/sbin/sshd", "root")],
        1002: [(200, "nginx", "/usr/sbin/nginx", "root"),
               (201, "nginx", "/usr/sbin/nginx", user(33))],
        1003: [],
        1004: [(100, "sshd", "/usr/sbin/sshd", "root")],
        1005: [(300, "dnsmasq", "/usr/sbin/dnsmasq", user(65534))],
    }
    # 1003 has no holder, so the first walk went through every process.
    assert cache.stats.walked_processes == 6 and cache.stats.unknown == 1

    # Nothing changed: no walk, each holder confirmed by one readlink; 1003 is not searched again.
    assert cache.owners(LISTENER_INODES) == got
    assert (cache.stats.walked_processes, cache.stats.searched, cache.stats.verified) == (0, 0, 5)


def test_owner_cache_stops_when_all_found(proc_tree: str) -> None:
    cache = owners.OwnerCache(proc_tree)
    cache.owners(LISTENER_INODES)
    # A new listener in the newest process: found in the first process read, walk stops there.
    os.symlink("socket:[1006]", os.path.join(proc_tree, "400", "fd", "9"))
    got = cache.owners(LISTENER_INODES | {1006})
    assert [o.identity.name for o in got[1006]] == ["python3"]
    assert (cache.stats.searched, cache.stats.walked_processes) == (1, 1)


def test_owner_cache_rechecks_sockets_whose_owner_went(proc_tree: str) -> None:
    cache = owners.OwnerCache(proc_tree)
    cache.owners(LISTENER_INODES)
    # The worker exits; the master still holds the socket. Looked for again, the socket is now
    # the master's, as a first look would find it.
    shutil.rmtree(os.path.join(proc_tree, "201"))
    got = cache.owners(LISTENER_INODES)
    assert [o.pid for o in got[1002]] == [200] and cache.stats.searched == 1
    assert cache.stats.walked_processes == 3  # 400, 300, 200: the walk stopped there
    # dnsmasq passes its socket to a new process and exits: the socket is searched again.
    os.symlink("socket:[1005]", os.path.join(proc_tree, "400", "fd", "10"))
    shutil.rmtree(os.path.join(proc_tree, "300"))
    got = cache.owners(LISTENER_INODES)
    assert [o.identity.name for o in got[1005]] == ["python3"] and cache.stats.searched == 1
    # A socket closed by its holder (fd link gone) but still open elsewhere is found again.
    os.remove(os.path.join(proc_tree, "400", "fd", "10"))
    os.symlink("socket:[1005]", os.path.join(proc_tree, "100", "fd", "11"))
    got = cache.owners(LISTENER_INODES)
    assert [o.identity.name for o in got[1005]] == ["sshd"]


def test_walk_threads_do_not_change_the_answer(proc_tree: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    answers = []
    for threads in (1, 4):
        monkeypatch.setattr(owners, "READ_THREADS", threads)
        cache = owners.OwnerCache(proc_tree)
        answers.append((cache.owners(LISTENER_INODES), cache.stats))
    assert answers[0] == answers[1]


def _rewrite_stat(tree: str, pid: int, comm: str, starttime: int) -> None:
    path = os.path.join(tree, str(pid), "stat")
    with open(path) as f:
        f_ = f.read().split()
    f_[1], f_[21] = f"({comm})", str(starttime)
    with open(path, "w") as f:
        f.write(" ".join(f_) + "\n")


def test_owner_cache_pid_reuse_and_exec(proc_tree: str) -> None:
    cache = owners.OwnerCache(proc_tree)
    cache.owners(LISTENER_INODES)
    # exec: same pid and start time, new name and executable.
    _rewrite_stat(proc_tree, 300, "unbound", 1300)
    os.remove(os.path.join(proc_tree, "300", "exe"))
    os.symlink("/usr/sbin/unbound", os.path.join(proc_tree, "300", "exe"))
    got = cache.owners(LISTENER_INODES)
    assert got[1005][0].identity == owners.Identity("unbound", "/usr/sbin/unbound", user(65534))
    # pid reuse: another process, another start time, with the same socket at the same fd.
    _rewrite_stat(proc_tree, 300, "unbound", 99999)
    with open(os.path.join(proc_tree, "300", "status"), "w") as f:
        f.write("Name:\tunbound\nUid:\t0\t0\t0\t0\n")
    got = cache.owners(LISTENER_INODES)
    assert got[1005][0].identity.user == "root"


@pytest.mark.parametrize("step", ["fd", "stat", "status", "exe", "list"])
def test_process_vanishing_mid_scrape(proc_tree: str, monkeypatch: pytest.MonkeyPatch,
                                      step: str) -> None:
    """A process that exits between any two reads costs its attribution, never the scrape."""
    victim = 300

    def vanish_before(fn: Any) -> Any:
        def wrapped(root: str, pid: int, *a: Any) -> Any:
            if pid == victim:
                shutil.rmtree(os.path.join(root, str(pid)), ignore_errors=True)
            return fn(root, pid, *a)
        return wrapped

    if step == "list":  # listed, then gone before anything of it is read
        real = pid_stat.list_pids

        def listed(root: str) -> List[int]:
            pids = real(root)
            shutil.rmtree(os.path.join(root, str(victim)))
            return pids
        monkeypatch.setattr(owners.pid_stat, "list_pids", listed)
    else:
        mod, name = {"fd": (pid_fd, "socket_fds"), "stat": (pid_stat, "read_stat"),
                     "status": (pid_status, "read_status"), "exe": (pid_fd, "read_exe")}[step]
        monkeypatch.setattr(mod, name, vanish_before(getattr(mod, name)))
    ex = make_exporter(procfs=proc_tree, source="procfs")
    samples = collect(ex)
    assert value(samples, "netstat_exporter_collector_success", collector="listeners") == 1.0
    dns = info(samples, port="53")
    assert len(dns) == 1
    if step == "exe":  # gone after its name and user were read: known, without executable
        assert (dns[0]["process"], dns[0]["executable"]) == ("dnsmasq", "")
        assert value(samples, "netstat_listener_unattributed", protocol="udp") == 0
    else:
        assert dns[0]["process"] == "" and dns[0]["user"] == user(65534)  # the socket's owner
        assert value(samples, "netstat_listener_unattributed", protocol="udp") == 1
    assert info(samples, port="22", family="ipv4")[0]["process"] == "sshd"


def test_real_process_vanishing_during_scrapes() -> None:
    """Processes that exit all the time while we scrape: every scrape succeeds."""
    ex = make_exporter()
    churn = [subprocess.Popen([sys.executable, "-c", "pass"]) for _ in range(20)]
    try:
        for i in range(20):
            samples = collect(ex)
            assert value(samples, "netstat_exporter_collector_success",
                         collector="listeners") == 1.0
            churn[i].wait(timeout=30)
            churn.append(subprocess.Popen([sys.executable, "-c", "pass"]))
    finally:
        for p in churn:
            p.wait(timeout=30)


# --- the collector on the fixture tree -------------------------------------------------------

def test_collector_on_fixture_tree(proc_tree: str) -> None:
    samples = collect(make_exporter(procfs=proc_tree, source="procfs"))
    series = sorted((lab["protocol"], lab["family"], lab["address"], lab["port"], lab["service"],
                     lab["process"], lab["executable"], lab["user"], lab["expected"])
                    for lab in info(samples))
    ssh, http = service(22, "tcp"), service(80, "tcp")
    nginx = ("nginx", "/usr/sbin/nginx")
    assert series == sorted([
        ("tcp", "ipv4", "127.0.0.1", "22", ssh, "sshd", "/usr/sbin/sshd", "root", ""),
        ("tcp", "ipv4", "0.0.0.0", "80", http, *nginx, "root", ""),
        ("tcp", "ipv4", "0.0.0.0", "80", http, *nginx, user(33), ""),
        ("tcp", "ipv4", "127.0.0.1", "8080", service(8080, "tcp"), "", "", user(1000), ""),
        ("tcp", "ipv6", "::", "22", ssh, "sshd", "/usr/sbin/sshd", "root", ""),
        ("udp", "ipv4", "0.0.0.0", "53", service(53, "udp"), "dnsmasq", "/usr/sbin/dnsmasq",
         user(65534), ""),
    ])
    assert "pid" not in info(samples)[0]
    q = "netstat_listener_accept_queue_length"
    assert value(samples, q, family="ipv4", address="127.0.0.1", port="22") == 2
    assert value(samples, q, family="ipv4", address="0.0.0.0", port="80") == 0
    assert select(samples, "netstat_listener_accept_queue_limit") == []  # not in /proc/net/tcp
    c = "netstat_listener_connections"
    assert value(samples, c, port="22", state="established") == 2  # one IPv4, one IPv6
    assert value(samples, c, port="22", state="time_wait") == 1
    assert value(samples, c, port="80", state="close_wait") == 1
    assert value(samples, c, port="80", state="established") == 1
    assert sum(v for _n, _l, v in select(samples, c, port="8080")) == 0
    # a port with no connections: the zero states only
    assert [lab["state"] for _n, lab, _v in select(samples, c, port="8080")] == [
        "syn_recv", "established", "close_wait", "time_wait"]
    assert select(samples, c, port="40000") == [] and select(samples, c, port="other") == []
    n = "netstat_listener_sockets"
    assert [value(samples, n, protocol=p, family=f) for p, f in (
        ("tcp", "ipv4"), ("tcp", "ipv6"), ("udp", "ipv4"), ("udp", "ipv6"))] == [3, 1, 1, 0]
    assert value(samples, "netstat_listener_unattributed", protocol="tcp") == 1
    assert value(samples, "netstat_listener_unattributed", protocol="udp") == 0
    for absent in ("netstat_listener_unexpected",
                   "netstat_listener_expected_file_reload_success"):
        assert select(samples, absent) == []


def test_collector_pid_label_and_port_cap(proc_tree: str) -> None:
    samples = collect(make_exporter(procfs=proc_tree, source="procfs",
                                    pid_label=True, max_ports=1))
    assert sorted((lab["user"], lab["pid"]) for lab in info(samples, port="80")) == sorted(
        [("root", "200"), (user(33), "201")])
    assert info(samples, port="8080")[0]["pid"] == ""
    c = "netstat_listener_connections"
    assert {lab["port"] for _n, lab, _v in select(samples, c)} == {"22", "other"}
    # 80 and 8080 summed
    assert value(samples, c, port="other", state="established") == 1
    assert value(samples, c, port="other", state="close_wait") == 1


@pytest.mark.parametrize("zero_states, want", [
    ("all", list(LISTENER_CONNECTION_STATES.values())),
    ("time_wait, established", ["established", "time_wait"]),  # in the family's order
    ("", []),
])
def test_collector_zero_states(proc_tree: str, zero_states: str, want: List[str]) -> None:
    """--collector.listeners.zero-states decides which states a port gets at zero; a port's
    non-zero states are there whatever it says."""
    samples = collect(make_exporter(procfs=proc_tree, source="procfs", zero_states=zero_states))
    c = "netstat_listener_connections"
    assert [lab["state"] for _n, lab, _v in select(samples, c, port="8080")] == want
    assert value(samples, c, port="80", state="close_wait") == 1
    assert value(samples, c, port="22", state="time_wait") == 1


@pytest.mark.parametrize("bad", ["syn_sent", "established,listen", "al"])
def test_zero_states_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"^--collector.listeners.zero-states: '"):
        ListenersOptions(zero_states=bad)


def test_collector_without_connections(proc_tree: str) -> None:
    samples = collect(make_exporter(procfs=proc_tree, source="procfs",
                                    connections=False))
    assert select(samples, "netstat_listener_connections") == []
    assert len(info(samples)) == 6


@pytest.mark.parametrize("name", ["good.yaml", "good.toml"])
def test_collector_expected_verdicts(proc_tree: str, name: str) -> None:
    samples = collect(make_exporter(procfs=proc_tree, source="procfs",
                                    expected_file=os.path.join(EXPECTED, name)))
    verdicts = {(lab["protocol"], lab["family"], lab["port"], lab["user"]): lab["expected"]
                for lab in info(samples)}
    assert verdicts == {
        ("tcp", "ipv4", "22", "root"): "true", ("tcp", "ipv6", "22", "root"): "true",
        ("tcp", "ipv4", "80", "root"): "true", ("tcp", "ipv4", "80", user(33)): "true",
        ("tcp", "ipv4", "8080", user(1000)): "false", ("udp", "ipv4", "53", user(65534)): "true",
    }
    assert value(samples, "netstat_listener_unexpected", protocol="tcp") == 1
    assert value(samples, "netstat_listener_unexpected", protocol="udp") == 0
    assert value(samples, "netstat_listener_expected_file_reload_success") == 1
    ts = value(samples, "netstat_listener_expected_file_reload_timestamp_seconds")
    assert ts is not None and abs(ts - time.time()) < 600


# --- the expected-listeners file -------------------------------------------------------------

def test_expected_yaml_and_toml_agree() -> None:
    y = expected.load(os.path.join(EXPECTED, "good.yaml"))
    t = expected.load(os.path.join(EXPECTED, "good.toml"))
    assert [(r.low, r.high, r.protocol, r.address, r.process and r.process.text)
            for r in y.rules] == [(r.low, r.high, r.protocol, r.address,
                                   r.process and r.process.text) for r in t.rules]
    assert [r.line for r in y.rules] == [3, 8, 13]
    assert [r.line for r in t.rules] == [2, 9, 16]


def _rules(text: str, tmp_path: Any, suffix: str = ".yaml") -> expected.ExpectedListeners:
    p = tmp_path / f"e{suffix}"
    p.write_text(text)
    return expected.load(str(p))


def test_expected_matching(tmp_path: Any) -> None:
    r = _rules("""
listeners:
  - {port: 8000-8010, protocol: tcp}
  - {port: 53, protocol: any, address: 127.0.0.0/8}
  - {port: 9100, protocol: udp, process: "node_*", executable: "re:/usr/(s?bin)/node.*"}
  - {port: 443, protocol: tcp, address: "::", user: "www-*"}
""", tmp_path)
    assert r.matches("tcp", "0.0.0.0", 8000) and r.matches("tcp", "::1", 8010)
    assert not r.matches("tcp", "0.0.0.0", 7999) and not r.matches("tcp", "0.0.0.0", 8011)
    assert not r.matches("udp", "0.0.0.0", 8005)
    assert r.matches("udp", "127.0.0.53", 53) and r.matches("tcp", "127.0.0.1%lo", 53)
    assert not r.matches("udp", "0.0.0.0", 53) and not r.matches("udp", "::1", 53)
    assert r.matches("udp", "::", 9100, "node_exporter", "/usr/bin/node_exporter")
    assert not r.matches("udp", "::", 9100, "node_exporter", "/opt/node_exporter")
    assert not r.matches("udp", "::", 9100, "xnode_exporter", "/usr/bin/node_exporter")
    assert not r.matches("udp", "::", 9100, "", "")  # a pattern never matches an unknown process
    assert r.matches("tcp", "::", 443, "nginx", "/x", "www-data")
    assert not r.matches("tcp", "::", 443, "nginx", "/x", "root")
    assert not r.matches("tcp", "0.0.0.0", 443, "nginx", "/x", "www-data")
    assert _rules("listeners: []\n", tmp_path).rules == ()
    assert not _rules("listeners:\n", tmp_path).matches("tcp", "0.0.0.0", 22)


BAD_FILES = [
    ("bad-port.yaml", 4, "port 70000 out of range"),
    ("bad-range.yaml", 5, "port range 9000-8000 is empty"),
    ("bad-protocol.yaml", 3, "protocol 'sctp'"),
    ("unknown-key.yaml", 4, "unknown key 'proces'"),
    ("missing-protocol.yaml", 4, "without 'protocol'"),
    ("bad-regex.yaml", 4, "invalid regular expression"),
    ("bad-address.yaml", 4, "not an IP address"),
    ("syntax.yaml", 4, "invalid YAML"),
    ("duplicate-key.yaml", 3, "duplicate key 'port'"),
    ("not-a-list.yaml", 2, "must be a list"),
    ("wrong-top.yaml", 1, "unknown key 'listener'"),
    ("empty.yaml", None, "empty file"),
    ("bad-port.toml", 6, "port 0 out of range"),
    ("syntax.toml", 3, "invalid TOML"),
    ("no-such-file.yaml", None, "No such file"),
]


@pytest.mark.parametrize("name, line, message", BAD_FILES)
def test_expected_bad_file(name: str, line: Optional[int], message: str) -> None:
    path = os.path.join(EXPECTED, name)
    with pytest.raises(expected.ExpectedFileError) as e:
        expected.load(path)
    where = f"{path}:{line}:" if line else f"{path}:"
    assert where in str(e.value) and message in str(e.value)


@pytest.mark.parametrize("name, line, message", BAD_FILES[:1] + BAD_FILES[7:8] + BAD_FILES[-2:])
def test_expected_bad_file_at_start(name: str, line: Optional[int], message: str) -> None:
    path = os.path.join(EXPECTED, name)
    r = run_cli("--collector.disable-defaults", "--collector.listeners",
                f"--collector.listeners.expected-file={path}", "dump")
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert lines[0].startswith("netstat-exporter: error: expected-listeners file")
    assert (f"{path}:{line}:" if line else path) in lines[0] and message in lines[0]


# --- real listeners --------------------------------------------------------------------------

CHILD = r"""
import json, os, socket, sys
out = []
keep = []
for proto, host, backlog in json.loads(sys.argv[1]):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    s.bind((host, 0))
    if proto == "tcp":
        s.listen(backlog)
    keep.append(s)
    out.append([proto, host, s.getsockname()[1], s.fileno()])
workers = int(sys.argv[2]) if len(sys.argv) > 2 else 0
pids = [os.getpid()]
for _ in range(workers):
    pid = os.fork()
    if pid == 0:
        sys.stdin.read()
        os._exit(0)
    pids.append(pid)
print(json.dumps({"pids": pids, "sockets": out}), flush=True)
sys.stdin.read()
"""


@pytest.fixture(scope="module")
def bindir() -> Iterator[str]:
    """A directory every user can reach, with python under distinctive names: a process's
    command name (comm) is the base name it was executed under."""
    d = tempfile.mkdtemp(prefix="lsnr-bin-")
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


class Child:
    def __init__(self, proc: subprocess.Popen, info: Dict[str, Any], name: str) -> None:
        self.proc, self.name = proc, name
        self.pids: List[int] = info["pids"]
        self.sockets: List[Tuple[str, str, int, int]] = [tuple(s) for s in info["sockets"]]

    @property
    def pid(self) -> int:
        return self.pids[0]


@contextmanager
def child(bindir: str, name: str, sockets: List[Tuple[str, str, int]], *, as_user: str = "",
          netns: str = "", workers: int = 0, pass_fds: Tuple[int, ...] = (),
          script: str = CHILD) -> Iterator[Child]:
    exe = os.path.join(bindir, name)
    if not os.path.lexists(exe):
        os.symlink(os.path.realpath(sys.executable), exe)
    cmd = [exe, "-c", script, json.dumps(sockets), str(workers)]
    if as_user:
        cmd = ["setpriv", f"--reuid={as_user}", f"--regid={pwd.getpwnam(as_user).pw_gid}",
               "--clear-groups",
               "--inh-caps=-all", "--bounding-set=-all", *cmd]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            pass_fds=pass_fds, cwd="/")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"{name} did not start"
        yield Child(proc, json.loads(line), name)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        close_pipes(proc)


SS_USERS = re.compile(r'\("([^"]*)",pid=(\d+),fd=(\d+)\)')


def ss_listeners(netns: str = "") -> Dict[Tuple[str, str, int], Dict[str, Any]]:
    """`ss -tulnpe`: (protocol, address, port) -> {"users": {(name, pid)}, "uid", "recvq",
    "sendq"}."""
    cmd = ["ss", "-tulnpeH"]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    out: Dict[Tuple[str, str, int], Dict[str, Any]] = {}
    for line in subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines():
        f = line.split()
        proto, recvq, sendq, local = f[0], int(f[2]), int(f[3]), f[4]
        addr, port = local.rsplit(":", 1)
        addr = addr.strip("[]")
        uid = re.search(r"\buid:(\d+)", line)
        entry = out.setdefault((proto, addr, int(port)), {"users": set(), "recvq": recvq,
                                                          "sendq": sendq,
                                                          "uid": int(uid.group(1)) if uid else 0})
        entry["users"] |= {(n, int(p)) for n, p, _fd in SS_USERS.findall(line)}
    return out


@pytest.mark.serial  # the host's own `ss`
def test_info_matches_ss(bindir: str) -> None:
    ex = make_exporter()
    sockets = [("tcp", "127.0.0.1", 8), ("tcp", "::1", 8), ("udp", "127.0.0.1", 0)]
    with child(bindir, "lsnr-alpha", sockets) as alpha, \
            child(bindir, "lsnr-bravo", [("tcp", "127.0.0.1", 8), ("udp", "::1", 0)],
                  as_user="nobody") as bravo:
        samples = collect(ex)
        ss = ss_listeners()
        for c in (alpha, bravo):
            exe = os.path.realpath(f"/proc/{c.pid}/exe")
            for proto, host, port, _fd in c.sockets:
                s = ss[(proto, host, port)]
                ss_names = {n for n, _p in s["users"]}
                assert ss_names == {c.name}
                series = info(samples, protocol=proto, address=host, port=str(port))
                assert len(series) == 1, series
                lab = series[0]
                assert (lab["process"], lab["user"], lab["executable"]) == (
                    c.name, user(s["uid"]), exe)
                assert lab["family"] == ("ipv6" if ":" in host else "ipv4")
                assert lab["service"] == service(port, proto) and lab["expected"] == ""
        # and nothing we show for these ports disagrees with ss
        ours = {(lab["protocol"], lab["address"], int(lab["port"])) for lab in info(samples)}
        mine = {(p, h, port) for c in (alpha, bravo) for p, h, port, _ in c.sockets}
        assert mine <= ours and mine <= set(ss)


@pytest.mark.serial  # the host's own `ss`
def test_forked_workers_are_one_series(bindir: str) -> None:
    ex = make_exporter(pid_label=True)
    with child(bindir, "lsnr-prefork", [("tcp", "127.0.0.1", 8)], workers=3) as c:
        port = c.sockets[0][2]
        ss = ss_listeners()[("tcp", "127.0.0.1", port)]
        assert {p for _n, p in ss["users"]} == set(c.pids)  # ss: four holders
        series = info(collect(ex), port=str(port), address="127.0.0.1")
        # the newest worker and its parent, which holds the socket too: one program, one series,
        # with the lowest pid
        assert len(series) == 1
        assert series[0]["process"] == "lsnr-prefork" and series[0]["pid"] == str(c.pid)


SLEEPER = "import sys; print('{\"pids\": [], \"sockets\": []}', flush=True); sys.stdin.read()"


def test_owner_gone_is_looked_for_again(bindir: str) -> None:
    """A socket passed to two programs: shown with the newest holder and the ancestor that
    holds it too (this test's process), not the older sibling; when the newest exits, the next
    scrape looks again and finds the sibling."""
    ex = make_exporter()
    me = pid_stat.read_stat("/proc", os.getpid()).comm
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = str(srv.getsockname()[1])

    def holders() -> List[str]:
        return sorted(s["process"] for s in info(collect(ex), port=port))

    try:
        fds = (srv.fileno(),)
        with child(bindir, "lsnr-first", [], script=SLEEPER, pass_fds=fds), \
                child(bindir, "lsnr-second", [], script=SLEEPER, pass_fds=fds) as b:
            assert holders() == sorted(["lsnr-second", me])
            b.proc.stdin.close()  # type: ignore[union-attr]
            b.proc.wait(timeout=10)
            assert holders() == sorted(["lsnr-first", me])
        assert holders() == [me]
    finally:
        srv.close()


@pytest.mark.serial  # the host's own `ss`
def test_accept_queue_matches_ss() -> None:
    ex = make_exporter()
    backlog = 3
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(backlog)
    port = srv.getsockname()[1]
    clients = []
    try:
        for _ in range(backlog + 3):  # more than fit: the rest wait in SYN_SENT
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            clients.append(c)

        def same() -> Optional[Tuple[float, float, int]]:
            before = ss_listeners()[("tcp", "127.0.0.1", port)]
            samples = collect(ex)
            after = ss_listeners()[("tcp", "127.0.0.1", port)]
            q = value(samples, "netstat_listener_accept_queue_length", family="ipv4",
                      address="127.0.0.1", port=str(port))
            lim = value(samples, "netstat_listener_accept_queue_limit", family="ipv4",
                        address="127.0.0.1", port=str(port))
            if q is None or lim is None or not before["recvq"] == q == after["recvq"] \
                    or q < backlog:
                return None
            assert lim == before["sendq"] == backlog
            return q, lim, before["recvq"]

        q, lim, ss_q = poll(same, what="accept queue to fill and agree with ss")
        assert q == ss_q > 0 and lim == backlog
    finally:
        for c in clients + [srv]:
            c.close()


# --- network namespaces of our own -----------------------------------------------------------

@contextmanager
def netns(tag: str) -> Iterator[str]:
    name = f"lsnr-{tag}-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def dump_in(ns: str, *args: str) -> List[Sample]:
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "exporter",
                        "--collector.disable-defaults", "--collector.listeners", *args, "dump"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr
    return parse(r.stdout)


def scrape_in(ns: str, port: int) -> List[Sample]:
    code = (f"import urllib.request,sys;sys.stdout.write(urllib.request.urlopen("
            f"'http://127.0.0.1:{port}/metrics',timeout=20).read().decode())")
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return parse(r.stdout)


CONNECTIONS = r"""
import socket, sys
def listener(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    return s
def pair(srv):
    c = socket.create_connection(srv.getsockname())
    a, _ = srv.accept()
    return c, a
a, b, c = listener(8001), listener(8002), listener(8003)
keep = []
for _ in range(3):                      # ESTABLISHED on 8001
    keep += pair(a)
for _ in range(2):                      # CLOSE_WAIT on 8001: the client closes first
    cl, sv = pair(a)
    cl.close()
    keep.append(sv)
for _ in range(4):                      # TIME_WAIT on 8001: the server closes first
    cl, sv = pair(a)
    sv.close()
    cl.recv(1)                          # the server's FIN has arrived
    cl.close()
keep += pair(b)                         # one ESTABLISHED on 8002 and on 8003
keep += pair(c)
cl, sv = pair(b)                        # FIN_WAIT2 on 8002: the server closed, the client
sv.close()                              # holds its end open
keep.append(cl)
print("ready", flush=True)
sys.stdin.read()
"""


@root_only
def test_connections_per_port_by_state() -> None:
    with netns("conn") as ns, Holder(ns, CONNECTIONS) as holder:
        assert holder.ready.strip() == "ready"
        want = {("8001", "established"): 3, ("8001", "close_wait"): 2,
                ("8001", "time_wait"): 4, ("8002", "established"): 1, ("8002", "fin_wait2"): 1,
                ("other", "established"): 1}

        def counts() -> Optional[List[Sample]]:
            s = dump_in(ns, "--collector.listeners.max-ports=2")
            got = {(lab["port"], lab["state"]): v
                   for _n, lab, v in select(s, "netstat_listener_connections") if v}
            return s if got == want else None

        samples = poll(counts, timeout=30, what="connection states to settle")
        c = "netstat_listener_connections"
        # every port has the default zero states; fin_wait2 only where there is one
        for port in ("8001", "8002", "other"):
            states = {lab["state"] for _n, lab, _v in select(samples, c, port=port)}
            assert states == set(ZERO_STATES.split(",")) | (
                {"fin_wait2"} if port == "8002" else set()), port
        assert {lab["port"] for _n, lab, _v in select(samples, c)} == {"8001", "8002", "other"}
        assert value(samples, "netstat_listener_sockets", protocol="tcp", family="ipv4") == 3
        assert value(samples, "netstat_listener_unattributed", protocol="tcp") == 0


OTHER_SOCKETS_ON_A_LISTENING_PORT = r"""
import errno, socket, sys
def bound(addr, port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    return s
a = bound("127.0.0.1", 8001); a.listen(64)
b = bound("127.0.0.1", 8002); b.listen(64)
full = bound("127.0.0.1", 8009); full.listen(0)
queued = socket.create_connection(("127.0.0.1", 8009))  # fills the accept queue of 8009
keep = [a, b, full, queued]
c = socket.create_connection(("127.0.0.1", 8001))       # accepted on 8001: established
keep += [c, a.accept()[0]]
out = bound("127.0.0.4", 8001)                          # from port 8001 outwards: established
out.connect(("127.0.0.1", 8002))
keep += [out, b.accept()[0]]
syn = bound("127.0.0.2", 8001)                          # from port 8001 outwards: syn_sent, as
syn.setblocking(False)                                  # 8009 drops the SYN (queue full)
assert syn.connect_ex(("127.0.0.1", 8009)) == errno.EINPROGRESS
idle = bound("127.0.0.3", 8001)                         # holds port 8001 only: close
keep += [syn, idle]
print("ready", flush=True)
sys.stdin.read()
"""


def ss_by_local_port(ns: str, port: int) -> Dict[str, int]:
    """States of the TCP sockets whose local port is ``port``, by ss -tan in ``ns``."""
    out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-Htan"], capture_output=True,
                         text=True, check=True).stdout
    counts: Dict[str, int] = {}
    for line in out.splitlines():
        fields = line.split()
        if fields[3].rsplit(":", 1)[1] == str(port):
            counts[SS_STATE[fields[0]]] = counts.get(SS_STATE[fields[0]], 0) + 1
    return counts


@root_only
def test_connections_only_in_states_of_an_accepted_connection() -> None:
    """Sockets on a listening port that are no connection to it (connecting out: syn_sent; only
    bound: close) are not counted, and their states are not series: the family carries the
    eight states an accepted connection can be in, and agrees with ss on those."""
    with netns("states") as ns, Holder(ns, OTHER_SOCKETS_ON_A_LISTENING_PORT) as holder:
        assert holder.ready.strip() == "ready"
        ss = poll(lambda: (lambda c: c if c.get("syn_sent") else None)(
            ss_by_local_port(ns, 8001)), what="the SYN to the full queue to be dropped")
        assert ss == {"listen": 1, "established": 2, "syn_sent": 1}
        samples = dump_in(ns, "--collector.sockets", "--collector.listeners.zero-states=all")
        c = "netstat_listener_connections"
        assert {lab["state"] for _n, lab, _v in select(samples, c, port="8001")} == set(
            LISTENER_CONNECTION_STATES.values())
        assert value(samples, c, port="8001", state="established") == 2
        assert sum(v for _n, _l, v in select(samples, c, port="8001")) == sum(
            n for st, n in ss.items() if st in LISTENER_CONNECTION_STATES.values())
        # the dump saw them: the sockets collector counts the syn_sent and the bound socket
        for st in ("syn_sent", "close"):
            assert value(samples, "netstat_sockets", protocol="tcp", family="ipv4",
                         state=st) >= 1


MANY_LISTENERS = r"""
import socket, sys
keep = []
for port in (8001, 8001, 8002, 8003, 8004, 8005):  # 8001: an SO_REUSEPORT group of two
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(16)
    keep.append(s)
for port in (8006, 8007):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", port))
    keep.append(u)
print("ready", flush=True)
sys.stdin.read()
"""
EXPECT_ALL_BUT_8005 = """
listeners:
  - port: 8001-8004
    protocol: tcp
  - port: 8006-8007
    protocol: udp
"""


@root_only
def test_listener_cap_shows_unexpected_first(tmp_path: Any) -> None:
    """--collector.listeners.max-listeners bounds info and queue series, counts what it leaves
    out, and keeps the listener nobody expected even though its port is the highest."""
    expected_file = tmp_path / "expected.yaml"
    expected_file.write_text(EXPECT_ALL_BUT_8005)
    with netns("cap") as ns, Holder(ns, MANY_LISTENERS) as holder:
        assert holder.ready.strip() == "ready"
        ss = ss_listeners(ns)  # one entry per (protocol, address, port): the group is one
        assert len(ss) == 7

        def shown(samples: List[Sample]) -> Dict[str, List[str]]:
            return {
                "info": sorted(lab["port"] for lab in info(samples)),
                "queue": sorted(lab["port"] for _n, lab, _v in
                                select(samples, "netstat_listener_accept_queue_length")),
                "limit": sorted(lab["port"] for _n, lab, _v in
                                select(samples, "netstat_listener_accept_queue_limit"))}

        capped = dump_in(ns, "--collector.listeners.max-listeners=3",
                         f"--collector.listeners.expected-file={expected_file}")
        assert shown(capped) == {k: ["8001", "8002", "8005"]
                                 for k in ("info", "queue", "limit")}
        assert value(capped, "netstat_listener_accept_queue_limit", port="8001") == 32
        omitted = {p: value(capped, "netstat_listener_omitted", protocol=p)
                   for p in ("tcp", "udp")}
        assert omitted == {"tcp": 2, "udp": 2}
        assert len(info(capped)) + sum(omitted.values()) == len(ss)
        assert value(capped, "netstat_listener_unexpected", protocol="tcp") == 1
        assert sum(v for _n, _l, v in select(capped, "netstat_listener_sockets")) == 8

        plain = dump_in(ns, "--collector.listeners.max-listeners=3")
        assert shown(plain)["info"] == ["8001", "8002", "8003"]
        everything = dump_in(ns)
        assert shown(everything)["info"] == ["8001", "8002", "8003", "8004", "8005",
                                             "8006", "8007"]
        assert [value(everything, "netstat_listener_omitted", protocol=p)
                for p in ("tcp", "udp")] == [0, 0]


@root_only
def test_unprivileged_exporter(bindir: str) -> None:
    """Run as nobody with every capability dropped: root's listeners are still there, with no
    process, the socket owner as user, and counted as unattributed."""
    with netns("unpriv") as ns, \
            child(bindir, "lsnr-rootly", [("tcp", "127.0.0.1", 8), ("udp", "127.0.0.1", 0)],
                  netns=ns) as rootly, \
            child(bindir, "lsnr-nobody", [("tcp", "127.0.0.1", 8)], netns=ns,
                  as_user="nobody") as nob, \
            running_exporter("--collector.disable-defaults", "--collector.listeners",
                             netns=ns, user="nobody") as ex:
        samples = scrape_in(ns, ex.port)
        ss = ss_listeners(ns)
        for proto, host, port, _ in rootly.sockets:
            lab = info(samples, protocol=proto, port=str(port))
            assert len(lab) == 1
            assert (lab[0]["process"], lab[0]["executable"], lab[0]["user"]) == ("", "", "root")
            assert {n for n, _p in ss[(proto, host, port)]["users"]} == {"lsnr-rootly"}
        lab = info(samples, port=str(nob.sockets[0][2]))
        assert [(x["process"], x["user"]) for x in lab] == [("lsnr-nobody", "nobody")]
        own = info(samples, port=str(ex.port))
        assert len(own) == 1 and own[0]["process"] and own[0]["user"] == "nobody"
        # unattributed == the listeners ss shows held only by root's processes
        root_held: Dict[str, int] = {"tcp": 0, "udp": 0}
        for (proto, _h, _p), e in ss.items():
            if all(pid_status.read_status("/proc", pid).euid == 0 for _n, pid in e["users"]):
                root_held[proto] += 1
        assert root_held == {"tcp": 1, "udp": 1}
        for proto in ("tcp", "udp"):
            assert value(samples, "netstat_listener_unattributed",
                         protocol=proto) == root_held[proto]


@root_only
@pytest.mark.parametrize("caps, attributed", [
    ("+sys_ptrace", False),        # may read the links, but not list another user's fd directory
    ("+dac_read_search", False),   # may list the directory, but not read the links
    ("+sys_ptrace,+dac_read_search", True),
])
def test_capabilities_for_attribution(bindir: str, caps: str, attributed: bool) -> None:
    """Which capabilities let an exporter running as nobody name root's processes."""
    with netns("caps") as ns, \
            child(bindir, "lsnr-rootly", [("tcp", "127.0.0.1", 8)], netns=ns) as rootly:
        gid = pwd.getpwnam("nobody").pw_gid
        r = subprocess.run(
            ["ip", "netns", "exec", ns, "setpriv", "--reuid=nobody", f"--regid={gid}",
             "--clear-groups", f"--inh-caps={caps}", f"--ambient-caps={caps}",
             sys.executable, "-m", "exporter", "--collector.disable-defaults",
             "--collector.listeners", "dump"],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
            env=dict(os.environ, PYTHONPATH=ROOT))
        assert r.returncode == 0, r.stderr
        samples = parse(r.stdout)
        lab = info(samples, port=str(rootly.sockets[0][2]))
        assert len(lab) == 1
        assert lab[0]["process"] == ("lsnr-rootly" if attributed else "")
        assert lab[0]["executable"] == (os.path.realpath(sys.executable) if attributed else "")
        assert value(samples, "netstat_listener_unattributed",
                     protocol="tcp") == (0 if attributed else 1)


@root_only
def test_expected_file_reload_on_sighup(bindir: str, tmp_path: Any) -> None:
    path = tmp_path / "expected.yaml"
    with child(bindir, "lsnr-hup", [("tcp", "127.0.0.1", 8)]) as c:
        port = c.sockets[0][2]
        path.write_text(f"listeners:\n  - port: {port}\n    protocol: tcp\n    process: lsnr-*\n")
        with running_exporter("--collector.disable-defaults", "--collector.listeners",
                              f"--collector.listeners.expected-file={path}") as ex:
            def verdict(samples: List[Sample]) -> str:
                return info(samples, port=str(port))[0]["expected"]

            s = ex.scrape()
            assert verdict(s) == "true"
            assert value(s, "netstat_listener_expected_file_reload_success") == 1
            t0 = value(s, "netstat_listener_expected_file_reload_timestamp_seconds")

            path.write_text("listeners:\n  - port: 99999\n    protocol: tcp\n")
            ex.proc.send_signal(signal.SIGHUP)
            s = poll(lambda: (lambda s: s if value(
                s, "netstat_listener_expected_file_reload_success") == 0 else None)(ex.scrape()),
                what="failed reload to show")
            assert verdict(s) == "true"  # the previous file is still in use
            assert value(s, "netstat_listener_expected_file_reload_timestamp_seconds") == t0

            path.write_text(f"listeners:\n  - port: {port + 1}\n    protocol: tcp\n")
            ex.proc.send_signal(signal.SIGHUP)
            s = poll(lambda: (lambda s: s if value(
                s, "netstat_listener_expected_file_reload_success") == 1 else None)(ex.scrape()),
                what="good reload to show")
            assert verdict(s) == "false"
            t1 = value(s, "netstat_listener_expected_file_reload_timestamp_seconds")
            assert t0 is not None and t1 is not None and t1 >= t0
        failed = [ln for ln in ex.log.splitlines() if "not reloaded" in ln]
        assert len(failed) == 1 and f"{path}:2:" in failed[0] and "99999" in failed[0]


def test_sources_agree(proc_tree: str) -> None:
    """netlink, /proc/net and psutil name the same listeners and owners (queues aside)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = str(srv.getsockname()[1])
    try:
        got = {}
        for src in ("netlink", "procfs", "psutil"):
            s = collect(make_exporter(source=src))
            got[src] = [(x["protocol"], x["address"], x["process"], x["user"])
                        for x in info(s, port=port)]
            assert value(s, "netstat_listener_accept_queue_length", port=port,
                         address="127.0.0.1", family="ipv4") == (None if src == "psutil" else 0)
        me = pid_stat.read_stat("/proc", os.getpid()).comm
        assert got["netlink"] == got["procfs"] == got["psutil"] == [
            ("tcp", "127.0.0.1", me, user(os.geteuid()))]
    finally:
        srv.close()

