"""Network namespaces made by a test: extra, isolated hosts where socket counts are exact.

Two styles, both deleting what they create: ``netns(tag)`` (a context manager yielding the name)
with the module functions ``run``/``dump``/``Holder`` that act through ``ip netns exec``, and
``NetNS``, which creates ``ip netns add`` namespaces with unique names and deletes them (killing what
runs inside) on exit. ``ns.call(fn)`` runs ``fn`` in a thread that has entered the namespace with
setns(2), so sockets the function creates live in that namespace while the test keeps them.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import select
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, TypeVar

import pytest
from helpers import ROOT, Sample, close_pipes, parse

T = TypeVar("T")
# ss's TCP state names and this exporter's (bound-but-idle sockets, which ss -B shows as UNCONN,
# are state close), for tests that take `ss -tan` as the oracle.
SS_STATE = {
    "ESTAB": "established", "SYN-SENT": "syn_sent", "SYN-RECV": "syn_recv",
    "FIN-WAIT-1": "fin_wait1", "FIN-WAIT-2": "fin_wait2", "TIME-WAIT": "time_wait",
    "UNCONN": "close", "CLOSE-WAIT": "close_wait", "LAST-ACK": "last_ack", "LISTEN": "listen",
    "CLOSING": "closing",
}
CLONE_NEWNET = 0x40000000
_counter = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns({path}): {os.strerror(e)}")
    finally:
        os.close(fd)


def call_in(name: str, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """Run ``fn`` in a thread inside the named namespace and return its result."""
    box: dict = {}

    def target() -> None:
        try:
            _setns(f"/var/run/netns/{name}")
            box["v"] = fn(*args, **kw)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            box["e"] = e

    t = threading.Thread(target=target, name=f"in-{name}", daemon=True)
    t.start()
    t.join(timeout=120)
    if t.is_alive():
        raise TimeoutError(f"call in {name} did not finish")
    if "e" in box:
        raise box["e"]
    return box["v"]  # type: ignore[no-any-return]


class NetNS:
    def __init__(self, tag: str = "t") -> None:
        self.name = f"nse-{tag}-{os.getpid()}-{next(_counter)}"

    def __enter__(self) -> NetNS:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.ip("link", "set", "lo", "up")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        r = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        for pid in r.stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    @property
    def path(self) -> str:
        return f"/var/run/netns/{self.name}"

    def cmd(self, *args: str) -> List[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        r = subprocess.run(self.cmd(*args), capture_output=True, text=True, check=False,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed in {self.name}: {r.stderr.strip()}")
        return r.stdout

    def ip(self, *args: str) -> str:
        return self.run("ip", *args)

    def sysctl(self, key: str, value: str) -> None:
        self.run("sysctl", "-q", "-w", f"{key}={value}")

    def call(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run ``fn`` in a thread inside this namespace and return its result."""
        return call_in(self.name, fn, *args, **kw)

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen:
        return subprocess.Popen(self.cmd(*args), **kw)


def veth(a: NetNS, b: Optional[NetNS], a_addr: str, b_addr: str, name: str = "ve") -> None:
    """Connect namespace ``a`` to ``b`` (or to the test's own namespace when None) with a veth
    pair and assign addresses (CIDR notation)."""
    left, right = f"{name}a{next(_counter)}", f"{name}b{next(_counter)}"
    subprocess.run(["ip", "link", "add", left, "type", "veth", "peer", "name", right], check=True)
    subprocess.run(["ip", "link", "set", left, "netns", a.name], check=True)
    if b is not None:
        subprocess.run(["ip", "link", "set", right, "netns", b.name], check=True)
        b.ip("addr", "add", b_addr, "dev", right)
        b.ip("link", "set", right, "up")
    else:
        subprocess.run(["ip", "addr", "add", b_addr, "dev", right], check=True)
        subprocess.run(["ip", "link", "set", right, "up"], check=True)
    a.ip("addr", "add", a_addr, "dev", left)
    a.ip("link", "set", left, "up")


needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="creates network namespaces; scripts/test-all runs as root")


@contextmanager
def netns(tag: str) -> Iterator[str]:
    """A fresh network namespace ``nse-<tag>-<pid>-<n>`` with lo up; deleted on exit."""
    name = f"nse-{tag}-{os.getpid()}-{next(_counter)}"
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
            self._stop()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            close_pipes(self.proc)
            raise AssertionError(f"holder not ready: {err}")

    def _stop(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self._stop()
        close_pipes(self.proc)

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
