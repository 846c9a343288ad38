"""``show --url``: a running exporter with TLS and basic auth read from another process, as
through ``kubectl port-forward``; and every way that can go wrong ends in one line and exit 1
(exit 2 for a URL that cannot be one)."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
from typing import Any, Dict, Iterator, List, Optional

import pytest
from helpers import parse, run_cli
from tlshelpers import PKI, bcrypt_hash, client_context, exporter_with, https_get, tls_web_config

from exporter.docs import EXPORTER_METRICS  # the collection's and the HTTP server's own

USER, PASSWORD = "alice", "s3cret with spaces"



@pytest.fixture(scope="module")
def password_file(pki: PKI) -> str:
    path = os.path.join(pki.dir, "password")
    with open(path, "w") as f:
        f.write(PASSWORD + "\n")
    return path


@pytest.fixture(scope="module")
def port(pki: PKI) -> Iterator[int]:
    cfg = tls_web_config(pki, "show.yml", [
        "basic_auth_users:",
        f"  {USER}: {bcrypt_hash(PASSWORD, cost=4)}",
    ])
    with exporter_with(f"--web.config.file={cfg}") as ex:
        yield ex.port


def show(*args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    return run_cli("show", *args, env=env)


def ok_json(r: subprocess.CompletedProcess) -> Dict[str, Any]:
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def one_line_failure(r: subprocess.CompletedProcess, code: int = 1) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("netstat-exporter: error: "), r.stderr
    return r.stderr


def test_listeners_through_tls_and_basic_auth(pki: PKI, port: int, password_file: str) -> None:
    doc = ok_json(show("listeners", f"--url=https://127.0.0.1:{port}",
                       f"--tls.ca-file={pki.ca.cert}", f"--auth.username={USER}",
                       f"--auth.password-file={password_file}", "-o", "json"))
    assert doc["source"] == f"https://127.0.0.1:{port}/metrics"
    rows = {r["local"]: r for r in doc["sections"]["listeners"]["rows"]}
    # The exporter sees itself listening.
    assert rows[f"127.0.0.1:{port}"]["protocol"] == "tcp"
    assert rows[f"127.0.0.1:{port}"]["process"].startswith("python")


def test_counters_are_those_the_exporter_serves(pki: PKI, port: int, password_file: str) -> None:
    doc = ok_json(show("counters", f"--url=https://127.0.0.1:{port}/metrics",
                       f"--tls.ca-file={pki.ca.cert}", f"--auth.username={USER}",
                       f"--auth.password-file={password_file}", "-o", "json"))
    shown = {row["metric"] for sec in doc["sections"].values() for row in sec["rows"]}
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    # What the protocols collector alone serves, less the exporter's own telemetry.
    status, _, body = https_get(port, "/metrics?collect[]=protocols", ctx=client_context(pki),
                                headers={"Authorization": f"Basic {token}"})
    assert status == 200
    own = {m.name for m in EXPORTER_METRICS}
    served = {n for n, _, _ in parse(body.decode())
              if n not in own and not n.startswith(("process_", "python_"))}
    assert shown and shown == served


def test_password_from_the_environment_and_another_server_name(pki: PKI, port: int) -> None:
    env = dict(os.environ, NETSTAT_EXPORTER_AUTH_PASSWORD=PASSWORD)
    # As through a port-forward: connect to one name, check the certificate for another.
    doc = ok_json(show("states", f"--url=https://127.0.0.1:{port}", "--tls.server-name=localhost",
                       f"--tls.ca-file={pki.ca.cert}", f"--auth.username={USER}", "-o", "json",
                       env=env))
    assert doc["sections"]["tcp"]["rows"]
    err = one_line_failure(show("states", f"--url=https://127.0.0.1:{port}",
                                "--tls.server-name=elsewhere.example",
                                f"--tls.ca-file={pki.ca.cert}", f"--auth.username={USER}",
                                env=env))
    assert "not trusted" in err


@pytest.mark.parametrize("case", ["wrong password", "no credentials", "other CA", "no CA",
                                  "plain http"])
def test_failures_are_one_line(case: str, pki: PKI, port: int, tmp_path: Any) -> None:
    wrong = os.path.join(str(tmp_path), "wrong")
    with open(wrong, "w") as f:
        f.write("not it\n")
    args: List[str] = {
        "wrong password": [f"--url=https://127.0.0.1:{port}", f"--tls.ca-file={pki.ca.cert}",
                           f"--auth.username={USER}", f"--auth.password-file={wrong}"],
        "no credentials": [f"--url=https://127.0.0.1:{port}", f"--tls.ca-file={pki.ca.cert}"],
        "other CA": [f"--url=https://127.0.0.1:{port}", f"--tls.ca-file={pki.other_ca.cert}"],
        "no CA": [f"--url=https://127.0.0.1:{port}"],
        "plain http": [f"--url=http://127.0.0.1:{port}"],
    }[case]
    err = one_line_failure(show("listeners", *args))
    want = {"wrong password": "401 Unauthorized", "no credentials": "401 Unauthorized",
            "other CA": "certificate not trusted", "no CA": "certificate not trusted",
            "plain http": "https:// for an exporter with TLS?"}[case]
    assert want in err, err


def test_unreachable_url() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    err = one_line_failure(show("states", f"--url=127.0.0.1:{port}"))
    assert f"http://127.0.0.1:{port}/metrics: connection refused" in err


def test_silent_exporter_times_out() -> None:
    with socket.socket() as s:  # accepts the connection (kernel backlog), never answers
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        err = one_line_failure(show("states", f"--url=127.0.0.1:{port}", "--timeout=0.5"))
    assert "no answer within 0.5 s" in err


def test_not_an_exposition(port: int, pki: PKI, password_file: str) -> None:
    err = one_line_failure(show("states", f"--url=https://127.0.0.1:{port}/-/healthy",
                                f"--tls.ca-file={pki.ca.cert}", f"--auth.username={USER}",
                                f"--auth.password-file={password_file}"))
    assert "not the Prometheus text format" in err or "HTTP 404" in err, err


@pytest.mark.parametrize("url", ["ftp://host/metrics", "http://:9816", "http://host:99999"])
def test_a_url_that_cannot_be_one_is_a_usage_error(url: str) -> None:
    one_line_failure(show("states", f"--url={url}"), code=2)


def test_missing_password_file(pki: PKI, port: int) -> None:
    err = one_line_failure(show("states", f"--url=https://127.0.0.1:{port}",
                                f"--tls.ca-file={pki.ca.cert}", f"--auth.username={USER}",
                                "--auth.password-file=/nonexistent/password"))
    assert "--auth.password-file" in err
