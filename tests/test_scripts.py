"""The helper scripts: scripts/apt-install leaves the host's policy-rc.d as it found it, and
the benchmarks (bench/common.py) wait for their servers quietly.

scripts/test-all used to write /usr/sbin/policy-rc.d and then delete it, destroying a file the
host had. Here apt-get is a stub (on PATH first) that records what policy-rc.d said while it
ran; POLICY_RC_D points the script at a file of the test's own, so the host's is not touched.
"""

from __future__ import annotations

import http.server
import importlib.util
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, List, Optional

import pytest
from helpers import ROOT, free_port
from nshelpers import NetNS, needs_root

SCRIPT = os.path.join(ROOT, "scripts", "apt-install")
HOST_POLICY = "#!/bin/sh\n# the host's own policy\nexit 0\n"


def run(tmp: Path, fail: bool = False) -> subprocess.CompletedProcess:
    stub = tmp / "bin"
    stub.mkdir(exist_ok=True)
    apt = stub / "apt-get"
    apt.write_text("#!/bin/sh\n"
                   'if [ "$1" = install ]; then cat "$POLICY_RC_D" > "$RECORD"; '
                   f"echo \"$@\" >> \"$RECORD\"; exit {100 if fail else 0}; fi\n"
                   "exit 0\n")
    apt.chmod(0o755)
    env = dict(os.environ, PATH=f"{stub}:{os.environ['PATH']}",
               POLICY_RC_D=str(tmp / "policy-rc.d"), RECORD=str(tmp / "record"), TMPDIR=str(tmp))
    return subprocess.run(["bash", SCRIPT, "pkg-a", "pkg-b"], capture_output=True, text=True,
                          env=env, timeout=60)


def recorded(tmp: Path) -> str:
    return (tmp / "record").read_text()


@pytest.mark.parametrize("host", [HOST_POLICY, None], ids=["host-has-one", "host-has-none"])
def test_policy_rc_d_is_restored(tmp_path: Path, host: Optional[str]) -> None:
    policy = tmp_path / "policy-rc.d"
    if host is not None:
        policy.write_text(host)
        policy.chmod(0o750)
    r = run(tmp_path)
    assert r.returncode == 0, r.stderr
    # While apt-get ran, services were refused ...
    assert recorded(tmp_path) == "#!/bin/sh\nexit 101\ninstall -y -qq --no-install-recommends " \
                                 "pkg-a pkg-b\n"
    # ... and afterwards the host's file is back as it was, or still absent.
    if host is None:
        assert not policy.exists()
    else:
        assert policy.read_text() == host
        assert stat.S_IMODE(policy.stat().st_mode) == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["bin", "record"] + (["policy-rc.d"] if host is not None else []))


def test_policy_rc_d_is_restored_when_the_installation_fails(tmp_path: Path) -> None:
    policy = tmp_path / "policy-rc.d"
    policy.write_text(HOST_POLICY)
    r = run(tmp_path, fail=True)
    assert r.returncode != 0
    assert "exit 101" in recorded(tmp_path)
    assert policy.read_text() == HOST_POLICY


def test_test_all_uses_it() -> None:
    with open(os.path.join(ROOT, "scripts", "test-all")) as f:
        text = f.read()
    assert "scripts/apt-install" in text and "policy-rc.d" not in text.replace(
        "leaving the host's policy-rc.d as it was", "")


# --- the benchmarks waiting for their servers (bench/common.py) ---------------------------------

def _bench_sockets() -> Any:
    path = os.path.join(ROOT, "bench", "common.py")
    spec = importlib.util.spec_from_file_location("bench_common", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@needs_root
def test_bench_waits_for_its_servers_without_tracebacks(monkeypatch: pytest.MonkeyPatch,
                                                        capfd: pytest.CaptureFixture[str]
                                                        ) -> None:
    """While a server is not up, connecting from the namespace is refused: the refusal reaches
    the waiting loop, not the thread's excepthook, which printed one traceback per attempt."""
    bench = _bench_sockets()
    hooked: List[Any] = []
    monkeypatch.setattr(threading, "excepthook", hooked.append)
    with NetNS("bench") as ns:
        port = ns.call(free_port)
        with pytest.raises(ConnectionRefusedError):
            bench.connect_in(ns.name, port)
        with pytest.raises(SystemExit, match=f"nothing answered on port {port}"):
            bench.wait_up(ns.name, port, timeout=0.5)
        srv = ns.call(_serve_once)
        try:
            bench.wait_up(ns.name, srv.server_address[1], timeout=30)
        finally:
            srv.shutdown()
            srv.server_close()
    assert hooked == []
    out, err = capfd.readouterr()
    assert "Traceback" not in err and "Exception in thread" not in err, err


def _serve_once() -> http.server.HTTPServer:
    """An HTTP server on loopback of the calling thread's namespace, serving in a thread."""
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@needs_root
@pytest.mark.serial  # its programs count every TCP event of the host
def test_bench_tcpevents_read_cost_runs() -> None:
    """The read-cost part of bench/bench_tcpevents.py (which builds the collector's metric
    families from a reading) runs to its figure: it once stopped on the collector's options."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench_tcpevents.py"),
                        "--rounds", "0",
                        "--ports", "20", "--reads", "3"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "read cost:" in r.stdout and "Traceback" not in r.stderr
