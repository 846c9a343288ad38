"""`netstat-exporter dump` into node_exporter's textfile collector, read by the real node_exporter.

The dump used to carry the exporter's own process_* metrics, which node_exporter exports for
itself: it then logged "collected metric process_cpu_seconds_total ... was collected before
with the same name and label values" and failed its scrape of the file on every scrape.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from typing import Iterator, Tuple

import pytest
from helpers import ROOT, exporter_cmd, free_port, have, http_get, parse, poll, value

pytestmark = pytest.mark.skipif(not have("prometheus-node-exporter"),
                                reason="scripts/test-all installs prometheus-node-exporter")


def write_textfile(directory: str, *args: str) -> None:
    """As the README says: dump to a temporary file in the directory, then rename it."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".netstat.", suffix=".tmp")
    with os.fdopen(fd, "wb") as out:
        r = subprocess.run(exporter_cmd(*args, "dump"), stdout=out, stderr=subprocess.PIPE,
                           cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert r.returncode == 0, r.stderr
    os.rename(tmp, os.path.join(directory, "netstat.prom"))


@pytest.fixture
def node_exporter(tmp_path: os.PathLike[str]) -> Iterator[Tuple[str, int, str]]:
    """node_exporter with only the textfile collector, on a directory of its own; yields the
    directory, its port and the path of its log (outside the directory)."""
    directory = os.path.join(str(tmp_path), "textfile")
    os.mkdir(directory)
    port = free_port()
    log_path = os.path.join(str(tmp_path), "node.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            ["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{port}",
             "--collector.disable-defaults", "--collector.textfile",
             f"--collector.textfile.directory={directory}"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            poll(lambda: http_get(f"http://127.0.0.1:{port}/metrics", timeout=5)[0] == 200
                 or None, timeout=20, what="node_exporter to answer")
            yield directory, port, log_path
        finally:
            proc.terminate()
            proc.wait(timeout=20)


@pytest.mark.parametrize("args", [(), ("--collector.protocols.fields=.*",
                                       "--collector.routes.table")], ids=["defaults", "all"])
def test_dump_loads_cleanly_in_node_exporter(node_exporter: Tuple[str, int, str],
                                             args: Tuple[str, ...]) -> None:
    directory, port, log_path = node_exporter
    write_textfile(directory, *args)
    status, _, body = http_get(f"http://127.0.0.1:{port}/metrics", timeout=30)
    assert status == 200
    text = body.decode()
    samples = parse(text)
    assert value(samples, "node_textfile_scrape_error") == 0, text[-2000:]
    # Our series are there, carried through node_exporter.
    assert value(samples, "netstat_exporter_collector_success", collector="sockets") == 1
    assert any(n == "netstat_sockets" for n, _l, _v in samples)
    assert value(samples, "node_textfile_mtime_seconds",
                 file=os.path.join(directory, "netstat.prom")) is not None
    # Scraped again: node_exporter's gathering met no error (it counts them, and logs them).
    status, _, body = http_get(f"http://127.0.0.1:{port}/metrics", timeout=30)
    again = parse(body.decode())
    assert value(again, "node_textfile_scrape_error") == 0
    assert value(again, "promhttp_metric_handler_errors_total", cause="gathering") == 0
    with open(log_path) as f:
        node_log = f.read()
    assert "was collected before" not in node_log and "level=error" not in node_log, node_log
