"""What a new user meets in the first hour (issue 19): wrong paths refused, regex errors about the
user's own text, flags that do nothing said so, a `top` that fits its pane, `show`'s help and
exit statuses, log lines an operator can read. Real CLI subprocesses, a real server on loopback,
a real terminal (tmux) of a fixed size."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from typing import List

import pytest
from helpers import FIXTURES, ROOT, exporter_cmd, have, poll, run_cli, running_exporter
from nshelpers import NetNS
from tlshelpers import PKI, write_web_config

NEW = os.path.join(FIXTURES, "proc", "new")
LIVE = os.path.join(FIXTURES, "proc", "live")
SYS_NEW = os.path.join(FIXTURES, "sys", "new")


def one_error_line(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("netstat-exporter: error: "), r.stderr
    return lines[0]


# --- 2. wrong paths are refused, and a procfs tree is read, not this host ------------------------

@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_sysfs_that_is_not_a_sysfs_is_refused(kind: str, tmp_path: os.PathLike[str]) -> None:
    path = "/nonexistent" if kind == "missing" else str(tmp_path)
    r = run_cli(f"--path.sysfs={path}", "dump")
    assert r.returncode == 2, r.stderr
    line = one_error_line(r)
    assert f"--path.sysfs {path!r}" in line, line
    assert ("not a directory" if kind == "missing" else "not a sysfs") in line, line


def test_show_interfaces_with_a_wrong_sysfs_is_refused() -> None:
    r = run_cli(f"--path.procfs={NEW}", "--path.sysfs=/nonexistent", "show", "interfaces")
    assert r.returncode == 2, r.stderr
    assert "--path.sysfs" in one_error_line(r)


def _states_json(*args: str) -> dict:
    r = run_cli(*args, "show", "states", "-o", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_procfs_tree_is_read_not_this_hosts_netlink() -> None:
    """A --path.procfs that is a copy of a /proc tree: the sockets are those of the tree (read
    from its net/tcp...), not this host's over netlink, which knows nothing of the tree."""
    default = _states_json(f"--path.procfs={LIVE}")
    explicit = _states_json(f"--path.procfs={LIVE}", "--collector.sockets.source=procfs")
    assert default["source"] == LIVE
    assert default["sections"] == explicit["sections"]
    r = run_cli(f"--path.procfs={LIVE}", "--collector.disable-defaults", "--collector.sockets",
                "dump")
    assert r.returncode == 0, r.stderr
    sources = set(re.findall(r'netstat_sockets_source_info\{[^}]*source="(\w+)"', r.stdout))
    assert sources == {"procfs"}, sources


def test_procfs_tree_without_socket_tables_fails_the_collector(tmp_path: os.PathLike[str]) -> None:
    """A tree holding only net/snmp has no TCP table, which every kernel has: the sockets
    collector fails, and says so, rather than showing zeros."""
    os.makedirs(os.path.join(str(tmp_path), "net"))
    shutil.copy(os.path.join(NEW, "net", "snmp"), os.path.join(str(tmp_path), "net"))
    r = run_cli(f"--path.procfs={tmp_path}", "show", "states")
    assert r.returncode == 0, r.stderr
    assert "warning: collector sockets failed" in r.stdout, r.stdout
    assert "net/tcp: missing" in r.stderr, r.stderr


def test_live_procfs_still_reads_netlink() -> None:
    # a namespace of its own: the host's table may pass the size from which auto iterates
    with NetNS("first") as ns:
        r = run_cli("--collector.disable-defaults", "--collector.sockets", "dump",
                    prefix=ns.cmd())
    assert r.returncode == 0, r.stderr
    assert re.search(r'netstat_sockets_source_info\{protocol="tcp",source="netlink"\}', r.stdout)


def test_netlink_asked_for_on_a_procfs_tree_is_refused() -> None:
    r = run_cli(f"--path.procfs={LIVE}", "--collector.sockets.source=netlink", "dump")
    assert r.returncode == 2, r.stderr
    line = one_error_line(r)
    assert "socket source 'netlink'" in line and LIVE in line, line


# --- 3. regex errors quote the user's own pattern and position -----------------------------------

