"""--platform=portable: the code Windows and macOS run (psutil, no native call), run here.

Started through tests/portable_shim.py, the exporter cannot import the modules those systems
lack; it must still serve the sockets, listeners and interfaces collectors, and show and top
must still print. A control run of the Linux path under the same shim shows the shim bites.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Iterator, List

import pytest
from helpers import ROOT, close_pipes, free_port, http_get, parse, poll, select, stop, value

SHIM = os.path.join(ROOT, "tests", "portable_shim.py")
PORTABLE = ("sockets", "listeners", "interfaces")


def shim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SHIM, *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, SHIM, "--platform=portable",
                             f"--web.listen-address=127.0.0.1:{port}"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read() if proc.stderr else "")
            return http_get(url)[0] == 200

        poll(up, timeout=20, what="the portable exporter to serve")
        yield http_get(url)[2].decode()
    finally:
        stop(proc)
        close_pipes(proc)


def test_portable_serves_every_collector_it_has_without_linux_modules(served: str) -> None:
    samples = parse(served)
    for name in PORTABLE:
        assert value(samples, "netstat_exporter_collector_success", collector=name) == 1, name
    # Only the portable collectors run: the others need /proc, /sys or a system's own calls.
    ran = {s[1]["collector"] for s in select(samples, "netstat_exporter_collector_success")}
    assert ran == set(PORTABLE)
    assert value(samples, "netstat_sockets_source_info", protocol="tcp", source="psutil") == 1
    assert value(samples, "netstat_sockets", protocol="tcp", family="ipv4", state="listen") >= 1
    assert select(samples, "netstat_interface_receive_bytes_total", device="lo")
    assert not select(samples, "netstat_sockstat_sockets_used")  # /proc/net/sockstat: Linux's


@pytest.mark.parametrize("view", ["states", "listeners", "interfaces"])
def test_portable_show_views_print(view: str) -> None:
    r = shim("--platform=portable", "show", view)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout.startswith(f"{view} from this host")


@pytest.mark.parametrize("view,collector", [("counters", "protocols"), ("routes", "routes"),
                                            ("ports", "ports and limits")])
def test_portable_views_it_cannot_serve_say_so(view: str, collector: str) -> None:
    r = shim("--platform=portable", "show", view)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"netstat-exporter: error: {view} is not available on portable: it needs the "
        f"{collector} collector"), r.stderr
    assert "Traceback" not in r.stderr


def test_portable_top_prints_its_screens() -> None:
    r = shim("--platform=portable", "top", "--count", "2", "--interval", "0.2")
    assert r.returncode == 0, r.stderr
    screens: List[str] = r.stdout.split("netstat-exporter top, screen ")[1:]
    assert len(screens) == 2
    assert "TCP states" in screens[0] and "Interface rates" in screens[0]


def test_the_shim_refuses_what_linux_code_needs() -> None:
    """The Linux path under the same shim cannot work (no AF_NETLINK, no pwd): so the portable
    path above passing means it needs none of it."""
    r = shim("--collector.disable-defaults", "--collector.sockets",
             "--collector.sockets.source=netlink", "dump")
    assert r.returncode == 0, r.stderr
    assert value(parse(r.stdout), "netstat_exporter_collector_success",
                 collector="sockets") == 0
    assert "has no attribute" in r.stderr  # os.pread of a kept /proc file, or AF_NETLINK


@pytest.mark.parametrize("args,says", [
    (["--platform=portable", "--collector.netns"],
     "--collector.netns: the netns collector is not available on portable"),
    (["--platform=portable", "--path.procfs=/proc"], None),
    (["--platform=portable", "--path.procfs=/host/proc"],
     "--path.procfs means nothing on portable"),
    (["--platform=portable", "--path.sysfs=/host/sys"], "--path.sysfs means nothing on portable"),
    (["--platform=portable", "--collector.routes.table"],
     "--collector.routes.table means nothing on portable: the routes collector is not available"),
    (["--platform=portable", "--collector.sockets.source=netlink"],
     "socket source 'netlink' means nothing on portable"),
    (["--platform=windows"], "Invalid value for '--platform'"),
])
def test_flags_that_mean_nothing_there_are_refused_in_one_line(args: List[str], says: str) -> None:
    r = shim(*args, "dump")
    if says is None:
        assert r.returncode == 0, r.stderr
        return
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], r.stderr
