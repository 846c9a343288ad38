"""Network namespaces for live tests: created with a unique name, always deleted."""

from __future__ import annotations

import itertools
import os
import select
import subprocess
import sys
from contextlib import contextmanager
from typing import Dict, Iterator, List

import pytest
from helpers import ROOT, Sample, parse

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="creates network namespaces; scripts/test-all runs as root")
_seq = itertools.count()


@contextmanager
def netns(tag: str) -> Iterator[str]:
    """A fresh network namespace ``nse-<tag>-<pid>-<n>`` with lo up; deleted on exit."""
    name = f"nse-{tag}-{os.getpid()}-{next(_seq)}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        run(name, "ip", "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], timeout=30)


def run(ns: str, *cmd: str, input: str = "") -> str:  # noqa: A002 - subprocess's name
    r = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                       input=input, timeout=60)
    assert r.returncode == 0, f"{cmd}: {r.stderr}"
    return r.stdout


def set_sysctl(ns: str, values: Dict[str, str]) -> None:
    """Write /proc/sys values inside ``ns``: ``{"net/ipv4/tcp_fin_timeout": "17"}``."""
    for path, v in values.items():
        run(ns, "sh", "-c", f'echo "$1" > /proc/sys/{path}', "sh", v)


def read_sysctl(ns: str, path: str) -> str:
    """A /proc/sys value inside ``ns``, or "" when the file is not shown there."""
    return run(ns, "sh", "-c", f"cat /proc/sys/{path} 2>/dev/null || true").strip()


def sh(*cmds: List[str]) -> None:
    for c in cmds:
        r = subprocess.run(c, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"{c}: {r.stderr}"


def dump(ns: str, *args: str) -> List[Sample]:
    """One scrape of the real exporter run inside ``ns``."""
    return parse(dump_text(ns, *args))


def dump_text(ns: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "exporter",
                        "--web.disable-exporter-metrics", *args, "dump"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    assert "level=error" not in r.stderr, r.stderr
    return r.stdout


class Holder:
    """A Python process inside a namespace that runs ``script`` (which must print one line of
    JSON when ready), keeps its sockets open, and exits when :meth:`close` closes its stdin."""

    def __init__(self, ns: str, script: str) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", script],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        # Bounded wait for the ready line.
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        self.ready = self.proc.stdout.readline() if ready else ""
        if not self.ready:
            self.close()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"holder not ready: {err}")

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