@pytest.mark.parametrize("flag,pattern,position", [
    ("--collector.protocols.fields", "Tcp_((", 5),
    ("--collector.interfaces.device-include", "[a-", 0),
    ("--collector.interfaces.device-exclude", "eth0|(?P<x", 9),
])
def test_regex_error_points_into_the_users_text(flag: str, pattern: str, position: int) -> None:
    r = run_cli(f"{flag}={pattern}", "dump")
    assert r.returncode == 2, r.stderr
    line = one_error_line(r)
    assert f"{flag} {pattern!r}" in line, line
    assert f"at position {position}" in line, line


def expected_file_error(tmp_path: os.PathLike[str], text: str) -> str:
    """The one line an exporter given this expected-listeners file stops with."""
    path = os.path.join(str(tmp_path), "expected.yaml")
    with open(path, "w") as f:
        f.write(text)
    r = run_cli(f"--collector.listeners.expected-file={path}", "dump")
    assert r.returncode == 2, r.stderr
    return one_error_line(r)


def test_expected_listener_regex_error_points_into_the_users_text(
        tmp_path: os.PathLike[str]) -> None:
    line = expected_file_error(
        tmp_path, 'listeners:\n  - port: 22\n    protocol: tcp\n    process: "re:[unclosed"\n')
    assert "'[unclosed'" in line and "at position 0" in line, line
    assert "\\Z" not in line, line


def test_leading_inline_flags_are_accepted() -> None:
    """(?i) at the start of a pattern means what it means in Go's and Python's regex syntax."""
    r = run_cli(f"--path.procfs={NEW}", "--collector.disable-defaults", "--collector.interfaces",
                f"--path.sysfs={SYS_NEW}", "--collector.interfaces.device-include=(?i)ETH0",
                "dump")
    assert r.returncode == 0, r.stderr
    devices = set(re.findall(r'netstat_interface_receive_bytes_total\{device="([^"]+)"', r.stdout))
    assert devices == {"eth0"}, devices


# --- 4. flags that do nothing are said to ----------------------------------------------------------

def test_collector_flag_without_its_collector_warns() -> None:
    r = run_cli("--collector.disable-defaults", "--collector.limits", "--collector.netns.sockets",
                "dump")
    assert r.returncode == 0, r.stderr
    warn = [ln for ln in r.stderr.splitlines() if "level=warn" in ln]
    assert len(warn) == 1, r.stderr
    assert "--collector.netns.sockets" in warn[0] and "--collector.netns" in warn[0], warn


def test_no_collector_enabled_warns() -> None:
    r = run_cli("--collector.disable-defaults", "dump")
    assert r.returncode == 0, r.stderr
    warn = [ln for ln in r.stderr.splitlines() if "level=warn" in ln]
    assert len(warn) == 1 and "no collector" in warn[0], r.stderr


def test_default_run_warns_of_nothing() -> None:
    r = run_cli(f"--path.procfs={NEW}", f"--path.sysfs={SYS_NEW}", "dump")
    assert r.returncode == 0, r.stderr
    assert "level=warn" not in r.stderr, r.stderr


@pytest.mark.parametrize("query,says", [
    ("collect=ports", "collect[]"),
    ("exclude=ports", "exclude[]"),
    ("collect[]=", "empty"),
    ("exclude[]=", "empty"),
])
def test_malformed_collect_parameters_are_400(query: str, says: str) -> None:
    with running_exporter("--collector.disable-defaults", "--collector.ports",
                          "--collector.limits") as ex:
        status, _, body = ex.get(f"/metrics?{query}")
        assert status == 400, (query, status, body[:200])
        assert says in body.decode(), body
        assert ex.get("/metrics?collect[]=ports")[0] == 200


# --- 5. an empty web config file is plain HTTP, and the log says so at warn ---------------------

