"""``top`` in a pseudo-terminal and in a pipe: two screens, changes computed from real loopback
traffic made between them inside a namespace this test creates, and the terminal left as it was
(mode and cursor) after --count, q and Ctrl-C."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import termios
import time
from typing import Callable, List, Optional

import pytest
from helpers import FIXTURES, ROOT, run_cli
from nshelpers import NetNS

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="creates network namespaces: run as root")
PORT = 7200
CONNECTIONS = 5


class PtyRun:
    """A command with a pseudo-terminal as stdin, stdout and stderr."""

    def __init__(self, cmd: List[str], sigint_ignored: bool = False) -> None:
        self.master, self.slave = pty.openpty()
        self.saved = termios.tcgetattr(self.slave)

        def controlling_terminal() -> None:
            # A session of its own with the pty as its terminal, so Ctrl-C typed there is
            # delivered as SIGINT, as in a real terminal.
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            # As a non-interactive shell starts a background job: SIGINT ignored, which the
            # new program inherits.
            signal.signal(signal.SIGINT, signal.SIG_IGN if sigint_ignored else signal.SIG_DFL)

        self.proc = subprocess.Popen(cmd, stdin=self.slave, stdout=self.slave, stderr=self.slave,
                                     cwd=ROOT, preexec_fn=controlling_terminal,  # noqa: PLW1509
                                     env=dict(os.environ, PYTHONPATH=ROOT, TERM="xterm",
                                              COLUMNS="100", LINES="60"))
        self.out = b""

    def read_until(self, done: Callable[[str], bool], timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while not done(self.text):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; output so far: {self.text!r}"
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: every writer has gone
                    chunk = b""
                if not chunk and self.proc.poll() is not None:
                    break
                self.out += chunk
        return self.text

    def finish(self, timeout: float = 60) -> int:
        self.read_until(lambda _t: self.proc.poll() is not None, timeout)
        rc = self.proc.wait(timeout=timeout)
        self.read_until(lambda _t: not select.select([self.master], [], [], 0.2)[0], timeout)
        return rc

    @property
    def text(self) -> str:
        return self.out.decode(errors="replace").replace("\r\n", "\n")

    def restored(self) -> bool:
        return termios.tcgetattr(self.slave) == self.saved

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


def screen(text: str, n: int) -> Optional[str]:
    """Screen n, once it is complete (its last section has both protocol rows)."""
    parts = re.split(r"(?=netstat-exporter top, )", text)
    for p in parts:
        done = re.search(r"Ephemeral ports\n.*\n.*tcp.*\n.*udp.*\n", p)
        if p.startswith(f"netstat-exporter top, screen {n},") and done:
            return p
    return None


def serve_and_connect(lst: socket.socket, n: int) -> List[socket.socket]:
    keep = []
    for _ in range(n):
        keep.append(socket.create_connection(("127.0.0.1", PORT)))
        keep.append(lst.accept()[0])
    return keep


def listen() -> socket.socket:
    lst = socket.socket()
    lst.bind(("127.0.0.1", PORT))
    lst.listen(16)
    return lst


def row(text: str, first: str) -> List[str]:
    for line in text.splitlines():
        if line.startswith(first + " ") or line == first:
            return re.split(r"\s{2,}", line.strip())
    raise AssertionError(f"no row {first!r} in {text}")


@needs_root
def test_two_screens_with_changes_from_real_traffic() -> None:
    with NetNS("top") as ns:
        lst = ns.call(listen)
        run = PtyRun(ns.cmd(sys.executable, "-m", "exporter",
                            "--collector.protocols.fields=Tcp_(ActiveOpens|PassiveOpens)",
                            "top", "--count", "2", "--interval", "1"))
        keep: List[socket.socket] = []
        try:
            first = screen(run.read_until(lambda t: screen(t, 1) is not None), 1)
            assert first is not None
            # Traffic between the screens: connections made and kept inside the namespace.
            # top is held still meanwhile, so the second screen cannot be taken before they
            # exist however slow this machine is; resumed, it finds its time passed.
            run.proc.send_signal(signal.SIGSTOP)
            try:
                keep = ns.call(serve_and_connect, lst, CONNECTIONS)
            finally:
                run.proc.send_signal(signal.SIGCONT)
            rc = run.finish()
            second = screen(run.text, 2)
            assert rc == 0, run.text
            assert second is not None, run.text
            assert "waiting for the next screen" in first
            assert row(first, "listen")[1:] == ["1", "-", "1"]
            # Both ends of every connection are ESTABLISHED; the change is what was made.
            assert row(second, "established")[1:] == [str(2 * CONNECTIONS),
                                                     f"+{2 * CONNECTIONS}", str(2 * CONNECTIONS)]
            assert row(second, "Tcp ActiveOpens")[1] == f"+{CONNECTIONS}"
            assert row(second, "Tcp PassiveOpens")[1] == f"+{CONNECTIONS}"
            lo = row(second, "lo")
            assert lo[1] != "0 B/s" and lo[1].endswith("B/s"), lo
            # Redrawn in place with the cursor hidden, shown again at the end; mode restored.
            assert run.out.count(b"\x1b[H\x1b[2J") == 2
            assert run.out.startswith(b"\x1b[?25l") and run.out.rstrip().endswith(b"\x1b[?25h")
            assert run.restored()
        finally:
            run.close()
            for s in keep + [lst]:
                s.close()


def _idle_top(*extra: str, sigint_ignored: bool = False) -> PtyRun:
    return PtyRun([sys.executable, "-m", "exporter",
                   f"--path.procfs={os.path.join(FIXTURES, 'proc', 'new')}",
                   f"--path.sysfs={os.path.join(FIXTURES, 'sys', 'new')}",
                   "--collector.ports.source=procfs", "--collector.sockets.source=procfs",
                   "--collector.listeners.source=procfs", "top", "--interval", "300", *extra],
                  sigint_ignored=sigint_ignored)


# Ctrl-C several times: a signal landing just before top starts waiting used to be acted on
# only when the wait ended (here 300 s), about once in ten runs.
# Ctrl-C also when started with SIGINT ignored, as a non-interactive shell's background job is
# (it used to do nothing then).
@pytest.mark.parametrize("how", ["ctrl-c"] * 5 + ["ctrl-c, SIGINT ignored", "q", "sigterm"])
def test_quitting_leaves_the_terminal_clean(how: str) -> None:
    run = _idle_top(sigint_ignored=how == "ctrl-c, SIGINT ignored")
    try:
        run.read_until(lambda t: screen(t, 1) is not None)
        # While it runs, typed keys are not echoed and lines are not buffered.
        mode = termios.tcgetattr(run.slave)
        assert not mode[3] & termios.ECHO and not mode[3] & termios.ICANON
        if how.startswith("ctrl-c"):
            os.write(run.master, b"\x03")  # the terminal turns it into SIGINT
            want = 130
        elif how == "q":
            os.write(run.master, b"q")
            want = 0
        else:
            run.proc.send_signal(signal.SIGTERM)
            want = 128 + signal.SIGTERM
        assert run.finish(timeout=20) == want, run.text
        assert run.restored()
        assert run.out.rstrip().endswith(b"\x1b[?25h")
        assert "Traceback" not in run.text
    finally:
        run.close()


def test_in_a_pipe_screens_follow_without_escape_codes() -> None:
    r = run_cli(f"--path.procfs={os.path.join(FIXTURES, 'proc', 'new')}",
                f"--path.sysfs={os.path.join(FIXTURES, 'sys', 'new')}",
                "--collector.ports.source=procfs", "--collector.sockets.source=procfs",
                "--collector.listeners.source=procfs", "top", "--count", "2",
                "--interval", "0.2")
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout
    assert len(re.findall(r"^netstat-exporter top, screen \d, ", r.stdout, re.M)) == 2
    assert all(len(ln) <= 80 for ln in r.stdout.splitlines())
    # Nothing moves in a fixture tree: the second screen says so rather than inventing rates.
    assert "nothing moved" in r.stdout.split("screen 2,")[1]


def test_unreachable_source_ends_top_at_once() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    r = run_cli("top", "--url", f"127.0.0.1:{port}", "--count", "2", "--interval", "0.2")
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "connection refused" in r.stderr, r.stderr


def test_counters_that_moved_most_leave_bytes_to_interface_rates() -> None:
    from exporter.show.reading import parse
    from exporter.show.top import Screen

    def exposition(opens: int, octets: int, rx: int) -> str:
        return (
            "# HELP a_total Tcp ActiveOpens in /proc/net/snmp: Connections opened actively.\n"
            "# TYPE a_total counter\n"
            f"a_total {opens}\n"
            "# HELP b_total IpExt InOctets in /proc/net/netstat: Bytes received.\n"
            "# TYPE b_total counter\n"
            f"b_total {octets}\n")

    s = Screen()
    s.render(parse(exposition(10, 1000, 0), monotonic=0.0, wall=100.0), 2, 80)
    second = s.render(parse(exposition(13, 999000, 0), monotonic=2.0, wall=102.0), 2, 80)
    assert row(second, "Tcp ActiveOpens")[1:] == ["+3", "1.5/s"]
    assert "InOctets" not in second
