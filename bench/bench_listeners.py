#!/usr/bin/env python3
"""Benchmark: the listeners collector against `ss -tlnp`, on a host with many processes,
listeners and connections. Not a test; pytest does not collect it.

Builds, in a network namespace of its own (so that only its sockets are listed, while /proc
still holds every process of the machine, as it does for ss):

* ``--idle`` processes (300) holding ``--idle-fds`` descriptors (50) each;
* ``--listeners`` TCP listeners (1,000) spread over ``--servers`` processes (10);
* ``--connections`` loopback connections (50,000, i.e. 100,000 sockets) made by ``--clients``
  processes (4); ``--to-listeners`` of them (5,000) to the listeners, accepted by the servers,
  so that "connections per listening port" has work to do, the rest to ports whose listener has
  closed (as connections to other hosts would look);

then times, in one run and interleaved: ``ss -tlnp`` (as a user runs it, a fresh process);
the collector's first scrape (a fresh collector, nothing cached); its later scrapes (listeners
unchanged); and the same two over HTTP (``GET /metrics?collect[]=listeners`` on a fresh
``python -m exporter``). With ``--unattributable`` one extra listener has no process at all
(its only reference is in flight in a unix socket), so that the first walk cannot stop early.

Run as root from the repository: ``python3 bench/bench_listeners.py``. Prints medians and ratios.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Callable, Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


# What a child must keep open until it is stopped (locals would be closed on return).
KEEP: List[object] = []


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def fork(body: Callable[[], None]) -> int:
    """Run ``body`` in a child that then waits for its stdin-like stop pipe to close."""
    pid = os.fork()
    if pid == 0:
        try:
            body()
        except BaseException as e:  # noqa: BLE001 - report and die, never return into main
            print(f"child {os.getpid()}: {e!r}", file=sys.stderr, flush=True)
            os._exit(1)
        os._exit(0)
    return pid


class Stage:
    """Children report readiness on a pipe and exit when the stop pipe closes."""

    def __init__(self) -> None:
        self.ready_r, self.ready_w = os.pipe()
        self.stop_r, self.stop_w = os.pipe()
        self.pids: List[int] = []

    def child(self, setup: Callable[[], Optional[str]]) -> None:
        def body() -> None:
            os.close(self.stop_w)
            os.close(self.ready_r)
            msg = setup() or ""
            os.write(self.ready_w, (msg + "\n").encode())
            os.read(self.stop_r, 1)  # blocks until the parent closes stop_w

        self.pids.append(fork(body))

    def wait(self, n: int) -> List[str]:
        out: List[str] = []
        buf = b""
        while len(out) < n:
            chunk = os.read(self.ready_r, 65536)
            if not chunk:
                raise RuntimeError("a child died during setup")
            buf += chunk
            *lines, buf = buf.split(b"\n")
            out += [ln.decode() for ln in lines]
        return out

    def stop(self) -> None:
        os.close(self.stop_w)
        for pid in self.pids:
            os.waitpid(pid, 0)


def build(args: argparse.Namespace, stage: Stage) -> Tuple[List[int], Optional[socket.socket]]:
    raise_nofile()
    t0 = time.monotonic()

    def idle() -> None:
        KEEP.extend(os.open("/dev/null", os.O_RDONLY) for _ in range(args.idle_fds))

    for _ in range(args.idle):
        stage.child(idle)
    stage.wait(args.idle)

    per_server = args.listeners // args.servers
    to_listeners = min(args.to_listeners, args.connections)
    per_listener = to_listeners // args.listeners

    def accept_from(ls: List[socket.socket], want: int) -> List[socket.socket]:
        sel = selectors.DefaultSelector()
        for s in ls:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        accepted: List[socket.socket] = []
        KEEP.append(accepted)
        while len(accepted) < want:
            for key, _ in sel.select(timeout=60):
                try:
                    while True:
                        accepted.append(key.fileobj.accept()[0])  # type: ignore[union-attr]
                except BlockingIOError:
                    pass
        return accepted

    def listen(n: int) -> List[socket.socket]:
        ls = []
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(4096)
            ls.append(s)
        KEEP.append(ls)
        return ls

    def server() -> str:
        raise_nofile()
        ls = listen(per_server)
        os.write(stage.ready_w, (json.dumps([s.getsockname()[1] for s in ls]) + "\n").encode())
        accept_from(ls, per_server * per_listener)
        return "accepted"

    # The other connections go to acceptors that close their listener once they have them:
    # sockets on a port nobody listens on, as outgoing connections to other hosts would be.
    others = args.connections - per_listener * args.listeners
    acceptors = -(-others // 15000) if others > 0 else 0
    per_acceptor = -(-others // acceptors) if acceptors else 0

    def acceptor() -> str:
        raise_nofile()
        ls = listen(1)
        os.write(stage.ready_w, (json.dumps([ls[0].getsockname()[1]]) + "\n").encode())
        accept_from(ls, per_acceptor)
        ls[0].close()
        return "accepted"

    for _ in range(args.servers):
        stage.child(server)
    ports = [p for line in stage.wait(args.servers) for p in json.loads(line)]
    for _ in range(acceptors):
        stage.child(acceptor)
    other_ports = [p for line in stage.wait(acceptors) for p in json.loads(line)]

    targets = [p for p in ports for _ in range(per_listener)]
    targets += [p for p in other_ports for _ in range(per_acceptor)][:others]
    share = -(-len(targets) // args.clients)

    def client(chunk: List[int]) -> Callable[[], str]:
        def run() -> str:
            raise_nofile()
            KEEP.extend(socket.create_connection(("127.0.0.1", p)) for p in chunk)
            return f"connected {len(chunk)}"
        return run

    for i in range(args.clients):
        stage.child(client(targets[i * share:(i + 1) * share]))
    stage.wait(args.clients + args.servers + acceptors)  # connected, and all accepted

    hidden = None
    if args.unattributable:
        # A listener referenced only by an SCM_RIGHTS message in flight: no process holds it.
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(16)
        hidden, peer = socket.socketpair()
        hidden.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                 array.array("i", [lst.fileno()]))])
        lst.close()
        hidden.close()  # the message stays queued on peer, which we keep
        hidden = peer
    print(f"setup: {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return ports, hidden


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as r:
        return bytes(r.read())


def measure(args: argparse.Namespace) -> Dict[str, List[float]]:
    from exporter.collectors.listeners import ListenersCollector, ListenersOptions
    from exporter.config import Config
    from exporter.sockets.snapshot import Snapshot, Wants

    def read_netlink(connections: bool = True) -> None:
        with Snapshot(source="netlink", wants=Wants(listeners=True,
                                                    connections=connections)) as snap:
            snap.inet("tcp")
            snap.inet("udp")

    cfg = Config(collectors=frozenset({"listeners"}))
    res: Dict[str, List[float]] = {k: [] for k in (
        "ss -tlnp", "first scrape", "later scrape", "  of which sock_diag",
        "  of which connections", "later, no connections", "first over HTTP",
        "later over HTTP", "  text format of one scrape")}
    quiet = ListenersCollector(cfg.replace(
        options={"listeners": ListenersOptions(connections=False)}))
    list(quiet.collect())
    walked: List[int] = []
    for _ in range(args.runs):
        res["ss -tlnp"].append(timed(lambda: subprocess.run(
            ["ss", "-tlnp"], stdout=subprocess.DEVNULL, check=True)))
        c = ListenersCollector(cfg)
        res["first scrape"].append(timed(lambda c=c: list(c.collect())))  # type: ignore[misc]
        walked.append(c.owners.stats.walked_processes)
        for _ in range(args.later):
            res["later scrape"].append(timed(lambda c=c: list(c.collect())))  # type: ignore[misc]
            assert c.owners.stats.walked_processes == 0, "a later scrape walked"
        res["  of which sock_diag"] += [timed(read_netlink) for _ in range(args.later)]
        res["  of which connections"] += [
            a - b for a, b in zip([timed(read_netlink) for _ in range(args.later)],
                                  [timed(lambda: read_netlink(False)) for _ in range(args.later)])]
        res["later, no connections"] += [timed(lambda: list(quiet.collect()))
                                         for _ in range(args.later)]

    from prometheus_client.exposition import generate_latest

    class Frozen:
        def __init__(self, metrics: List[object]) -> None:
            self.metrics = metrics

        def collect(self) -> List[object]:
            return self.metrics

    frozen = Frozen(list(ListenersCollector(cfg).collect()))
    res["  text format of one scrape"] += [timed(lambda: generate_latest(frozen))  # type: ignore[arg-type]
                                           for _ in range(args.later)]
    for _ in range(args.http_runs):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "exporter",
                                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=error"],
                                cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    http_get(base + "/-/healthy")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            url = base + "/metrics?collect[]=listeners"
            res["first over HTTP"].append(timed(lambda u=url: http_get(u)))  # type: ignore[misc]
            res["later over HTTP"] += [timed(lambda u=url: http_get(u))  # type: ignore[misc]
                                       for _ in range(args.later)]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    print(f"processes read by the first walk: {sorted(set(walked))}", file=sys.stderr)
    return res


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def census() -> Tuple[int, int]:
    """Processes and descriptors on the whole machine (what ss -p and the walk look through)."""
    nprocs = fds = 0
    for n in os.listdir("/proc"):
        if n.isdigit():
            try:
                fds += len(os.listdir(f"/proc/{n}/fd"))
                nprocs += 1
            except OSError:
                pass
    return nprocs, fds


def report(args: argparse.Namespace, res: Dict[str, List[float]], nprocs: int, fds: int) -> None:
    print(f"host: {nprocs} processes, {fds} descriptors; in the namespace: {args.listeners} "
          f"listeners{' + 1 unattributable' if args.unattributable else ''}, "
          f"{2 * args.connections} connected sockets ({args.to_listeners} connections to the "
          f"listeners); kernel {os.uname().release}, "
          f"{os.cpu_count()} CPUs")
    ss = statistics.median(res["ss -tlnp"])
    print(f"{'':24} {'median':>10} {'vs ss -tlnp':>12}  runs")
    for k, v in res.items():
        if not v:
            continue
        m = statistics.median(v)
        print(f"{k:24} {m * 1000:8.1f}ms {m / ss:11.3f}x  {len(v)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idle", type=int, default=300)
    ap.add_argument("--idle-fds", type=int, default=50)
    ap.add_argument("--listeners", type=int, default=1000)
    ap.add_argument("--servers", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50000,
                    help="loopback connections (two sockets each)")
    ap.add_argument("--to-listeners", type=int, default=5000,
                    help="how many of the connections go to the listeners (the rest to a port "
                         "whose listener has closed)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--later", type=int, default=20)
    ap.add_argument("--http-runs", type=int, default=3)
    ap.add_argument("--unattributable", action="store_true")
    ap.add_argument("--no-netns", action="store_true", help="use the current network namespace")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if not args.no_netns and not args.inside:
        ns = f"bench-listeners-{os.getpid()}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
            rc = subprocess.run(["ip", "netns", "exec", ns, sys.executable,
                                 os.path.abspath(__file__), "--inside", *sys.argv[1:]]).returncode
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=False)
        sys.exit(rc)

    stage = Stage()
    try:
        _ports, _hidden = build(args, stage)
        nprocs, fds = census()
        res = measure(args)
    finally:
        stage.stop()
    report(args, res, nprocs, fds)


if __name__ == "__main__":
    main()