def test_empty_web_config_warns(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(str(tmp_path), "web.yml")
    open(path, "w").close()
    with running_exporter("--collector.disable-defaults", "--collector.limits",
                          f"--web.config.file={path}") as ex:
        assert ex.get("/metrics")[0] == 200
    warn = [ln for ln in ex.log.splitlines() if "level=warn" in ln]
    assert len(warn) == 1, ex.log
    assert "empty" in warn[0] and "plain HTTP" in warn[0] and path in warn[0], warn


# --- 6. show counters --url says when it shows the exporter's default set only ------------------

def test_show_counters_url_says_it_is_the_default_set(tmp_path: os.PathLike[str]) -> None:
    with running_exporter("--collector.disable-defaults", "--collector.protocols") as ex:
        r = run_cli("show", "counters", "--url", f"127.0.0.1:{ex.port}")
        history = os.path.join(str(tmp_path), "history")
        changed = run_cli("show", "counters", "--changed", "--history", history,
                          "--url", f"127.0.0.1:{ex.port}")
    assert r.returncode == 0, r.stderr
    header = r.stdout.splitlines()[1]
    assert "default set" in header and "--collector.protocols.fields" in header, r.stdout
    assert changed.returncode == 0, changed.stderr
    assert "default set" in changed.stdout.splitlines()[1], changed.stdout
    local = run_cli(f"--path.procfs={NEW}", "show", "counters")
    assert "default set" not in local.stdout, local.stdout


# --- 7. top fits the pane it is given -----------------------------------------------------------

def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True,
                          timeout=20).stdout


@pytest.mark.skipif(not have("tmux"), reason="tmux is installed by scripts/test-all")
def test_top_fits_a_small_pane() -> None:
    session = f"netstat-top-{os.getpid()}"
    cmd = " ".join(["env", f"PYTHONPATH={ROOT}", *exporter_cmd(
        f"--path.procfs={NEW}", f"--path.sysfs={SYS_NEW}", "--collector.ports.source=procfs",
        "--collector.sockets.source=procfs", "--collector.listeners.source=procfs",
        "top", "--interval", "3600")])
    _tmux("new-session", "-d", "-s", session, "-x", "60", "-y", "20", "-c", ROOT, cmd)
    try:
        seen: List[str] = []

        def settled() -> bool:
            text = _tmux("capture-pane", "-p", "-t", session)
            seen.append(text)
            return "screen 1" in text and len(seen) > 1 and seen[-2] == text

        poll(settled, timeout=30, interval=0.2, what="top's first screen in a 60x20 pane")
        lines = seen[-1].rstrip("\n").split("\n")
        _tmux("send-keys", "-t", session, "q")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, timeout=20)
    assert len(lines) <= 20 and all(len(ln) <= 60 for ln in lines), lines
    header = lines[0]
    assert "screen 1" in header and header.endswith("proc/new"), header
    text = "\n".join(lines)
    for title in ("TCP states", "Fullest accept queues", "Counters that moved most",
                  "Interface rates", "Ephemeral ports"):
        assert title in text, text
    # 27 lines do not fit in 19: what was left out is said.
    assert re.search(r"\d+ more", text), text


def test_top_fit_never_exceeds_the_height_and_names_what_is_left_out() -> None:
    from exporter.show.top import fit

    blocks = [("A", ["A", "head", "a1", "a2", "a3"]), ("B", ["B", "head", "b1"]),
              ("C", ["C", "  (none)"]), ("D", ["D", "head", "d1", "d2", "d3", "d4"])]
    full = sum(len(b) + 1 for _, b in blocks)
    assert fit(blocks, full) == fit(blocks, None)
    for height in range(4, full):
        out = fit(blocks, height)
        assert len(out) <= height, (height, out)
        titles = [ln for ln in out if ln and ln[0] in "ABCD"]
        left_out = out[-1].split(": ", 1)[1].split(", ") if out[-1].startswith("not shown") \
            else []
        # every section is either there, under its own title, or named as left out
        assert [t.split(" ")[0] for t in titles] + left_out == ["A", "B", "C", "D"], out
        shown_rows = sum(1 for ln in out if ln and ln[0] in "abd")
        more = sum(int(n) for n in re.findall(r"\((\d+) more not shown\)", "\n".join(out)))
        hidden = sum(len(b) - 2 for t, b in blocks if t in left_out and b[1] == "head")
        assert shown_rows + more + hidden == 8, (height, out)


def test_top_header_fits_the_width() -> None:
    from exporter.show.reading import parse
    from exporter.show.top import Screen

    snap = parse("", source="https://exporter.example.com:9816/metrics", wall=0.0)
    header = Screen().render(snap, 5, 60).splitlines()[0]
    assert len(header) <= 60 and header.endswith("…le.com:9816/metrics"), header
    assert "screen 1" in header, header


# --- 8. show's help, and its exit statuses ------------------------------------------------------

SERVER_ONLY = ("--web.listen-address", "--web.telemetry-path", "--web.max-requests",
               "--web.config.file", "--web.read-header-timeout",
               "--web.disable-exporter-metrics",
               # a view turns on the collectors it needs: the switches would do nothing
               "--collector.disable-defaults", "--collector.sockets /", "--collector.routes /")


