#!/usr/bin/env python3
"""The socket snapshot of a default scrape, in-process, on one of bench_scrape.py's mixes: what
the decoding costs, and A/B comparisons of two checkouts alternated in one namespace.

Run as root from the repository root:

    .venv/bin/python bench/bench_snapshot.py web 100000 [--rounds 15] [--profile]
        [--against /path/to/other/checkout ...]

It makes the mix's namespace (bench/common.py), then, inside it, runs a fresh Python per
checkout (this one, then each --against; three times over when there are several, so that neither
always goes first) that reads the snapshot a default scrape reads (TCP, UDP and unix tables;
listeners, connections per listening port and ephemeral ports wanted) --rounds times after two
warm-up reads, and prints the median and fastest, and the median CPU time (user and system: the
kernel's dump is system time of this process). With --full, the whole default scrape instead,
in-process, encoded as the server encodes it. --profile adds a cProfile of three reads (the
first pass only). Not a test: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def inner(rounds: int, profile: bool, full: bool) -> None:
    sys.path.insert(0, os.getcwd())
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import measure, profile_top

    from exporter.sockets.snapshot import Snapshot, Wants

    wants = Wants(listeners=True, connections=True, ephemeral=True)

    def one() -> None:
        with Snapshot("/proc", "auto", wants=wants) as s:
            s.inet("tcp")
            s.inet("udp")
            s.unix()

    if full:
        import exporter.collectors  # noqa: F401 - registers them
        from exporter.collectors.api import specs
        from exporter.config import Config
        from exporter.exposition import generate_text
        from exporter.scrape import Exporter

        target = Exporter(Config(collectors=frozenset(
            k for k, spec in specs().items() if spec.default_enabled))).target(None)

        def one() -> None:  # noqa: F811 - the whole default scrape instead
            generate_text(target)

    times, cpu = measure(one, rounds)
    print(f"{os.getcwd()}: median {statistics.median(times) * 1000:.1f} ms, "
          f"fastest {min(times) * 1000:.1f} ms; CPU (user + system, the kernel's dump "
          f"included) median {statistics.median(cpu) * 1000:.1f} ms", flush=True)
    if profile:
        profile_top(one)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--inner":
        inner(int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4] == "1")
        return
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from common import make_mix_namespace, make_namespace

    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("mix", choices=("web", "udp", "unix", "pairs"))
    ap.add_argument("sockets", type=int)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--full", action="store_true",
                    help="time the whole default scrape, encoded as the server encodes it")
    ap.add_argument("--against", action="append", default=[])
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_snapshot.py: run as root (it creates a network namespace)")
    dirs = [ROOT, *args.against]
    ns = f"nssnap-{os.getpid()}"
    procs = (make_namespace(ns, args.sockets) if args.mix == "pairs"
             else make_mix_namespace(ns, args.mix, args.sockets))
    try:
        for rep in range(3 if len(dirs) > 1 else 1):
            for d in dirs:
                subprocess.run(["ip", "netns", "exec", ns, sys.executable, __file__, "--inner",
                                str(args.rounds), "1" if args.profile and rep == 0 else "0",
                                "1" if args.full else "0"],
                               cwd=d, check=True)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


if __name__ == "__main__":
    main()
