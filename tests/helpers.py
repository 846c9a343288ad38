"""Shared test helpers: run the real exporter, scrape it, parse the exposition, poll."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar

from prometheus_client.parser import text_string_to_metric_families

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
T = TypeVar("T")

Sample = Tuple[str, Dict[str, str], float]


def connect_and_close(n: int) -> None:
    """``n`` loopback TCP connections to a listener of its own, each closed: the namespace's
    ActiveOpens and PassiveOpens grow by ``n``."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(n)
    for _ in range(n):
        socket.create_connection(srv.getsockname(), timeout=10).close()
    srv.close()


def free_port(host: str = "127.0.0.1") -> int:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def exporter_cmd(*args: str) -> List[str]:
    return [sys.executable, "-m", "exporter", *args]


def run_cli(*args: str, timeout: float = 60, prefix: Sequence[str] = (),
            env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Run ``python -m exporter ARGS`` (optionally behind a wrapper such as setpriv)."""
    full_env = dict(env if env is not None else os.environ)
    full_env["PYTHONPATH"] = ROOT
    return subprocess.run([*prefix, *exporter_cmd(*args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=full_env)


def poll(fn: Callable[[], Optional[T]], timeout: float = 15.0, interval: float = 0.05,
         what: str = "condition") -> T:
    """Call ``fn`` until it returns something truthy, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # noqa: BLE001
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_exc})" if last_exc else ""))


def http_get(url: str, timeout: float = 30, headers: Optional[Dict[str, str]] = None
             ) -> Tuple[int, Dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def parse(text: str) -> List[Sample]:
    out: List[Sample] = []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.append((s.name, dict(s.labels), float(s.value)))
    return out


def value(samples: Sequence[Sample], name: str, **labels: str) -> Optional[float]:
    for n, lbl, v in samples:
        if n == name and all(lbl.get(k) == val for k, val in labels.items()):
            return v
    return None


def select(samples: Sequence[Sample], name: str, **labels: str) -> List[Sample]:
    return [s for s in samples if s[0] == name and all(s[1].get(k) == v for k, v in labels.items())]


def ns_http_get(netns: str, url: str, timeout: float = 30, headers: Optional[Dict[str, str]] = None
                ) -> Tuple[int, Dict[str, str], bytes]:
    """http_get from inside network namespace ``netns`` (a thread that setns(2) into it)."""
    from nshelpers import call_in

    return call_in(netns, http_get, url, timeout, headers)


class RunningExporter:
    def __init__(self, proc: subprocess.Popen, port: int, host: str = "127.0.0.1",
                 netns: Optional[str] = None) -> None:
        self.proc, self.port, self.host, self.netns = proc, port, host, netns
        self.log = ""  # its stderr, once it has stopped

    def get(self, path: str, headers: Optional[Dict[str, str]] = None
            ) -> Tuple[int, Dict[str, str], bytes]:
        if self.netns is not None:
            return ns_http_get(self.netns, self.base + path, headers=headers)
        return http_get(self.base + path, headers=headers)

    @property
    def base(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{h}:{self.port}"

    def scrape_text(self, query: str = "", path: str = "/metrics") -> str:
        status, _, body = self.get(path + query)
        assert status == 200, (status, body[:500])
        return body.decode()

    def scrape(self, query: str = "") -> List[Sample]:
        return parse(self.scrape_text(query))


@contextmanager
def running_exporter(*args: str, host: str = "127.0.0.1", netns: Optional[str] = None,
                     user: Optional[str] = None, env: Optional[Dict[str, str]] = None,
                     port: Optional[int] = None) -> Iterator[RunningExporter]:
    """Start the real exporter (``python -m exporter``) on a free loopback port (inside a
    namespace of the test's own, port 19816 unless given)."""
    if port is None:
        port = free_port(host) if netns is None else 19816
    addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    cmd = exporter_cmd(f"--web.listen-address={addr}", *args)
    if user is not None:
        # The user's own group: there is no group "nobody" on Debian (it is "nogroup").
        gid = pwd.getpwnam(user).pw_gid
        cmd = ["setpriv", f"--reuid={user}", f"--regid={gid}", "--clear-groups",
               "--inh-caps=-all", "--bounding-set=-all", *cmd]
    if netns is not None:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    full_env = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    ex = RunningExporter(proc, port, host, netns)
    try:
        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"exporter exited: {proc.stderr.read() if proc.stderr else ''}")
            return ex.get("/-/healthy")[0] == 200

        poll(up, timeout=20, what="exporter to answer /-/healthy")
        yield ex
    finally:
        stop(proc, timeout=10)
        # What it logged, kept for the test; the pipes closed, not left to the collector.
        ex.log = proc.stderr.read() if proc.stderr else ""
        close_pipes(proc)


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds; waited for."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def close_pipes(proc: subprocess.Popen) -> None:
    """Close whatever pipes a finished process was given, so that none is left to the garbage
    collector (a ResourceWarning, which the suite treats as an error)."""
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def have(cmd: str) -> bool:
    return shutil.which(cmd) is not None