@pytest.mark.parametrize("args", [("show", "--help"), ("show", "states", "--help"),
                                  ("show", "counters", "--help"), ("top", "--help")])
def test_show_help_has_no_server_flags(args: tuple) -> None:
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    for flag in SERVER_ONLY:
        assert flag not in r.stdout, (flag, args)
    assert "--path.procfs" in r.stdout


def test_bare_show_is_a_usage_error() -> None:
    r = run_cli("show")
    assert r.returncode == 2, r.stdout
    line = one_error_line(r)
    for view in ("states", "listeners", "counters", "interfaces", "routes", "ports"):
        assert view in line, line


def test_top_count_zero_is_refused() -> None:
    r = run_cli("top", "--count", "0")
    assert r.returncode == 2, r.stderr
    assert "--count" in one_error_line(r)


# --- 10. logs ------------------------------------------------------------------------------------

def test_listening_log_brackets_ipv6_and_booleans_match_json() -> None:
    with running_exporter("--collector.disable-defaults", "--collector.limits",
                          host="::1") as ex:
        assert ex.get("/-/healthy")[0] == 200
    line = next(ln for ln in ex.log.splitlines() if "msg=listening" in ln)
    assert f"address=[::1]:{ex.port}" in line and "tls=false" in line, line


def test_logfmt_and_json_spell_booleans_alike() -> None:
    import logging

    from exporter.logs import JSONFormatter, LogfmtFormatter

    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    rec.tls, rec.auth = False, True
    assert "tls=false auth=true" in LogfmtFormatter().format(rec)
    assert json.loads(JSONFormatter().format(rec))["tls"] is False


def test_sigterm_is_logged_and_exits_zero() -> None:
    with running_exporter("--collector.disable-defaults", "--collector.limits") as ex:
        proc = ex.proc
    assert proc.returncode == 0, ex.log
    last = ex.log.strip().splitlines()[-1]
    assert "level=info" in last and "SIGTERM" in last, ex.log


def test_help_shows_boolean_defaults_as_on_or_off() -> None:
    r = run_cli("--help")
    flat = " ".join(r.stdout.split())
    assert "default: no-" not in flat and "default: collector." not in flat, flat
    m = re.search(r"--web\.disable-exporter-metrics(.*?)\[", flat)
    assert m and m.group(1).endswith("Default: off. "), m and m.group(1)
    m = re.search(r"--collector\.listeners\.connections(.*?)\[", flat)
    assert m and m.group(1).endswith("Default: on. "), m and m.group(1)


# --- 11. smaller --------------------------------------------------------------------------------


def test_swapped_cert_and_key_name_the_file(pki: PKI) -> None:
    cfg = write_web_config(os.path.join(pki.dir, "swapped.yml"), [
        "tls_server_config:", "  cert_file: server.key", "  key_file: server.crt"])
    r = run_cli("--web.listen-address=127.0.0.1:0", f"--web.config.file={cfg}")
    assert r.returncode == 2, r.stderr
    line = one_error_line(r)
    assert "PEM lib" not in line, line
    assert "cert_file" in line and "server.key" in line and "private key" in line, line
    assert "swapped" in line, line


def test_show_listeners_without_expected_file_has_no_verdict_title() -> None:
    r = run_cli(f"--path.procfs={LIVE}", "--collector.listeners.source=procfs",
                "show", "listeners")
    assert r.returncode == 0, r.stderr
    assert "unexpected" not in r.stdout, r.stdout
    assert "EXPECTED" not in r.stdout, r.stdout


def test_expected_file_that_is_a_list_names_the_listeners_key(tmp_path: os.PathLike[str]) -> None:
    line = expected_file_error(tmp_path, "- port: 22\n  protocol: tcp\n")
    assert "listeners:" in line and "a list" in line, line


def test_bad_number_in_environment_is_plain() -> None:
    r = run_cli("dump", env=dict(os.environ, NETSTAT_EXPORTER_WEB_MAX_REQUESTS="abc"))
    assert r.returncode == 2, r.stderr
    line = one_error_line(r)
    assert "NETSTAT_EXPORTER_WEB_MAX_REQUESTS" in line and "'abc'" in line, line
    assert line.endswith("'abc' is not a valid integer."), line
