"""The command line, run as a user runs it: every bad input ends in one line and a non-zero exit."""

from __future__ import annotations

import os
import socket
import tempfile

import pytest
from helpers import FIXTURES, parse, run_cli, value

from exporter import __version__

LIVE = os.path.join(FIXTURES, "proc", "live")


def one_line_error(r, code: int, *needles: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("netstat-exporter: error: "), lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_version() -> None:
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"netstat-exporter {__version__}"


def test_help_lists_collectors_and_env_vars() -> None:
    r = run_cli("--help")
    assert r.returncode == 0
    assert "--collector.sockets / --no-collector.sockets" in r.stdout
    assert "NETSTAT_EXPORTER_WEB_LISTEN_ADDRESS" in r.stdout


@pytest.mark.parametrize("flag", ["--collector.bogus", "--no-collector.bogus"])
def test_unknown_collector(flag: str) -> None:
    one_line_error(run_cli(flag, "dump"), 2, "unknown collector 'bogus'", "known: sockets")


@pytest.mark.parametrize("addr, needle", [
    ("nonsense", "malformed --web.listen-address 'nonsense'"),
    ("127.0.0.1:99999", "port out of range"),
    ("[::1:9816", "malformed"),
])
def test_malformed_listen_address(addr: str, needle: str) -> None:
    one_line_error(run_cli(f"--web.listen-address={addr}"), 2, needle)


def test_port_in_use() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        one_line_error(run_cli(f"--web.listen-address=127.0.0.1:{port}"), 1,
                       f"cannot listen on 127.0.0.1:{port}", "Address already in use")


def test_procfs_missing() -> None:
    one_line_error(run_cli("--path.procfs=/nonexistent/proc", "dump"), 2,
                   "--path.procfs '/nonexistent/proc' is not a directory")


@pytest.mark.skipif(os.geteuid() != 0, reason="drops to nobody: run as root")
def test_procfs_unreadable() -> None:
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o700)
        r = run_cli("--path.procfs", d, "dump", prefix=["setpriv", "--reuid=nobody",
                                                        "--regid=nogroup", "--clear-groups"])
        one_line_error(r, 2, f"--path.procfs {d!r} is not readable")


@pytest.mark.parametrize("args, needle", [
    (["--log.level=loud"], "'loud' is not one of"),
    (["--log.format=xml"], "'xml' is not one of"),
    (["--web.max-requests=-1"], "-1 is not in the range"),
    (["--web.telemetry-path=metrics"], "must start with '/'"),
    (["--no-such-flag"], "--no-such-flag"),
    (["--collector.listeners.zero-states=established,syn_sent"],
     "'syn_sent' is not a state a connection to a listening port can be in"),
])
def test_bad_flag_values(args, needle: str) -> None:
    one_line_error(run_cli(*args, "dump"), 2, needle)


def test_bad_value_from_environment() -> None:
    r = run_cli("dump", env=dict(os.environ, NETSTAT_EXPORTER_WEB_LISTEN_ADDRESS="x"))
    # dump does not listen, but the address is still validated
    one_line_error(r, 2, "malformed --web.listen-address 'x'")


def test_dump_prints_one_scrape_and_flags_work_on_both_sides() -> None:
    r = run_cli("--path.procfs", LIVE, "dump", "--collector.sockets.source=procfs")
    assert r.returncode == 0, r.stderr
    s = parse(r.stdout)
    assert value(s, "netstat_sockets", protocol="tcp", family="ipv4", state="time_wait") == 4
    assert value(s, "netstat_sockets_source_info", protocol="tcp", source="procfs") == 1
    assert value(s, "netstat_exporter_collector_success", collector="sockets") == 1


def test_environment_variables_set_flags() -> None:
    env = dict(os.environ, NETSTAT_EXPORTER_COLLECTOR_SOCKETS="false")
    r = run_cli("dump", env=env)
    assert r.returncode == 0, r.stderr
    assert "netstat_sockets{" not in r.stdout
    env = dict(os.environ, NETSTAT_EXPORTER_PATH_PROCFS=LIVE,
               NETSTAT_EXPORTER_COLLECTOR_SOCKETS_SOURCE="procfs")
    s = parse(run_cli("dump", env=env).stdout)
    assert value(s, "netstat_sockstat_tcp_time_wait_sockets") == 4


def test_disable_defaults() -> None:
    r = run_cli("--collector.disable-defaults", "dump")
    assert r.returncode == 0
    assert "netstat_exporter_collector_success{" not in r.stdout
    assert "netstat_exporter_build_info{" in r.stdout
    r = run_cli("--collector.disable-defaults", "--collector.sockets", "dump",
                "--web.disable-exporter-metrics")
    assert 'netstat_exporter_collector_success{collector="sockets"} 1.0' in r.stdout
    assert "process_" not in r.stdout and "build_info" not in r.stdout


def test_python_dash_m_and_console_script_agree() -> None:
    import shutil
    import subprocess
    import sys

    script = shutil.which("netstat-exporter", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.fail("console script netstat-exporter not installed next to the interpreter "
                    "(pip install -e . installs it)")
    r = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert r.stdout == run_cli("--version").stdout
