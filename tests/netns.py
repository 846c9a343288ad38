"""Network namespaces made by a test: extra, isolated hosts where socket counts are exact.

``NetNS`` creates ``ip netns add`` namespaces with unique names and deletes them (killing what
runs inside) on exit. ``ns.call(fn)`` runs ``fn`` in a thread that has entered the namespace with
setns(2), so sockets the function creates live in that namespace while the test keeps them.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import signal
import subprocess
import threading
from typing import Any, Callable, List, Optional, TypeVar

T = TypeVar("T")
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
