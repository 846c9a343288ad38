"""Owners of shared listening sockets after pids have wrapped, in pid namespaces made here.

In a new pid namespace (``unshare --pid --fork --mount-proc``) the test sets
``/proc/sys/kernel/ns_last_pid`` just below ``pid_max``, so that the next process gets the highest
pid there is and the one after it wraps to a low pid: a worker forked by its master then has the
lower pid, as on a long-running host. The owner of the socket must not depend on that.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from typing import Any, Dict

import pytest
from helpers import ROOT

from exporter.listeners.owners import newest_first
from exporter.procfs.pid_stat import PidStat

in_namespace = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare (util-linux) for a pid namespace")

# Runs as pid 1 of the new namespace. The master is the next process, so it gets pid_max - 1;
# its forked worker gets the next pid after the wrap.
SCENARIO = textwrap.dedent("""
    import json, os, socket, subprocess, sys
    from exporter.listeners.owners import OwnerCache

    MASTER = '''
    import os, socket, sys
    def name(n):
        with open("/proc/self/comm", "w") as f:
            f.write(n)
    name("wrap-master")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        name("wrap-worker")
        os.write(w, b"x")
        os.close(w)
        sys.stdin.read()
        os._exit(0)
    os.close(w)
    os.read(r, 1)  # the worker has its name
    os.close(r)
    print(os.fstat(srv.fileno()).st_ino, os.getpid(), pid, flush=True)
    sys.stdin.read()
    os.waitpid(pid, 0)
    srv.close()
    '''

    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(pid_max - 2))
    master = subprocess.Popen([sys.executable, "-c", MASTER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        inode, mpid, wpid = map(int, master.stdout.readline().split())
        cache = OwnerCache("/proc")
        first = cache.owners({inode})[inode]
        walked = cache.stats.walked_processes
        again = cache.owners({inode})[inode]
        out = {"pid_max": pid_max, "master": mpid, "worker": wpid,
               "owners": sorted([o.pid, o.identity.name] for o in first),
               "walked": walked, "again": sorted([o.pid, o.identity.name] for o in again),
               "walked_again": cache.stats.walked_processes,
               "verified_again": cache.stats.verified}
    finally:
        master.stdin.close()
        master.wait(timeout=30)
        master.stdout.close()
    print(json.dumps(out))
""")


def in_pid_namespace(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", *cmd], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": ROOT})


@in_namespace
def test_worker_with_a_wrapped_pid_is_found() -> None:
    r = in_pid_namespace(sys.executable, "-c", SCENARIO)
    assert r.returncode == 0, r.stderr
    got: Dict[str, Any] = json.loads(r.stdout.splitlines()[-1])
    # The namespace really wrapped: the master has the highest pid, its worker a low one.
    assert got["master"] == got["pid_max"] - 1 and got["worker"] < got["master"], got
    # Both are found: the worker (the newest holder) and its master, which holds the socket too.
    assert got["owners"] == sorted([[got["master"], "wrap-master"], [got["worker"], "wrap-worker"]])
    assert got["walked"] >= 1
    # A later scrape reads no process's descriptors: one readlink per holder confirms them.
    assert got["again"] == got["owners"]
    assert (got["walked_again"], got["verified_again"]) == (0, 2)


@in_namespace
@pytest.mark.parametrize("below", [2, 3])
def test_shared_socket_test_passes_after_pids_wrap(below: int) -> None:
    """The listeners test of a socket passed to two programs, run where pids wrap during it:
    pytest starts just below pid_max, and both programs it starts (2) or the second (3) get
    wrapped pids."""
    script = ("import subprocess, sys\n"
              "pid_max = int(open('/proc/sys/kernel/pid_max').read())\n"
              f"open('/proc/sys/kernel/ns_last_pid', 'w').write(str(pid_max - {below}))\n"
              "sys.exit(subprocess.call([sys.executable, '-m', 'pytest', '-q', '-p', "
              "'no:cacheprovider', "
              "'tests/test_listeners.py::test_owner_gone_is_looked_for_again']))\n")
    r = in_pid_namespace(sys.executable, "-c", script)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout, r.stdout


def test_newest_first_orders_by_start_time_then_by_descent() -> None:
    def st(pid: int, ppid: int, start: int) -> PidStat:
        return PidStat(pid, f"p{pid}", "S", ppid, start)

    stats = [st(1, 0, 5), st(32000, 1, 900), st(310, 32000, 950),  # a worker with a wrapped pid
             st(305, 32000, 900),  # forked in its master's clock tick: still after it
             st(306, 305, 900),  # and its own child, in the same tick
             st(400, 1, 900)]  # unrelated, same tick and depth: by pid
    assert newest_first(stats) == [310, 306, 305, 32000, 400, 1]
    assert newest_first([]) == []
