"""Fuzzing with a fixed seed and a bounded number of cases: mutated /proc trees through every
collector, mutated web config and expected-listeners files through their loaders, and a few of
each through the real command. Whatever the input, a scrape completes (a collector may fail and
report success 0), a loader raises only its one-line error type, and nothing prints a traceback.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from typing import Iterator, List, Optional, Tuple

import pytest
from helpers import FIXTURES, run_cli
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tlshelpers import PKI, bcrypt_hash

hypothesis = pytest.importorskip("hypothesis")  # the test extra installs it
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from exporter.collectors.api import Collector, specs  # noqa: E402
from exporter.collectors.listeners import ListenersOptions  # noqa: E402
from exporter.collectors.ports import PortsOptions  # noqa: E402
from exporter.collectors.routes import RoutesOptions  # noqa: E402
from exporter.collectors.sockets import SocketsOptions  # noqa: E402
from exporter.collectors.tcpevents import TcpEventsCollector  # noqa: E402
from exporter.config import Config  # noqa: E402
from exporter.listeners import expected  # noqa: E402
from exporter.scrape import Exporter  # noqa: E402
from exporter.web.errors import WebConfigError  # noqa: E402
from exporter.web.state import load_settings  # noqa: E402


def fuzz(examples: int) -> settings:
    """A fixed seed (derandomize), a bounded count, no example database written to disk."""
    return settings(derandomize=True, deadline=None, database=None, max_examples=examples,
                    suppress_health_check=list(HealthCheck))


KINDS = ("truncate", "cut_line", "dup_line", "insert", "replace", "number", "token", "empty",
         "delete")
# Pieces of YAML syntax that reach the loader's less travelled paths: complex keys, anchors,
# aliases, merge keys, tags, impossible dates, deep flow nesting, documents and directives.
YAML_TOKENS = (b"? [a, b]\n: ", b"[[[[[[", b"{{", b"&x ", b"*x", b"<<: *x\n", b"!!binary ",
               b"!!python/object:os.system ", b"2024-13-45", b"- ", b": ", b"\t", b"'", b'"',
               b"|\n", b"%YAML 1.1\n---\n", b"\n---\n", b"\n...\n", b"!!float ", b"0x_",
               b"\xef\xbb\xbf", b"\x00", b"[" * 40)
WEIRD_NUMBERS = (b"-1", b"99999999999999999999999999", b"0x", b"nan", b"", b"1e9", b"\xff")


def mutate(data: bytes, kind: str, at: int, blob: bytes) -> bytes:
    pos = at % (len(data) + 1)
    if kind == "truncate":
        return data[:pos]
    if kind in ("cut_line", "dup_line"):
        start = data.rfind(b"\n", 0, pos) + 1
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end + 1
        line = data[start:end]
        return data[:start] + (line + line if kind == "dup_line" else b"") + data[end:]
    if kind == "insert":
        return data[:pos] + blob + data[pos:]
    if kind == "replace":
        return data[:pos] + blob + data[pos + len(blob):]
    if kind == "token":
        return data[:pos] + YAML_TOKENS[at % len(YAML_TOKENS)] + data[pos:]
    if kind == "number":
        m = re.compile(rb"\d+").search(data, pos) or re.compile(rb"\d+").search(data)
        if m is None:
            return data
        return data[:m.start()] + WEIRD_NUMBERS[at % len(WEIRD_NUMBERS)] + data[m.end():]
    return b""  # empty


Mutation = Tuple[int, str, int, bytes]
mutations = st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(KINDS),
                               st.integers(0, 1 << 20), st.binary(min_size=1, max_size=12)),
                     min_size=1, max_size=4)


def apply(root: str, files: List[str], muts: List[Mutation]) -> List[str]:
    """Mutate files under ``root``; the relative paths touched."""
    touched = []
    for which, kind, at, blob in muts:
        rel = files[which % len(files)]
        path = os.path.join(root, rel)
        touched.append(rel)
        if not os.path.lexists(path):
            continue
        if kind == "delete":
            os.unlink(path)
            continue
        if os.path.islink(path):
            os.unlink(path)  # a descriptor pointing somewhere unexpected
            os.symlink(blob.decode("latin-1").replace("\x00", "") or "x", path)
            continue
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(mutate(data, kind, at, blob))
    return touched


def restore(base: str, root: str, touched: List[str]) -> None:
    """Put the touched files of ``root`` back as they are in ``base``."""
    for rel in touched:
        src, dst = os.path.join(base, rel), os.path.join(root, rel)
        if os.path.lexists(dst):
            os.unlink(dst)
        if os.path.islink(src):
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)


# --- /proc trees through every collector ---

@pytest.fixture(scope="module")
def proc_base() -> Iterator[str]:
    """One tree with every file the collectors read: protocol counters, routes, interfaces and
    sockets of the 'new' kernel fixture, sockstat and unix sockets of the live capture, and the
    listeners fixture's processes with their descriptors."""
    tmp = tempfile.mkdtemp(prefix=f"fuzz-proc-{os.getpid()}-")
    root = os.path.join(tmp, "proc")
    shutil.copytree(os.path.join(FIXTURES, "proc", "new"), root, symlinks=True)
    for name in os.listdir(os.path.join(FIXTURES, "proc", "live", "net")):
        dst = os.path.join(root, "net", name)
        if not os.path.exists(dst):
            shutil.copy(os.path.join(FIXTURES, "proc", "live", "net", name), dst)
    lst = os.path.join(FIXTURES, "listeners", "proc")
    for name in os.listdir(lst):
        if name.isdigit():
            shutil.copytree(os.path.join(lst, name), os.path.join(root, name), symlinks=True)
            os.makedirs(os.path.join(root, name, "fd"), exist_ok=True)
    yield root
    shutil.rmtree(tmp, ignore_errors=True)


