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
from typing import IO, Any, Callable, Dict, List, Optional, Tuple

from exporter.show import counters, interfaces, listeners, ports, states
from exporter.show.reading import Reading, ShowError
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
    """What top remembers between screens: the previous reading and the peaks."""

    previous: Optional[Reading] = None
    peaks: Dict[str, float] = field(default_factory=dict)
    frames: int = 0

    def render(self, snap: Reading, interval: float, width: int,
               height: Optional[int] = None) -> str:
        """One screen ``width`` columns wide and, given a ``height``, at most that many lines:
        sections then show fewer rows and say how many they left out."""
        self.frames += 1
        prev = self.previous
        sections = [self._states(snap, prev), self._queues(snap), self._counters(snap, prev),
                    self._interfaces(snap, prev), self._ports(snap)]
        self.previous = snap
        blocks = [(sec.title, render_section(sec, width)) for sec in sections]
        body = fit(blocks, None if height is None else height - 1)
        return "\n".join([self._header(snap, interval, width)] + [ln[:width] for ln in body]) + "\n"

    def _header(self, snap: Reading, interval: float, width: int) -> str:
        """The source last, shortened from its start when the line is too long (a path's end
        is what tells one source from another); in a narrow pane "netstat-exporter" goes."""
        when = datetime.datetime.fromtimestamp(snap.wall, datetime.timezone.utc)
        middle = f"screen {self.frames}, every {interval:g} s, {when:%H:%M:%S} UTC: "
        src = snap.source
        for lead, least in (("netstat-exporter top, ", min(len(src), 16)), ("top, ", 1)):
            room = width - len(lead + middle)
            if room >= len(src):
                return lead + middle + src
            if room >= max(least, 2):
                return lead + middle + "…" + src[len(src) - room + 1:]
        return ("top, " + middle)[:width]

    def _states(self, snap: Reading, prev: Optional[Reading]) -> Section:
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
    def _queues(snap: Reading) -> Section:
        rows = listeners.queues(snap)[:TOP_QUEUES]
        return Section("queues", "Fullest accept queues", [
            Column("address", "LOCAL ADDRESS", shrink=True), Column("queue", "QUEUE", numeric=True),
            Column("backlog", "BACKLOG", numeric=True),
            Column("fill", "FULL", numeric=True, fmt=percent)], rows,
            empty="no accept queues from this source"
            if snap.has("netstat_listener_sockets") and not snap.has("netstat_listener_accept_queue_length")
            else "no TCP listeners")

    @staticmethod
    def _counters(snap: Reading, prev: Optional[Reading]) -> Section:
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
    def _interfaces(snap: Reading, prev: Optional[Reading]) -> Section:
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
    def _ports(snap: Reading) -> Section:
        return Section("ports", "Ephemeral ports", [
            Column("protocol", "PROTOCOL"), Column("used", "USED", numeric=True),
            Column("used_share", "OF RANGE", numeric=True, fmt=percent),
            Column("busiest_destination", "BUSIEST DEST", numeric=True),
            Column("busiest_share", "OF RANGE", numeric=True, fmt=percent)],
            ports.use_rows(snap), empty="not collected")


def fit(blocks: List[Tuple[str, List[str]]], height: Optional[int]) -> List[str]:
    """The rendered sections (title, lines) one after another, each after a blank line, in at
    most ``height`` lines. What does not fit is said: a section that shows fewer rows says how
    many more it has in its title line; sections with no room at all are named on the last
    line. Every section keeps its title, headings and a first row while it can; the lines left
    go round the sections one at a time, in order."""
    if height is None or sum(len(b) + 1 for _, b in blocks) <= height:
        return [ln for _, b in blocks for ln in ["", *b]]
    least = [min(len(b), 3) for _, b in blocks]
    gap = 1 if sum(n + 1 for n in least) <= height else 0
    shown, used = 0, 0
    for i, n in enumerate(least):
        room = height - (0 if i == len(blocks) - 1 else 1)  # the line naming what is left out
        if used + n + gap > room:
            break
        shown, used = i + 1, used + n + gap
    left = height - used - (1 if shown < len(blocks) else 0)
    alloc = least[:shown]
    grew = True
    while left > 0 and grew:
        grew = False
        for i in range(shown):
            if left > 0 and alloc[i] < len(blocks[i][1]):
                alloc[i] += 1
                left -= 1
                grew = True
    out: List[str] = []
    for i in range(shown):
        lines = blocks[i][1]
        part = lines[:alloc[i]]
        if alloc[i] < len(lines):
            part[0] = f"{part[0]} ({len(lines) - alloc[i]} more not shown)"
        out += [""] * gap + part
    if shown < len(blocks):
        out.append("not shown, the pane is too small: "
                   + ", ".join(title for title, _ in blocks[shown:]))
    return out


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


def _terminal_size(out: IO[str]) -> os.terminal_size:
    """The size of the terminal ``out`` writes to, asked of the terminal itself at every screen
    (a pane resized while top runs), not of COLUMNS and LINES, which a parent may have left
    behind with another terminal's size."""
    try:
        size = os.get_terminal_size(out.fileno())
        if size.columns > 0 and size.lines > 0:  # a new pty is 0x0 until someone sets it
            return size
    except (AttributeError, ValueError, OSError):
        pass
    return shutil.get_terminal_size((80, 24))


def _terminate(_signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signal.SIGTERM)


def run(read: Callable[[], Reading], interval: float, count: int = 0,
        width: Optional[int] = None, out: IO[str] = sys.stdout, stdin: IO[str] = sys.stdin) -> None:
    """Redraw until ``count`` screens were shown (0: until q, Ctrl-C or SIGTERM). A failure to
    read the first screen ends it with ShowError; later ones are shown and retried."""
    screen = Screen()
    tty = out.isatty()
    term = _Terminal(stdin, out) if tty else None
    old_term = signal.signal(signal.SIGTERM, _terminate)
    # In a terminal, Ctrl-C quits, even when top was started from a shell that ignores SIGINT
    # (a non-interactive shell's background job inherits SIG_IGN, and Python keeps it).
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler) if term else None
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
            size = _terminal_size(out) if tty else None
            cols = width or (size.columns if size else 80)
            rows = size.lines if term and size else None
            try:
                # One line fewer than the terminal has: a full last line would scroll it.
                text = screen.render(read(), interval, cols, rows - 1 if rows else None)
            except ShowError as e:
                if screen.frames == 0:
                    raise
                screen.frames += 1
                text = f"netstat-exporter top, screen {screen.frames}: {e}\n"
            if term and rows:
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
        if old_int is not None:
            signal.signal(signal.SIGINT, old_int)
        if term:
            term.restore()
            out.write("\n")
            out.flush()
