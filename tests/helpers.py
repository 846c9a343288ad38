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


def free_port(host: str = "127.0.0.1") -> int:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def exporter_cmd(*args: str) -> List[str]:
    return [sys.executable, "-m", "exporter", *args]


def run_cli(*args: str, timeout: float = 60, **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run(exporter_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, **kw)  # type: ignore[call-overload]


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
    for n, l, v in samples:
        if n == name and all(l.get(k) == val for k, val in labels.items()):
            return v
    return None


def select(samples: Sequence[Sample], name: str, **labels: str) -> List[Sample]:
    return [s for s in samples if s[0] == name and all(s[1].get(k) == v for k, v in labels.items())]


class RunningExporter:
    def __init__(self, proc: subprocess.Popen, port: int, host: str = "127.0.0.1") -> None:
        self.proc, self.port, self.host = proc, port, host

    @property
    def base(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{h}:{self.port}"

    def scrape_text(self, query: str = "", path: str = "/metrics") -> str:
        status, _, body = http_get(self.base + path + query)
        assert status == 200, (status, body[:500])
        return body.decode()

    def scrape(self, query: str = "") -> List[Sample]:
        return parse(self.scrape_text(query))


@contextmanager
def running_exporter(*args: str, host: str = "127.0.0.1", netns: Optional[str] = None,
                     user: Optional[str] = None, env: Optional[Dict[str, str]] = None
                     ) -> Iterator[RunningExporter]:
    """Start the real exporter (``python -m exporter``) on a free loopback port."""
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
    ex = RunningExporter(proc, port, host)
    try:
        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"exporter exited: {proc.stderr.read() if proc.stderr else ''}")
            if netns is not None:
                r = subprocess.run(["ip", "netns", "exec", netns, "python3", "-c",
                                    f"import urllib.request;urllib.request.urlopen('{ex.base}/-/healthy',timeout=2)"],
                                   capture_output=True)
                return r.returncode == 0
            return http_get(ex.base + "/-/healthy", timeout=2)[0] == 200

        poll(up, timeout=20, what="exporter to answer /-/healthy")
        yield ex
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def have(cmd: str) -> bool:
    return shutil.which(cmd) is not None
