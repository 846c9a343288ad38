"""End to end for pods: the real exporter (netns collector, both tiers) reads three "pods" this
test makes (a network namespace each, with a process placed in a kubelet-style cgroup
/kubepods-…/pod<uid>/<container id>; the third is a static pod, under its config hash), a real
Prometheus scrapes it together with a static kube-state-metrics exposition served on loopback
(kube_pod_info{uid}, and the static pod's mirror annotation in kube_pod_annotations), and
evaluates the shipped rules (shortened windows). The recording rules must name the pods, the
per-pod alerts fire for the pod in trouble and not for the others, and every query of the Pods
dashboard returns data.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import threading
import uuid
from contextlib import ExitStack, contextmanager
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import yaml
from alertrules import PrometheusAPI, load_generator, write_rule_files
from helpers import free_port, have, http_get, poll, running_exporter, stop
from nshelpers import NetNS
from test_dashboards import label_values_inner, load, queries, substitute

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="creates namespaces and cgroups"),
              pytest.mark.skipif(not have("prometheus"), reason="prometheus not installed")]

gen = load_generator()
CGROUP_ROOT = "/sys/fs/cgroup/pids"  # cgroup v1 pids hierarchy: no controller settings needed
CART, WEB = str(uuid.uuid4()), str(uuid.uuid4())
# A static pod runs under its config hash (32 hex digits, in its cgroup path); the API server
# and kube_pod_info know its mirror pod by another UID, and the hash from its annotation.
STATIC, MIRROR = uuid.uuid4().hex, str(uuid.uuid4())
PODS = {CART: ("shop", "cart-7d9f"), WEB: ("shop", "web-0"), STATIC: ("kube-system", "etcd-node1")}
CLOSE_WAIT = 3


def cgroup_root() -> str:
    if os.path.isdir(CGROUP_ROOT):
        return CGROUP_ROOT
    return "/sys/fs/cgroup"  # cgroup v2


@contextmanager
def pod_process(ns: NetNS, uid: str) -> Iterator[int]:
    """A process in ``ns`` whose cgroup path is the cgroupfs driver's for pod ``uid``."""
    top = os.path.join(cgroup_root(), f"kubepods-test{os.getpid()}")
    leaf = os.path.join(top, f"pod{uid}", uuid.uuid4().hex + uuid.uuid4().hex)
    os.makedirs(leaf)
    p = ns.popen("sleep", "600", stdin=subprocess.DEVNULL)
    try:
        with open(os.path.join(leaf, "cgroup.procs"), "w") as f:
            f.write(str(p.pid))
        with open(f"/proc/{p.pid}/cgroup") as f:
            assert f"/pod{uid}/" in f.read()
        yield p.pid
    finally:
        p.kill()
        p.wait(timeout=30)

        def removed() -> bool:
            for d in (leaf, os.path.dirname(leaf), top):
                try:
                    os.rmdir(d)
                except FileNotFoundError:
                    pass
                except OSError:
                    if d != top:  # another pod of this test may still be in top
                        return False
            return True

        poll(removed, timeout=10, what="test cgroups removed")


def trouble(close_wait: int, overflow: bool) -> List[socket.socket]:
    """Inside a namespace: ``close_wait`` server sockets in CLOSE_WAIT (their clients shut down
    writing but stay open, so nothing times out), and with ``overflow`` a listener whose accept
    queue is full and one more client whose SYNs it keeps dropping."""
    keep: List[socket.socket] = []
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    keep.append(srv)
    for _ in range(close_wait):
        c = socket.create_connection(srv.getsockname(), timeout=10)
        a, _ = srv.accept()
        c.shutdown(socket.SHUT_WR)
        keep += [c, a]
    # One connection that keeps talking (see chatter), so the pod sends segments.
    c = socket.create_connection(srv.getsockname(), timeout=10)
    a, _ = srv.accept()
    keep += [c, a]
    if overflow:
        full = socket.socket()
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        keep.append(full)
        for _ in range(2):  # the first fills the queue, the second is dropped and retried
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(full.getsockname())
            keep.append(c)
    return keep