def _files(root: str) -> List[str]:
    out = []
    for d, _dirs, names in os.walk(root):
        out += [os.path.relpath(os.path.join(d, n), root) for n in names]
    return sorted(out)


def _config(procfs: str) -> Config:
    return Config(collectors=frozenset(specs()), procfs=procfs,
                  sysfs=os.path.join(FIXTURES, "sys", "new"), disable_exporter_metrics=True,
                  options={"sockets": SocketsOptions(source="procfs"),
                           "ports": PortsOptions(source="procfs", top_destinations=5),
                           "listeners": ListenersOptions(source="procfs"),
                           "routes": RoutesOptions(table=True)})


def _scrape(procfs: str, tcpevents: Optional[Collector] = None) -> None:
    """One scrape through a fresh Exporter; ``tcpevents``: that collector, built once by the
    caller (loading and closing its BPF programs takes a third of a second, for each case)."""
    config = _config(procfs)
    if tcpevents is not None:
        config = dataclasses.replace(config, collectors=config.collectors - {"tcpevents"})
    extra = {"tcpevents": tcpevents} if tcpevents is not None else None
    text = generate_latest(Exporter(config, extra=extra).target()).decode()
    for fam in text_string_to_metric_families(text):  # a valid exposition, whatever happened
        if fam.name == "netstat_exporter_collector_success":
            assert {s.value for s in fam.samples} <= {0.0, 1.0}


def test_unmutated_tree_scrapes_cleanly(proc_base: str) -> None:
    text = generate_latest(Exporter(_config(proc_base)).target()).decode()
    assert 'netstat_exporter_collector_success{collector="listeners"} 1.0' in text
    assert 'netstat_exporter_collector_success{collector="sockets"} 1.0' in text


@pytest.fixture(scope="module")
def proc_work(proc_base: str) -> Iterator[str]:
    """A copy of the tree that each case mutates and puts back."""
    tmp = tempfile.mkdtemp(prefix=f"fuzz-work-{os.getpid()}-")
    root = os.path.join(tmp, "proc")
    shutil.copytree(proc_base, root, symlinks=True)
    yield root
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def tcpevents_on_work(proc_work: str) -> Iterator[Collector]:
    """The tcpevents collector on the mutated tree, its BPF programs loaded once for every
    case (it reads the tree's sockets at each scrape, like the others)."""
    c = TcpEventsCollector(_config(proc_work))
    yield c
    c.close()


