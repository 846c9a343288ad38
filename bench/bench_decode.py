#!/usr/bin/env python3
"""The decoding of a TCP dump alone, without the kernel: the TCP dumps a scrape makes of one of
bench_scrape.py's mixes (one, or two when TIME_WAIT is dumped apart) are captured once, then fed
again and again to the decoder (inet.dump_records and the one-pass
sink, listeners, connections per listening port and ephemeral ports wanted), and the CPU time of
each pass is measured; several checkouts alternate on the same bytes, so an A/B comparison is
free of the kernel's and the machine's noise as far as CPU time can be.

Run as root from the repository root:

    .venv/bin/python bench/bench_decode.py capture web 100000 /tmp/web100k.pickle
    .venv/bin/python bench/bench_decode.py replay /tmp/web100k.pickle [--rounds 20]
        [--against /path/to/other/checkout ...] [--profile]

Not a test: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import subprocess
import sys
from typing import Any, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def capture_inner(path: str) -> None:
    sys.path.insert(0, os.getcwd())
    import exporter.netlink.inet as inet
    from exporter.sockets.snapshot import Snapshot, read_ephemeral_range

    dumps: List[List[bytes]] = []
    real = inet.dump

    def keep(payload: bytes, handler: Any, sock: Any = None, msg_type: int = 20) -> bool:
        chunks: List[bytes] = []
        dumps.append(chunks)

        def h(buf: bytearray, n: int) -> Tuple[bool, bool]:
            chunks.append(bytes(buf[:n]))
            return handler(buf, n)  # type: ignore[no-any-return]
        return real(payload, h, sock=sock, msg_type=msg_type)

    inet.dump = keep  # type: ignore[assignment]
    with Snapshot("/proc", "netlink") as snap:  # the TCP dumps a scrape makes (one or two)
        snap.inet("tcp")
    eph = read_ephemeral_range("/proc")
    assert eph is not None
    with open(path, "wb") as f:
        pickle.dump((dumps, sorted(eph.ports)), f)
    print(f"{len(dumps)} dumps, {sum(len(c) for d in dumps for c in d):,} bytes")


def replay_inner(path: str, rounds: int, profile: bool) -> None:
    sys.path.insert(0, os.getcwd())
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import measure, profile_top

    import exporter.netlink.inet as inet
    from exporter.netlink import requests as req
    from exporter.sockets.onepass import InetPass, ephemeral_range

    with open(path, "rb") as f:
        dumps, ports = pickle.load(f)
    have = set(ports)
    low, high = min(ports), max(ports)
    eph = ephemeral_range(low, high, [(p, p) for p in range(low, high + 1) if p not in have])
    buf = bytearray(max(len(c) for d in dumps for c in d))
    queue: List[List[bytes]] = []

    def replay(payload: bytes, handler: Any, sock: Any = None, msg_type: int = 20) -> bool:
        for c in queue.pop(0):
            buf[:len(c)] = c
            if handler(buf, len(c))[0]:
                break
        return False

    inet.dump = replay  # type: ignore[assignment]

    def one() -> None:
        sink = InetPass("tcp", listeners=True, connections=True, ephemeral=eph)
        queue[:] = dumps
        for _ in dumps:
            inet.dump_records(b"", sink, msg_type=req.TCPDIAG_GETSOCK)
        sink.result("netlink", ["ipv4", "ipv6"])

    _, times = measure(one, rounds)
    print(f"{os.getcwd()}: CPU per pass median {statistics.median(times) * 1000:.1f} ms, "
          f"fastest {min(times) * 1000:.1f} ms", flush=True)
    if profile:
        profile_top(one)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--capture-inner":
        capture_inner(sys.argv[2])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--replay-inner":
        replay_inner(sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1")
        return
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    cap = sub.add_parser("capture")
    cap.add_argument("mix", choices=("web", "pairs"))
    cap.add_argument("sockets", type=int)
    cap.add_argument("file")
    rep = sub.add_parser("replay")
    rep.add_argument("file")
    rep.add_argument("--rounds", type=int, default=20)
    rep.add_argument("--against", action="append", default=[])
    rep.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    if args.cmd == "capture":
        if os.geteuid() != 0:
            raise SystemExit("bench_decode.py capture: run as root (it creates a namespace)")
        sys.path.insert(0, os.path.join(ROOT, "bench"))
        from common import make_mix_namespace, make_namespace

        ns = f"nsdecode-{os.getpid()}"
        procs = (make_namespace(ns, args.sockets) if args.mix == "pairs"
                 else make_mix_namespace(ns, args.mix, args.sockets))
        try:
            subprocess.run(["ip", "netns", "exec", ns, sys.executable, __file__,
                            "--capture-inner", os.path.abspath(args.file)], cwd=ROOT, check=True)
        finally:
            for p in procs:
                p.kill()
                p.wait()
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        return
    dirs = [ROOT, *args.against]
    for rep_no in range(3 if len(dirs) > 1 else 1):
        for d in dirs:
            subprocess.run([sys.executable, __file__, "--replay-inner",
                            os.path.abspath(args.file), str(args.rounds),
                            "1" if args.profile and rep_no == 0 else "0"], cwd=d, check=True)


if __name__ == "__main__":
    main()
