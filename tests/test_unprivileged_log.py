"""Run without privilege, the exporter says once, at warn, how many listeners it could not
attribute and which capabilities would fix it; with them (or as root) it says nothing."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys
from typing import List

import pytest
from helpers import ROOT, running_exporter, value
from nshelpers import NetNS, needs_root

pytestmark = needs_root


def _root_listeners() -> List[socket.socket]:
    """Two listeners held by this (root) process, in the namespace of the calling thread."""
    out = []
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        s.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            s.listen(4)
        out.append(s)
    return out


def warnings(stderr: str) -> List[str]:
    return [line for line in stderr.splitlines() if "level=warn" in line
            and "cannot be attributed" in line]


def test_unprivileged_says_it_once_with_count_and_fix() -> None:
    with NetNS("unpriv-log") as ns:
        socks = ns.call(_root_listeners)
        try:
            with running_exporter("--collector.disable-defaults", "--collector.listeners",
                                  netns=ns.name, user="nobody") as ex:
                first = ex.scrape()
                ex.scrape()
                ex.scrape()
        finally:
            for s in socks:
                s.close()
    lines = warnings(ex.log)
    unattributed = sum(value(first, "netstat_listener_unattributed", protocol=p) or 0
                       for p in ("tcp", "udp"))
    assert unattributed == 2
    assert len(lines) == 1, lines
    assert "unattributed=2" in lines[0]
    assert "missing_capabilities=CAP_DAC_READ_SEARCH,CAP_SYS_PTRACE" in lines[0]
    assert "AmbientCapabilities=CAP_DAC_READ_SEARCH CAP_SYS_PTRACE" in lines[0]


@pytest.mark.parametrize("caps", ["+sys_ptrace,+dac_read_search", None],
                         ids=["nobody-with-both-capabilities", "root"])
def test_privileged_says_nothing(caps: str) -> None:
    with NetNS("priv-log") as ns:
        socks = ns.call(_root_listeners)
        try:
            cmd = [sys.executable, "-m", "exporter", "--collector.disable-defaults",
                   "--collector.listeners", "dump"]
            if caps:
                gid = pwd.getpwnam("nobody").pw_gid
                cmd = ["setpriv", "--reuid=nobody", f"--regid={gid}", "--clear-groups",
                       f"--inh-caps={caps}", f"--ambient-caps={caps}", *cmd]
            r = subprocess.run(["ip", "netns", "exec", ns.name, *cmd], capture_output=True,
                               text=True, cwd=ROOT, timeout=60,
                               env=dict(os.environ, PYTHONPATH=ROOT))
        finally:
            for s in socks:
                s.close()
    assert r.returncode == 0, r.stderr
    assert warnings(r.stderr) == [], r.stderr
    assert "netstat_listener_unattributed" in r.stdout