@fuzz(120)
@given(muts=mutations)
def test_mutated_proc_tree_never_breaks_a_scrape(proc_base: str, proc_work: str,
                                                 tcpevents_on_work: Collector,
                                                 muts: List[Mutation]) -> None:
    touched = apply(proc_work, _files(proc_base), muts)
    try:
        _scrape(proc_work, tcpevents_on_work)
    finally:
        restore(proc_base, proc_work, touched)


# --- web config and expected-listeners files through their loaders ---


def _web_base(pki: PKI) -> bytes:
    return "\n".join([
        "tls_server_config:",
        "  cert_file: server.crt",
        "  key_file: server.key",
        "  client_auth_type: VerifyClientCertIfGiven",
        "  client_ca_file: ca.crt",
        "  min_version: TLS12",
        "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]",
        "  curve_preferences: [CurveP256]",
        "http_server_config:",
        "  headers:",
        "    X-Frame-Options: deny",
        "basic_auth_users:",
        f"  alice: '{bcrypt_hash('pw', 4)}'",
        "",
    ]).encode()


@fuzz(150)
@given(muts=mutations)
def test_mutated_web_config_is_loaded_or_refused_in_one_line(pki: PKI,
                                                             muts: List[Mutation]) -> None:
    path = os.path.join(pki.dir, f"fuzz-{os.getpid()}.yml")
    with open(path, "wb") as f:
        f.write(_web_base(pki))
    apply(pki.dir, [os.path.basename(path)], [(0, k, a, b) for _w, k, a, b in muts
                                              if k != "delete"])
    try:
        load_settings(path)
    except WebConfigError as e:
        assert "\n" not in str(e)


@fuzz(150)
@given(muts=mutations, toml=st.booleans())
def test_mutated_expected_file_is_loaded_or_refused_in_one_line(
        tmp_path_factory: pytest.TempPathFactory, muts: List[Mutation], toml: bool) -> None:
    name = "good.toml" if toml else "good.yaml"
    d = str(tmp_path_factory.mktemp("expected"))
    shutil.copy(os.path.join(FIXTURES, "listeners", "expected", name), d)
    apply(d, [name], [(0, k, a, b) for _w, k, a, b in muts if k != "delete"])
    try:
        expected.load(os.path.join(d, name))
    except expected.ExpectedFileError as e:
        assert "\n" not in str(e)


# --- and through the real command: no traceback, no crash ---

@pytest.mark.parametrize("seed", range(4))
def test_mutated_inputs_through_the_command(proc_base: str, pki: PKI, tmp_path: os.PathLike[str],
                                            seed: int) -> None:
    import random
    rnd = random.Random(seed)
    root = os.path.join(str(tmp_path), "proc")
    shutil.copytree(proc_base, root, symlinks=True)
    files = _files(root)
    muts = [(rnd.randrange(10_000), rnd.choice(KINDS), rnd.randrange(1 << 20),
             bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 12)))) for _ in range(6)]
    apply(root, files, muts)
    r = run_cli("--collector.routes.table", "--collector.ports.top-destinations=5",
                "--collector.sockets.source=procfs", "--collector.ports.source=procfs",
                "--collector.listeners.source=procfs", f"--path.procfs={root}",
                f"--path.sysfs={os.path.join(FIXTURES, 'sys', 'new')}", "dump", timeout=60)
    assert r.returncode == 0, r.stderr[:2000]
    assert "Traceback" not in r.stderr
    web = os.path.join(pki.dir, f"fuzz-cli-{seed}.yml")
    with open(web, "wb") as f:
        f.write(_web_base(pki))
    apply(pki.dir, [os.path.basename(web)], [(0, k, a, b) for _w, k, a, b in muts
                                             if k != "delete"])
    r = run_cli("--web.listen-address=127.0.0.1:0", f"--web.config.file={web}",
                "--collector.disable-defaults", "--version", timeout=30)
    assert "Traceback" not in r.stderr
