"""A real Prometheus scrapes the exporter over TLS (client certificate required) with basic
auth, using the job from deploy/prometheus/prometheus.yml; the target is up, and the same job
with a wrong password is down with a 401."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import urllib.parse
from typing import Any, Dict, Iterator, Optional

import pytest
import yaml
from helpers import ROOT, free_port, http_get, poll, stop
from tlshelpers import bcrypt_hash, exporter_with, make_pki, tls_web_config

PROM_EXAMPLE = os.path.join(ROOT, "deploy", "prometheus", "prometheus.yml")
EXAMPLE_DIR = "/etc/prometheus/netstat-exporter"


@pytest.fixture()
def prometheus_bin() -> str:
    exe = shutil.which("prometheus")
    assert exe, "prometheus is not installed (scripts/test-all installs Debian's prometheus)"
    return exe


@pytest.fixture()
def exporter(tmp_path: os.PathLike[str]) -> Iterator[Dict[str, Any]]:
    d = os.path.join(str(tmp_path), "exporter")
    os.mkdir(d)
    pki = make_pki(d)
    password = "scrape-" + os.urandom(6).hex()
    cfg = tls_web_config(pki, "web.yml", [
        "  client_auth_type: RequireAndVerifyClientCert",
        "  client_ca_file: ca.crt",
        "basic_auth_users:",
        f"  prometheus: '{bcrypt_hash(password, 8)}'",
    ])
    with exporter_with(f"--web.config.file={cfg}") as ex:
        yield {"port": ex.port, "pki": pki, "password": password, "proc": ex}


def prometheus_config(tmp: str, port: int, pki: Any, password: str) -> str:
    """The example's TLS job, pointed at the test's exporter, files and password; plus the same
    job with a wrong password as a control."""
    # Files at the names the example uses, in a directory of the test's own.
    files = os.path.join(tmp, "prom-files")
    os.mkdir(files)
    shutil.copy(pki.ca.cert, os.path.join(files, "ca.crt"))
    shutil.copy(pki.client.cert, os.path.join(files, "client.crt"))
    shutil.copy(pki.client.key, os.path.join(files, "client.key"))
    with open(os.path.join(files, "password"), "w") as f:
        f.write(password)
    with open(os.path.join(files, "wrong-password"), "w") as f:
        f.write(password + "x")
    with open(PROM_EXAMPLE) as f:
        text = f.read()
    # The exporter here requires a client certificate, as deploy/web-config.example.yml does:
    # uncomment the example's client certificate lines, as its comment says to.
    assert "      # cert_file: " in text and "      # key_file: " in text
    text = text.replace("      # cert_file: ", "      cert_file: ").replace(
        "      # key_file: ", "      key_file: ")
    cfg = yaml.safe_load(text.replace(EXAMPLE_DIR, files))
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "netstat-tls"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    bad = copy.deepcopy(job)
    bad["job_name"] = "netstat-tls-wrong-password"
    bad["basic_auth"]["password_file"] = os.path.join(files, "wrong-password")
    cfg["scrape_configs"] = [job, bad]
    cfg["global"].update({"scrape_interval": "1s", "scrape_timeout": "1s",
                          "evaluation_interval": "1s"})
    cfg.pop("rule_files", None)  # rules are checked by promtool elsewhere
    path = os.path.join(tmp, "prometheus.yml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


def test_prometheus_scrapes_over_tls_with_basic_auth(
        tmp_path: os.PathLike[str], exporter: Dict[str, Any], prometheus_bin: str) -> None:
    tmp = str(tmp_path)
    cfg = prometheus_config(tmp, exporter["port"], exporter["pki"], exporter["password"])
    check = subprocess.run(["promtool", "check", "config", cfg], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    proc = subprocess.Popen(
        [prometheus_bin, f"--config.file={cfg}", f"--storage.tsdb.path={tmp}/data",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        def targets() -> Optional[Dict[str, Dict[str, Any]]]:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {proc.stderr.read() if proc.stderr else ''}")
            status, _, body = http_get(api + "/targets", timeout=5)
            if status != 200:
                return None
            active = json.loads(body)["data"]["activeTargets"]
            by_job = {t["scrapePool"]: t for t in active}
            if len(by_job) == 2 and all(t["health"] != "unknown" for t in by_job.values()):
                seen.update(by_job)
                # The first scrape walks every process for the listeners' owners; on a loaded
                # machine it can outlast the 1 s scrape timeout, so wait for a later one.
                if by_job["netstat-tls"]["health"] == "up":
                    return by_job
            return None

        seen: Dict[str, Dict[str, Any]] = {}
        try:
            by_job = poll(targets, timeout=60, interval=0.25, what="the TLS target up")
        except AssertionError:
            raise AssertionError(f"never up: {seen.get('netstat-tls', {}).get('lastError')}") \
                from None
        good, bad = by_job["netstat-tls"], by_job["netstat-tls-wrong-password"]
        assert good["health"] == "up", good.get("lastError")
        assert good["scrapeUrl"].startswith("https://127.0.0.1:")
        assert bad["health"] == "down" and "401" in bad["lastError"], bad

        def sockets_series() -> int:
            q = urllib.parse.quote('count(netstat_sockets{job="netstat"})')
            status, _, body = http_get(f"{api}/query?query={q}", timeout=5)
            result = json.loads(body)["data"]["result"] if status == 200 else []
            return int(float(result[0]["value"][1])) if result else 0

        assert poll(sockets_series, timeout=30, what="exporter metrics stored") > 0
    finally:
        stop(proc)
        if proc.stderr is not None:
            proc.stderr.close()
