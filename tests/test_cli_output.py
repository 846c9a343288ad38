"""Standard output that refuses what the command prints: one line on stderr, non-zero exit.

``netstat-exporter dump > /dev/full`` (and ``--help``, ``--version``) used to end in a
25-line traceback; so did a closed pipe or a closed standard output.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any, List

import pytest
from helpers import ROOT, exporter_cmd

DUMP = ["--collector.disable-defaults", "--collector.protocols", "dump"]


def run(args: List[str], **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(exporter_cmd(*args), stderr=subprocess.PIPE, text=True, timeout=60,
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), **kw)


def one_line_error(r: subprocess.CompletedProcess, cause: str) -> None:
    assert r.returncode != 0
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("netstat-exporter: error: ") and cause in lines[0], lines[0]


@pytest.mark.parametrize("args", [DUMP, ["--help"], ["--version"], ["dump", "--help"]],
                         ids=["dump", "help", "version", "dump-help"])
def test_full_disk(args: List[str]) -> None:
    with open("/dev/full", "wb") as full:
        r = run(args, stdout=full)
    one_line_error(r, "No space left on device")


def test_closed_pipe() -> None:
    """The reader has gone before the scrape is written."""
    rd, wr = os.pipe()
    os.close(rd)
    try:
        r = run(DUMP, stdout=wr)
    finally:
        os.close(wr)
    one_line_error(r, "Broken pipe")


def test_closed_stdout() -> None:
    r = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", *exporter_cmd(*DUMP)],
                       stderr=subprocess.PIPE, text=True, timeout=60, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    one_line_error(r, "standard output is closed")


def test_writable_stdout_still_works() -> None:
    r = run(DUMP, stdout=subprocess.PIPE)
    assert r.returncode == 0 and r.stderr == ""
    assert "netstat_tcp_in_segs_total" in r.stdout