@contextmanager
def chatter(c: socket.socket, a: socket.socket) -> Iterator[None]:
    """Exchange a byte every 0.1 s over an established pair (created inside a pod's namespace)
    for at most two minutes, so the pod's segment counters and retransmit ratio move."""
    done = threading.Event()

    def run() -> None:
        for _ in range(1200):
            if done.wait(0.1):
                return
            c.sendall(b"x")
            a.recv(1)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join(timeout=10)


@contextmanager
def kube_state_metrics() -> Iterator[int]:
    """A static kube-state-metrics exposition on loopback: kube_pod_info of the pods (the
    static one by its mirror pod's UID), and kube_pod_annotations with the mirror annotation
    (as with --metric-annotations-allowlist=pods=[kubernetes.io/config.mirror])."""
    lines = ["# HELP kube_pod_info Information about pod.", "# TYPE kube_pod_info gauge"]
    for uid, (namespace, pod) in PODS.items():
        lines.append(f'kube_pod_info{{namespace="{namespace}",pod="{pod}",'
                     f'uid="{MIRROR if uid == STATIC else uid}",node="node1"}} 1')
    lines += ["# HELP kube_pod_annotations Kubernetes annotations converted to Prometheus labels.",
              "# TYPE kube_pod_annotations gauge"]
    for uid, (namespace, pod) in PODS.items():
        mirror = uid if uid == STATIC else ""
        lines.append(f'kube_pod_annotations{{namespace="{namespace}",pod="{pod}",'
                     f'uid="{MIRROR if uid == STATIC else uid}",'
                     f'annotation_kubernetes_io_config_mirror="{mirror}"}} 1')
    body = ("\n".join(lines) + "\n").encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def settings() -> Dict[str, str]:
    """The shipped settings with every `for:` cut to 2s. Windows stay as shipped: the Pods
    dashboard reads the rules by their names (…:increase5m), and rate() and increase() over a
    5m window already answer from two samples."""
    s = {name: "2s" for name in gen.DEFAULTS if name.endswith("_for")}
    s.update(pod_close_wait_max=str(CLOSE_WAIT - 1))
    return s


