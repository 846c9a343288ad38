"""Unusual but valid files are read, and a malformed one fails with its real cause and file.

Each case is a fixture that once gave a wrong answer: a /proc/<pid>/status line without a colon
left a listener unattributed (taken for an exited process); a /proc/net/unix without the Inode
column failed the whole sockets collector, TCP and UDP counts with it; a socket row whose
``tx_queue:rx_queue`` lacks its colon was reported as "expected at least 10 columns, got 10";
a huge number in a sysfs file failed with "int too large to convert to float" and no file.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import pytest
from helpers import FIXTURES, parse, run_cli, value

from exporter.listeners import owners
from exporter.procfs import ParseError, net_sockets, pid_status
from exporter.sysfs import net_class

LISTENERS = os.path.join(FIXTURES, "listeners")
PROC = os.path.join(FIXTURES, "proc")


@pytest.fixture
def proc_tree(tmp_path: Any) -> str:
    dst = str(tmp_path / "proc")
    shutil.copytree(os.path.join(LISTENERS, "proc"), dst, symlinks=True)
    return dst


def test_status_line_without_colon_is_read() -> None:
    path = os.path.join(LISTENERS, "status-line-without-colon")
    with open(path) as f:
        st = pid_status.parse_status(f.read(), path)
    assert (st.name, st.uids) == ("nginx", (33, 33, 33, 33))


def test_listener_of_a_process_with_such_a_status_is_attributed(proc_tree: str) -> None:
    shutil.copy(os.path.join(LISTENERS, "status-line-without-colon"),
                os.path.join(proc_tree, "201", "status"))
    got = owners.OwnerCache(proc_tree).owners({1002})[1002]
    assert sorted((o.pid, o.identity.name) for o in got) == [(200, "nginx"), (201, "nginx")]
    assert {o.identity.user for o in got if o.pid == 201} != {""}


def test_unparsable_status_costs_the_user_and_is_logged(proc_tree: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A status that really cannot be parsed is not an exited process: the owner stays, without
    its user, and the log says which file."""
    shutil.copy(os.path.join(LISTENERS, "broken", "status-bad-uid"),
                os.path.join(proc_tree, "201", "status"))
    with caplog.at_level(logging.WARNING, logger="exporter.listeners.owners"):
        got = owners.OwnerCache(proc_tree).owners({1002})[1002]
    worker = [o for o in got if o.pid == 201]
    assert len(worker) == 1 and worker[0].identity.name == "nginx"
    assert worker[0].identity.user == ""
    assert any(os.path.join(proc_tree, "201", "status") in str(r.__dict__.get("err", ""))
               for r in caplog.records), caplog.records


def test_socket_row_without_queue_colon_names_that_cause() -> None:
    path = os.path.join(LISTENERS, "broken", "tcp-queue-without-colon")
    with open(path) as f, pytest.raises(ParseError) as e:
        net_sockets.parse_socket_rows(f, path)
    assert str(e.value).startswith(f"{path}:2: expected tx_queue:rx_queue, got ")
    assert "columns" not in str(e.value)


def test_unix_table_without_inode_is_counted() -> None:
    """The same sockets as the live capture, less the Inode and Path columns: same counts."""
    live = net_sockets.read_unix(os.path.join(PROC, "live"))
    short = net_sockets.read_unix(os.path.join(PROC, "unix-no-inode"))
    assert live and short == live
    with pytest.raises(ParseError, match=r"net/unix:2: expected at least 6 columns, got 5"):
        net_sockets.parse_unix(["Num RefCount Protocol Flags Type St",
                                "0000: 00000003 00000000 00000000 0001"], "net/unix")


def test_sockets_collector_keeps_tcp_with_such_a_unix_table() -> None:
    r = run_cli(f"--path.procfs={os.path.join(PROC, 'unix-no-inode')}",
                "--collector.disable-defaults", "--collector.sockets",
                "--collector.sockets.source=procfs", "--web.disable-exporter-metrics", "dump")
    assert r.returncode == 0, r.stderr
    s = parse(r.stdout)
    assert value(s, "netstat_exporter_collector_success", collector="sockets") == 1.0
    rows = net_sockets.read_socket_rows(os.path.join(PROC, "unix-no-inode"), "tcp")
    assert rows is not None
    listening = sum(1 for r in rows if r.state == 10)
    assert value(s, "netstat_sockets", protocol="tcp", family="ipv4", state="listen") == \
        listening > 0
    unix = net_sockets.read_unix(os.path.join(PROC, "unix-no-inode"))
    assert unix is not None
    assert sum(v for n, _l, v in s if n == "netstat_sockets_unix") == sum(unix.values()) > 0


@pytest.mark.parametrize("text, message", [
    ("9" * 400, "number out of range (400 digits)"),  # past float range
    ("9" * 5000, "number out of range (5000 digits)"),  # past Python's int parsing limit
    ("18446744073709551616", "number out of range: 18446744073709551616"),  # 2**64
    ("12abc", "not an integer: '12abc'"),
])
def test_sysfs_bad_number_names_the_file(tmp_path: Any, text: str, message: str) -> None:
    dev = tmp_path / "class" / "net" / "eth0"
    dev.mkdir(parents=True)
    (dev / "operstate").write_text("up\n")
    (dev / "mtu").write_text(text + "\n")
    with pytest.raises(ParseError) as e:
        net_class.read_net_class(str(tmp_path), "eth0")
    assert str(e.value) == f"{dev / 'mtu'}:1: {message}"


def test_interfaces_collector_failure_names_the_sysfs_file(tmp_path: Any) -> None:
    sys_root = tmp_path / "sys"
    shutil.copytree(os.path.join(FIXTURES, "sys", "new"), sys_root)
    mtu = sys_root / "class" / "net" / "eth0" / "mtu"
    mtu.write_text("9" * 400 + "\n")
    r = run_cli(f"--path.procfs={os.path.join(PROC, 'new')}", f"--path.sysfs={sys_root}",
                "--collector.disable-defaults", "--collector.interfaces", "dump")
    assert r.returncode == 0, r.stderr
    assert value(parse(r.stdout), "netstat_exporter_collector_success",
                 collector="interfaces") == 0.0
    assert str(mtu) in r.stderr and "out of range" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
