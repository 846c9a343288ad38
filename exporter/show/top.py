"""``top``: one screen redrawn every N seconds (``netstat 5``, ``nstat`` in a loop): TCP states
with their change and the peak seen, the fullest accept queues, the counters that moved most,
interface rates and ephemeral port use.

On a terminal the screen is redrawn in place, the cursor hidden and typed keys not echoed; q,
Ctrl-C or SIGTERM end it and the terminal is put back as it was. In a pipe, screens follow one
another with no escape codes.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import select
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Dict, List, Optional

from exporter.show import counters, interfaces, listeners, ports, states
from exporter.show.snapshot import ShowError, Snapshot
from exporter.show.table import Column, Section, percent, rate, render_section, signed

HOME_CLEAR = "\x1b[H\x1b[2J"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
TOP_QUEUES = 5
TOP_COUNTERS = 8


def human_rate(v: Any) -> str:
    """Bytes per second in powers of 1000, as link speeds are given."""
    if not isinstance(v, (int, float)):
        return str(v)
    for unit in ("B/s", "kB/s", "MB/s", "GB/s"):
        if abs(v) < 1000 or unit == "GB/s":
            return f"{v:.0f} {unit}" if unit == "B/s" else f"{v:.1f} {unit}"
        v /= 1000
    return str(v)  # not reached


@dataclass
class Screen:
    """What top remembers between screens: the previous snapshot and the peaks."""

    previous: Optional[Snapshot] = None
    peaks: Dict[str, float] = field(default_factory=dict)
    frames: int = 0

    def render(self, snap: Snapshot, interval: float, width: int) -> str:
        self.frames += 1
        prev = self.previous
        when = datetime.datetime.fromtimestamp(snap.wall, datetime.timezone.utc)
        # The source last: a long one is what a narrow terminal cuts.
        lines = [f"netstat-exporter top, screen {self.frames}, every {interval:g} s, "
                 f"{when:%H:%M:%S} UTC: {snap.source}"]
        for sec in (self._states(snap, prev), self._queues(snap), self._counters(snap, prev),
                    self._interfaces(snap, prev), self._ports(snap)):
            lines.append("")
            lines.extend(render_section(sec, width))
        self.previous = snap
        return "\n".join(line[:width] for line in lines) + "\n"

    def _states(self, snap: Snapshot, prev: Optional[Snapshot]) -> Section:
        now = states.tcp_totals(snap)
        before = states.tcp_totals(prev) if prev else {}
        rows = []
        for st, v in now.items():
            self.peaks[st] = max(self.peaks.get(st, v), v)
            if v or self.peaks[st] or (prev and before.get(st)):
                rows.append({"state": st, "now": v,
                             "change": v - before.get(st, 0.0) if prev else None,
                             "peak": self.peaks[st]})
        return Section("states", "TCP states", [
            Column("state", "STATE"), Column("now", "NOW", numeric=True),
            Column("change", "CHANGE", numeric=True, fmt=signed),
            Column("peak", "PEAK", numeric=True)], rows, empty="no TCP sockets")

    @staticmethod
    def _queues(snap: Snapshot) -> Section:
        rows = listeners.queues(snap)[:TOP_QUEUES]
        return Section("queues", "Fullest accept queues", [
            Column("address", "LOCAL ADDRESS", shrink=True), Column("queue", "QUEUE", numeric=True),
            Column("backlog", "BACKLOG", numeric=True),
            Column("fill", "FULL", numeric=True, fmt=percent)], rows,
            empty="no accept queues from this source"
            if snap.has("netstat_listener_sockets") and not snap.has("netstat_listener_accept_queue_length")
            else "no TCP listeners")

    @staticmethod
    def _counters(snap: Snapshot, prev: Optional[Snapshot]) -> Section:
        rows: List[Dict[str, Any]] = []
        if prev is not None:
            before = {c.key: c.value for c in counters.protocol_counters(prev)}
            # Byte counters (IpExt InOctets...) would always top the list; interface rates
            # show bytes already.
            now = [c for c in counters.protocol_counters(snap)
                   if c.kind == "counter" and not c.field.endswith("Octets")]
            moves = counters.changes(now, before, snap.wall - prev.wall)
            rows = [{"counter": f"{c.group} {c.field}", "delta": moves[c.key].delta,
                     "rate": moves[c.key].rate} for c in now if moves[c.key].delta]
            rows.sort(key=lambda r: (-(r["delta"] or 0), r["counter"]))
        return Section("counters", "Counters that moved most", [
            Column("counter", "COUNTER", shrink=True),
            Column("delta", "CHANGE", numeric=True, fmt=signed),
            Column("rate", "RATE", numeric=True, fmt=rate)], rows[:TOP_COUNTERS],
            empty="waiting for the next screen" if prev is None else "nothing moved")

    @staticmethod
    def _interfaces(snap: Snapshot, prev: Optional[Snapshot]) -> Section:
        r = interfaces.rates(snap, prev) if prev else {}
        rows = [{"device": d, "rx": r.get(d, {}).get("receive_bytes"),
                 "tx": r.get(d, {}).get("transmit_bytes"),
                 "rx_packets": r.get(d, {}).get("receive_packets"),
                 "tx_packets": r.get(d, {}).get("transmit_packets")}
                for d in sorted(interfaces.per_device(snap))]
        return Section("interfaces", "Interface rates", [
            Column("device", "IFACE", shrink=True),
            Column("rx", "RX", numeric=True, fmt=human_rate),
            Column("tx", "TX", numeric=True, fmt=human_rate),
            Column("rx_packets", "RX PKT", numeric=True, fmt=rate),
            Column("tx_packets", "TX PKT", numeric=True, fmt=rate)], rows, empty="no interfaces")

    @staticmethod
    def _ports(snap: Snapshot) -> Section:
        return Section("ports", "Ephemeral ports", [
            Column("protocol", "PROTOCOL"), Column("used", "USED", numeric=True),
            Column("used_share", "OF RANGE", numeric=True, fmt=percent),
            Column("busiest_destination", "BUSIEST DEST", numeric=True),
            Column("busiest_share", "OF RANGE", numeric=True, fmt=percent)],
            ports.use_rows(snap), empty="not collected")


class _Terminal:
    """Raw-ish keyboard (no echo, no line buffering; Ctrl-C still interrupts) and a hidden
    cursor, both undone by :meth:`restore` whatever happens."""

    def __init__(self, stdin: IO[str], out: IO[str]) -> None:
        self.out = out
        self.fd: Optional[int] = None
        self.saved: Optional[List[Any]] = None
        try:
            fd = stdin.fileno()
        except (AttributeError, ValueError, OSError):
            return
        if os.isatty(fd):
            try:
                import termios
            except ImportError:
                return  # Windows: no raw keyboard (Ctrl-C ends top there)
            self.fd = fd
            self.saved = termios.tcgetattr(fd)

    def enter(self) -> None:
        if self.fd is not None and self.saved is not None:
            import termios

            mode = termios.tcgetattr(self.fd)
            mode[3] &= ~(termios.ICANON | termios.ECHO)
            mode[6][termios.VMIN], mode[6][termios.VTIME] = 0, 0
            termios.tcsetattr(self.fd, termios.TCSADRAIN, mode)
        self.out.write(HIDE_CURSOR)
        self.out.flush()

    def restore(self) -> None:
        if self.fd is not None and self.saved is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
        self.out.write(SHOW_CURSOR)
        self.out.flush()



def pause(seconds: float, keyboard: Optional[int], wakeup: socket.socket) -> bool:
    """Wait up to ``seconds``; True when q was typed on ``keyboard``.

    A signal (Ctrl-C, SIGTERM) that lands just before the wait starts would otherwise leave it
    to run its whole length before Python raises; the signal module writes to ``wakeup`` (see
    signal.set_wakeup_fd), which ends the wait at once and lets the handler run.
    """
    deadline = time.monotonic() + seconds
    fds = [wakeup] + ([keyboard] if keyboard is not None else [])
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select(fds, [], [], left)
        if wakeup in ready:
            with contextlib.suppress(BlockingIOError):
                wakeup.recv(512)
        if keyboard is not None and keyboard in ready:
            data = os.read(keyboard, 64)
            if not data or b"q" in data.lower():
                return True


def _terminate(_signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signal.SIGTERM)


def run(read: Callable[[], Snapshot], interval: float, count: int = 0,
        width: Optional[int] = None, out: IO[str] = sys.stdout, stdin: IO[str] = sys.stdin) -> None:
    """Redraw until ``count`` screens were shown (0: until q, Ctrl-C or SIGTERM). A failure to
    read the first screen ends it with ShowError; later ones are shown and retried."""
    screen = Screen()
    tty = out.isatty()
    term = _Terminal(stdin, out) if tty else None
    old_term = signal.signal(signal.SIGTERM, _terminate)
    # A socket pair, not a pipe: Windows takes only sockets for the wakeup fd and select().
    wake_r, wake_w = socket.socketpair()
    for s in (wake_r, wake_w):
        s.setblocking(False)
    old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    next_at = time.monotonic()
    try:
        if term:
            term.enter()
        while True:
            cols = width or (shutil.get_terminal_size((80, 24)).columns if tty else 80)
            try:
                text = screen.render(read(), interval, cols)
            except ShowError as e:
                if screen.frames == 0:
                    raise
                screen.frames += 1
                text = f"netstat-exporter top, screen {screen.frames}: {e}\n"
            if term:
                rows = shutil.get_terminal_size((80, 24)).lines
                text = "\n".join(text.split("\n")[: max(rows - 1, 1)])
                out.write(HOME_CLEAR + text)
            else:
                out.write(("\n" if screen.frames > 1 else "") + text)
            out.flush()
            if count and screen.frames >= count:
                break
            # A collection slower than the interval delays the next screen; it does not cause
            # a burst of screens to catch up.
            next_at = max(next_at + interval, time.monotonic())
            wait = max(0.0, next_at - time.monotonic())
            if pause(wait, term.fd if term else None, wake_r):
                break
    finally:
        signal.set_wakeup_fd(old_wakeup)
        wake_r.close()
        wake_w.close()
        signal.signal(signal.SIGTERM, old_term)
        if term:
            term.restore()
            out.write("\n")
            out.flush()
