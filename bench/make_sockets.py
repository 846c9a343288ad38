"""Opens loopback TCP sockets: PAIRS established connections (both ends held open) and TW
connections left in TIME_WAIT, then prints "ready" and waits for a line (or EOF) on stdin.

Usage: make_sockets.py PAIRS TW BASEPORT. Run inside the benchmark's network namespace; the
benchmark starts several of these when one process may not hold enough descriptors.
"""

from __future__ import annotations

import resource
import socket
import sys


def main(pairs: int, tw: int, base: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if 2 * pairs + 100 > hard:
        raise SystemExit(f"make_sockets.py: {2 * pairs} descriptors exceed the limit {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    keep = []
    # Several listening ports, so the ephemeral range never runs out for one destination.
    listeners = []
    for i in range((pairs + tw) // 20000 + 1):
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", base + i))
        lst.listen(4096)
        listeners.append(lst)
    for n in range(pairs):
        lst = listeners[n % len(listeners)]
        c = socket.create_connection(lst.getsockname())
        s, _ = lst.accept()
        keep += (c, s)
    for n in range(tw):  # the client closes first: its side waits in TIME_WAIT
        lst = listeners[n % len(listeners)]
        c = socket.create_connection(lst.getsockname())
        s, _ = lst.accept()
        c.close()
        s.close()
    print("ready", flush=True)
    sys.stdin.readline()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
