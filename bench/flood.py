#!/usr/bin/env python3
"""Abuse: does a flood of idle or silent connections delay an authenticated scrape?

Run from the repository root (root not needed; traffic stays on 127.0.0.1):
    .venv/bin/python bench/flood.py --rounds 5

Not a test. It makes a throwaway self-signed certificate (openssl), starts the exporter with TLS
and basic auth, and times authenticated scrapes over fresh connections: first with nothing else
connected, then while the connection limit's worth of kept-alive connections that showed no
credentials (each did GET /-/healthy) sit idle, then, on a plain-HTTP exporter, while more
silent connections than the limit are open within the head deadline. Prints each scrape's status
and time and the exporter's reclaimed-connection counters.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_CONNECTIONS = 256  # exporter.web.limits.MAX_CONNECTIONS

USER, PASSWORD = "prometheus", "flood-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def exporter(*args: str) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "exporter",
                             f"--web.listen-address=127.0.0.1:{port}",
                             "--web.read-header-timeout=60", *args],
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("flood.py: the exporter did not start") from None
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def scrape(port: int, ctx: Optional[ssl.SSLContext], headers: Dict[str, str]
           ) -> Tuple[object, float, bytes]:
    cls = http.client.HTTPSConnection if ctx else http.client.HTTPConnection
    kw = {"context": ctx} if ctx else {}
    conn = cls("127.0.0.1", port, timeout=30, **kw)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    try:
        conn.request("GET", "/metrics", headers=headers)
        r = conn.getresponse()
        body = r.read()
        return r.status, time.perf_counter() - t0, body
    except (OSError, http.client.HTTPException) as e:
        return type(e).__name__, time.perf_counter() - t0, b""
    finally:
        conn.close()


def counters(body: bytes) -> str:
    return ", ".join(line for line in body.decode().splitlines()
                     if line.startswith("netstat_exporter_http_connections_reclaimed_total"))


def report(what: str, results: List[Tuple[object, float, bytes]]) -> None:
    ms = [round(t * 1000) for _, t, _ in results]
    print(f"{what}: status {[s for s, _, _ in results]}, ms {ms}, "
          f"median {statistics.median(ms):.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    import bcrypt

    with tempfile.TemporaryDirectory(prefix=f"flood-{os.getpid()}-") as d:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                        "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem"],
                       check=True, capture_output=True)
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
        with open(f"{d}/web.yml", "w") as f:
            f.write(f"tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"
                    f"basic_auth_users:\n  {USER}: '{hashed}'\n")
        ctx = ssl.create_default_context(cafile=f"{d}/cert.pem")
        auth = {"Authorization": "Basic "
                + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
        with exporter(f"--web.config.file={d}/web.yml") as port:
            scrape(port, ctx, auth)  # the first check pays bcrypt; later ones hit the cache
            report("TLS and basic auth, nothing else connected",
                   [scrape(port, ctx, auth) for _ in range(args.rounds)])
            idle = []
            for _ in range(MAX_CONNECTIONS):
                s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                                    server_hostname="127.0.0.1")
                s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
                got = b""
                while not got.endswith(b"OK\n"):
                    got += s.recv(4096)
                idle.append(s)
            results = [scrape(port, ctx, auth) for _ in range(args.rounds)]
            report(f"  with {MAX_CONNECTIONS} idle keep-alive connections without credentials",
                   results)
            print("  " + counters(results[-1][2]))
            for s in idle:
                s.close()
        with exporter() as port:
            report("plain HTTP, nothing else connected",
                   [scrape(port, None, {}) for _ in range(args.rounds)])
            silent = [socket.create_connection(("127.0.0.1", port))
                      for _ in range(MAX_CONNECTIONS + 44)]
            results = [scrape(port, None, {}) for _ in range(args.rounds)]
            report(f"  with {len(silent)} silent connections", results)
            print("  " + counters(results[-1][2]))
            for s in silent:
                s.close()


if __name__ == "__main__":
    main()