@pytest.fixture(scope="module")
def stack(tmp_path_factory: Any) -> Iterator[Tuple[PrometheusAPI, str]]:
    tmp = str(tmp_path_factory.mktemp("netns-e2e"))
    with ExitStack() as es:
        for uid, overflow in ((CART, True), (WEB, False), (STATIC, False)):
            ns = es.enter_context(NetNS("pod"))
            es.enter_context(pod_process(ns, uid))
            keep = ns.call(trouble, CLOSE_WAIT if uid == CART else 0, overflow)
            es.callback(lambda k=keep: [s.close() for s in k])
            es.enter_context(chatter(*keep[1 + 2 * (CLOSE_WAIT if uid == CART else 0):][:2]))
        ksm = es.enter_context(kube_state_metrics())
        ex = es.enter_context(running_exporter(
            "--collector.disable-defaults", "--collector.netns", "--collector.netns.sockets",
            "--collector.netns.time-budget=1.5"))
        instance = f"127.0.0.1:{ex.port}"
        rule_files = write_rule_files(tmp, gen.render(settings()))
        port = free_port()
        config = os.path.join(tmp, "prometheus.yml")
        with open(config, "w", encoding="utf-8") as f:
            yaml.safe_dump({
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                           "scrape_timeout": "1s"},
                "rule_files": rule_files,
                "scrape_configs": [
                    {"job_name": "netstat", "static_configs": [{"targets": [instance]}]},
                    {"job_name": "kube-state-metrics",
                     "static_configs": [{"targets": [f"127.0.0.1:{ksm}"]}]}]}, f)
        log = es.enter_context(open(os.path.join(tmp, "prometheus.log"), "w+"))
        proc = subprocess.Popen(["prometheus", f"--config.file={config}",
                                 f"--storage.tsdb.path={os.path.join(tmp, 'data')}",
                                 f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=log, stderr=subprocess.STDOUT)

        es.callback(stop, proc)
        prom = PrometheusAPI(f"http://127.0.0.1:{port}")

        def ready() -> bool:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError("prometheus exited: " + log.read()[-2000:])
            return http_get(f"{prom.base}/-/ready", timeout=2)[0] == 200

        poll(ready, timeout=30, interval=0.2, what="prometheus to be ready")
        poll(lambda: len(prom.query("up == 1")) == 2, timeout=30, interval=0.5,
             what="both targets scraped")
        yield prom, instance


def by_pod(rows: List[Dict[str, Any]]) -> Dict[str, float]:
    return {r["metric"]["pod"]: float(r["value"][1]) for r in rows}


def test_recording_rules_name_pods_from_kube_pod_info(stack: Tuple[PrometheusAPI, str]) -> None:
    prom, instance = stack
    rows = poll(lambda: prom.query("pod:netstat_netns_tcp_close_wait:sum") or None,
                timeout=30, interval=0.5, what="the per-pod rules")
    assert by_pod(rows) == {"cart-7d9f": CLOSE_WAIT, "web-0": 0, "etcd-node1": 0}
    for r in rows:
        uid = r["metric"]["netns"]
        assert (r["metric"]["namespace"], r["metric"]["pod"]) == PODS[uid]
        assert r["metric"]["instance"] == instance and r["metric"]["job"] == "netstat"
    states = prom.query('pod:netstat_netns_tcp_sockets:sum{pod="cart-7d9f"}')
    assert {r["metric"]["state"] for r in states} >= {"close_wait", "listen", "established"}
    # The joined TIME_WAIT is the exporter's own figure for that namespace.
    joined = prom.query('pod:netstat_netns_tcp_time_wait:sum{pod="web-0"}')
    raw = prom.query(f'netstat_netns_sockstat_tcp_time_wait_sockets{{netns="{WEB}"}}')
    assert [r["value"][1] for r in joined] == [r["value"][1] for r in raw]


def test_pod_alerts_fire_for_the_pod_in_trouble_only(stack: Tuple[PrometheusAPI, str]) -> None:
    prom, _ = stack
    for name in ("NetstatPodCloseWaitAccumulating", "NetstatPodListenDrops"):
        alerts = poll(lambda n=name: prom.alerts(n), timeout=40, interval=0.5,
                      what=f"{name} pending or firing")
        assert {(a["labels"]["namespace"], a["labels"]["pod"]) for a in alerts} == \
            {("shop", "cart-7d9f")}, alerts
        assert all(a["labels"]["netns"] == CART for a in alerts)


def test_every_pods_dashboard_query_returns_data(stack: Tuple[PrometheusAPI, str]) -> None:
    prom, instance = stack
    d = load("netstat-pods.json")
    todo = {}
    for title, ref, expr, _ in queries(d):
        expr = expr.replace("$namespace", "shop").replace("$pod", "cart-7d9f")
        todo[(title, ref)] = substitute(expr, "netstat", instance)
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            inner = label_values_inner(v["query"]).replace("$namespace", "shop")
            todo[(f"variable {v['name']}", "query")] = substitute(inner, "netstat", instance)

    def all_data() -> bool:
        return all(prom.query(e) for e in todo.values())

    try:
        poll(all_data, timeout=40, interval=1, what="every Pods dashboard query to have data")
    except AssertionError:
        empty = [k for k, e in todo.items() if not prom.query(e)]
        raise AssertionError(f"queries without data: {empty}") from None
    pods = {r["metric"]["pod"] for r in prom.query(todo[("variable pod", "query")])}
    assert pods >= {"cart-7d9f", "web-0"}
