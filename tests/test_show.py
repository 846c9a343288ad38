"""``show``: every view's plain text against a checked-in golden file, from the captured /proc
and /sys trees; its JSON against its text; widths, pipes, --changed and the history file.

Regenerate the goldens after an intended change with ``UPDATE_GOLDEN=1 pytest
tests/test_show.py`` and review the diff. The listeners golden names services from this host's
services database (/etc/services), as the collector does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from helpers import FIXTURES, run_cli
from showtables import compare, normalise

UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
PROC, SYS = "tests/fixtures/proc", "tests/fixtures/sys"  # relative: goldens name the source
EXPECTED = "tests/fixtures/show/expected.yaml"

# (golden name, flags before "show", view and its flags)
CASES: List[Tuple[str, Tuple[str, ...], Tuple[str, ...]]] = [
    ("states-live", (f"--path.procfs={PROC}/live", "--collector.sockets.source=procfs"),
     ("states",)),
    ("states-ipv6-disabled", (f"--path.procfs={PROC}/sockets-ipv6-disabled",
                              "--collector.sockets.source=procfs"), ("states",)),
    ("listeners-live", (f"--path.procfs={PROC}/live", "--collector.listeners.source=procfs",
                        f"--collector.listeners.expected-file={EXPECTED}"), ("listeners",)),
    ("counters-new", (f"--path.procfs={PROC}/new",), ("counters",)),
    ("counters-old", (f"--path.procfs={PROC}/old",), ("counters",)),
    ("counters-ipv6-disabled", (f"--path.procfs={PROC}/ipv6-disabled",), ("counters",)),
    ("counters-describe", (f"--path.procfs={PROC}/new",
                           "--collector.protocols.fields=Tcp_.*|TcpExt_Listen.*"),
     ("counters", "--describe")),
    ("counters-malformed", (f"--path.procfs={PROC}/malformed",), ("counters",)),
    ("interfaces-new", (f"--path.procfs={PROC}/new", f"--path.sysfs={SYS}/new"),
     ("interfaces",)),
    ("routes-new", (f"--path.procfs={PROC}/new",), ("routes",)),
    ("routes-counted", (f"--path.procfs={PROC}/new", "--no-collector.routes.table"),
     ("routes",)),
    ("ports-new", (f"--path.procfs={PROC}/new", "--collector.ports.source=procfs"), ("ports",)),
]
IDS = [c[0] for c in CASES]


def show(before: Tuple[str, ...], view: Tuple[str, ...], *extra: str) -> Tuple[str, str]:
    r = run_cli(*before, "show", *view, *extra)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return r.stdout, r.stderr


@pytest.mark.parametrize("name,before,view", CASES, ids=IDS)
def test_golden(name: str, before: Tuple[str, ...], view: Tuple[str, ...]) -> None:
    out, _ = show(before, view)
    # In a pipe: no escape codes, 80 columns.
    assert "\x1b" not in out
    assert not [ln for ln in out.splitlines() if len(ln) > 80]
    body = normalise(out)
    path = os.path.join(FIXTURES, "show", f"{name}.txt")
    if UPDATE:
        with open(path, "w") as f:
            f.write(body)
    with open(path) as f:
        assert body == f.read(), f"output differs from {path}; UPDATE_GOLDEN=1 regenerates it"


@pytest.mark.parametrize("name,before,view", CASES, ids=IDS)
def test_json_has_the_numbers_of_the_table(name: str, before: Tuple[str, ...],
                                           view: Tuple[str, ...]) -> None:
    text, _ = show(before, view)
    doc = json.loads(show(before, view, "--output=json")[0])
    assert doc["view"] == view[0]
    assert compare(text, doc) > 0 or name == "counters-malformed"


def test_flags_may_stand_anywhere() -> None:
    """As with dump: before show, between show and the view, after the view."""
    a = show((f"--path.procfs={PROC}/new",), ("routes",))[0]
    b = run_cli("show", f"--path.procfs={PROC}/new", "routes")
    c = run_cli("show", "routes", f"--path.procfs={PROC}/new")
    assert normalise(a) == normalise(b.stdout) == normalise(c.stdout)
    assert "0.0.0.0/0" in a


def test_a_failed_collector_is_said() -> None:
    out, err = show((f"--path.procfs={PROC}/malformed",), ("counters",))
    assert "warning: collector protocols failed" in out
    doc = json.loads(show((f"--path.procfs={PROC}/malformed",), ("counters", "-o", "json"))[0])
    assert doc["failed_collectors"] == ["protocols"]
    assert "net/snmp:8: Tcp has 15 fields but 13 values" in err


def _bump(root: str, group: str, field: str, by: int) -> int:
    """Add ``by`` to one field of a /proc/net/snmp copy; returns the new value."""
    path = os.path.join(root, "net", "snmp")
    with open(path) as f:
        lines = f.read().splitlines()
    for i in range(0, len(lines) - 1, 2):
        head, vals = lines[i].split(), lines[i + 1].split()
        if head[0] == f"{group}:":
            j = head.index(field)
            vals[j] = str(int(vals[j]) + by)
            lines[i + 1] = " ".join(vals)
            new = int(vals[j])
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return new


def _changed(root: str, history: str, *extra: str) -> Dict[str, Dict[str, float]]:
    r = run_cli(f"--path.procfs={root}", "show", "counters", "--changed",
                f"--history={history}", "-o", "json", *extra)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    return {f"{g}_{row['field']}": row for g, sec in doc["sections"].items()
            for row in sec["rows"]}


def test_changed_shows_only_what_moved_since_the_last_look(tmp_path: Path) -> None:
    root = os.path.join(str(tmp_path), "proc")
    shutil.copytree(os.path.join(FIXTURES, "proc", "new"), root)
    history = os.path.join(str(tmp_path), "history.json")
    first = _changed(root, history)
    # No earlier look: like nstat, every counter that is not zero, changed since boot.
    assert first["Tcp_ActiveOpens"]["delta"] == first["Tcp_ActiveOpens"]["value"] > 0
    assert all(row["delta"] for row in first.values())
    assert os.path.exists(history)

    assert _changed(root, history) == {}  # nothing moved

    opens = _bump(root, "Tcp", "ActiveOpens", 7)
    segs = _bump(root, "Tcp", "InSegs", 1000)
    moved = _changed(root, history)
    assert set(moved) == {"Tcp_ActiveOpens", "Tcp_InSegs"}
    assert moved["Tcp_ActiveOpens"]["delta"] == 7 and moved["Tcp_ActiveOpens"]["value"] == opens
    assert moved["Tcp_InSegs"]["delta"] == 1000 and moved["Tcp_InSegs"]["value"] == segs
    assert moved["Tcp_InSegs"]["rate"] > 0

    # A counter that went down was reset (reboot): its whole value is the change.
    _bump(root, "Tcp", "ActiveOpens", -opens + 3)
    reset = _changed(root, history)
    assert reset["Tcp_ActiveOpens"]["delta"] == 3


def test_changed_text_and_describe(tmp_path: Path) -> None:
    history = os.path.join(str(tmp_path), "h.json")
    r = run_cli(f"--path.procfs={PROC}/new", "show", "counters", "--changed", "--describe",
                f"--history={history}")
    assert r.returncode == 0, r.stderr
    assert "first look: changes since the counters started (boot)" in r.stdout
    assert "Connections opened actively" in r.stdout
    assert all(len(ln) <= 80 for ln in r.stdout.splitlines())


def test_unreadable_history_is_one_line(tmp_path: Path) -> None:
    history = os.path.join(str(tmp_path), "h.json")
    with open(history, "w") as f:
        f.write("{not json")
    r = run_cli(f"--path.procfs={PROC}/new", "show", "counters", "--changed",
                f"--history={history}")
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "history file" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_show_help_lists_the_views() -> None:
    r = run_cli("show", "--help")
    assert r.returncode == 0, r.stderr
    for view in ("states", "listeners", "counters", "interfaces", "routes", "ports"):
        assert re.search(rf"^  {view} ", r.stdout, re.M), r.stdout
    bad = run_cli("show", "bogus")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr


def test_long_names_are_shortened_never_numbers() -> None:
    from exporter.show.table import Column, Section, render_section

    exe = "/opt/vendor/very/long/installation/path/bin/some-daemon-with-a-long-name"
    sec = Section("x", "X", [Column("process", "PROGRAM", shrink=True),
                             Column("n", "N", numeric=True),
                             Column("exe", "EXECUTABLE", shrink=True, keep_end=True)],
                  [{"process": "a-process-name-that-is-long", "n": 12345678901234.0, "exe": exe}])
    lines = render_section(sec, width=60)
    assert all(len(ln) <= 60 for ln in lines), lines
    row = lines[2]
    assert "12345678901234" in row  # whole
    process, _, path = row.split("  ")[0], None, row.split("  ")[-1]
    assert path.startswith("…") and exe.endswith(path[1:])  # a path keeps its end
    assert process.endswith("…") and "a-process-name-that-is-long".startswith(process[:-1])


def test_wide_terminal_or_width_flag() -> None:
    r = run_cli(f"--path.procfs={PROC}/new", "show", "ports", "--width=200")
    assert r.returncode == 0, r.stderr
    r2 = run_cli(f"--path.procfs={PROC}/new", "show", "ports", "--width=20")
    assert r2.returncode == 2 and r2.stderr.count("\n") == 1, r2.stderr


def test_numbers_print_whole_or_to_the_millisecond() -> None:
    from exporter.show.table import number

    assert [number(x) for x in (200.0, 0.2, 0.1234, 120.0, -1.0, 2.5e15)] == [
        "200", "0.2", "0.123", "120", "-1", "2500000000000000"]
