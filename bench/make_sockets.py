"""Opens N loopback TCP sockets: about half ESTABLISHED (held open) and half TIME_WAIT, then
prints "ready" and waits for a line on stdin. Run inside the benchmark's network namespace."""

from __future__ import annotations

import resource
import socket
import sys


def main(total: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (total + 10000, total + 10000))
    est_pairs = total // 4  # 2 sockets per pair: ~half of the total
    tw = total - 2 * est_pairs
    keep = []
    listeners = []
    # Spread over several listening ports so the ephemeral range never runs out.
    for i in range(max(1, total // 20000 + 1)):
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", 20000 + i))
        lst.listen(4096)
        listeners.append(lst)
    for n in range(est_pairs):
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
    main(int(sys.argv[1]))
