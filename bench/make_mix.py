"""Opens the sockets of one share of a benchmark mix, prints "ready" and waits for a line (or
EOF) on stdin. Run inside the benchmark's network namespace; bench/common.py splits a mix into
shares so that no process needs more descriptors than the limit allows.

Usage:

    make_mix.py web LISTENERS FIRST_PORT ESTABLISHED SHUT CLOSE_WAIT TW_SERVER TW_CLIENT
    make_mix.py udp LISTENERS FIRST_PORT CONNECTED
    make_mix.py unix STREAM_PAIRS DGRAM_PAIRS LISTENERS

``web``: LISTENERS TCP listeners on consecutive ports from FIRST_PORT, every fourth on ::1 (the
rest on 127.0.0.1), and connections to them in turn: ESTABLISHED pairs held open; SHUT pairs
whose client shut down its sending side (client FIN_WAIT2, server CLOSE_WAIT, both held);
CLOSE_WAIT server ends whose client closed with a one-second TCP_LINGER2, so that the client's
FIN_WAIT2 is gone a second later; TW_SERVER connections that the server closed first (TIME_WAIT
on the listening port) and TW_CLIENT that the client closed first (TIME_WAIT on an ephemeral
port).

``udp``: LISTENERS UDP sockets bound to consecutive ports from FIRST_PORT and not connected (every
fourth on ::1), and CONNECTED sockets connect()ed to them in turn (autobound ephemeral ports).

``unix``: STREAM_PAIRS and DGRAM_PAIRS socketpair()s and LISTENERS listening stream sockets on
abstract names.
"""

from __future__ import annotations

import os
import resource
import socket
import sys
from typing import List, Tuple

TCP_LINGER2 = 8


def _addr(i: int, port: int) -> Tuple[int, Tuple[str, int]]:
    if i % 4 == 3:
        return socket.AF_INET6, ("::1", port)
    return socket.AF_INET, ("127.0.0.1", port)


def web(listeners: int, first: int, est: int, shut: int, cw: int, tw_server: int,
        tw_client: int) -> List[socket.socket]:
    keep: List[socket.socket] = []
    lst = []
    for i in range(listeners):
        fam, addr = _addr(i, first + i)
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(addr)
        s.listen(4096)
        lst.append((fam, addr, s))
        keep.append(s)
    turn = 0

    def pair() -> Tuple[socket.socket, socket.socket]:
        nonlocal turn
        fam, addr, s = lst[turn % len(lst)]
        turn += 1
        c = socket.socket(fam, socket.SOCK_STREAM)
        c.connect(addr)
        a, _ = s.accept()
        return c, a

    for _ in range(est):
        keep += pair()
    for _ in range(shut):
        c, a = pair()
        c.shutdown(socket.SHUT_WR)
        keep += (c, a)
    for _ in range(cw):
        c, a = pair()
        c.setsockopt(socket.IPPROTO_TCP, TCP_LINGER2, 1)
        c.close()
        keep.append(a)
    for _ in range(tw_server):  # the server closes first: TIME_WAIT on the listening port
        c, a = pair()
        a.close()
        c.recv(1)  # the server's FIN has arrived
        c.close()
    for _ in range(tw_client):  # the client closes first: TIME_WAIT on its ephemeral port
        c, a = pair()
        c.close()
        a.recv(1)
        a.close()
    return keep


def udp(listeners: int, first: int, connected: int) -> List[socket.socket]:
    keep: List[socket.socket] = []
    addrs = []
    for i in range(listeners):
        fam, addr = _addr(i, first + i)
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.bind(addr)
        keep.append(s)
        addrs.append((fam, addr))
    for i in range(connected):
        fam, addr = addrs[i % len(addrs)]
        c = socket.socket(fam, socket.SOCK_DGRAM)
        c.connect(addr)
        keep.append(c)
    return keep


def unix(stream: int, dgram: int, listeners: int) -> List[socket.socket]:
    keep: List[socket.socket] = []
    for _ in range(stream):
        keep += socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    for _ in range(dgram):
        keep += socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for i in range(listeners):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(f"\0bench-mix-{os.getpid()}-{i}")
        s.listen(16)
        keep.append(s)
    return keep


def main(argv: List[str]) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    kind, args = argv[0], [int(x) for x in argv[1:]]
    if kind == "web":
        keep = web(*args)
    elif kind == "udp":
        keep = udp(*args)
    elif kind == "unix":
        keep = unix(*args)
    else:
        raise SystemExit(f"make_mix.py: unknown mix {kind!r}")
    print("ready", flush=True)
    sys.stdin.readline()
    del keep


if __name__ == "__main__":
    main(sys.argv[1:])
