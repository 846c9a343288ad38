"""The whole exposition of each fixture scenario against a checked-in golden file.

Scenarios live in tests/fixtures/proc/<scenario> (a procfs root: net/... and sys/...) and
tests/fixtures/sys/<scenario> (a sysfs root). The exposition is that of the protocols,
interfaces, routes, ports and limits collectors, every optional listing switched on, without
the exporter's own process/build metrics and without the duration samples (which are timings).

Regenerate after an intended change with ``UPDATE_GOLDEN=1 pytest tests/test_golden.py`` and
review the diff. The fixtures encode /proc/net/route addresses in little-endian host order and
the goldens assume 4 KiB pages (tcp_mem), as on x86-64.
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import List, Tuple

import pytest
from helpers import FIXTURES, have, run_cli, running_exporter

SCENARIOS = ["new", "old", "ipv6-disabled", "malformed", "truncated"]
# (golden name, scenario, extra flags)
CASES: List[Tuple[str, str, Tuple[str, ...]]] = [(s, s, ()) for s in SCENARIOS] + [
    ("new-all-fields", "new", ("--collector.protocols.fields=.*",)),
]
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def dump(scenario: str, *extra: str) -> Tuple[str, str]:
    r = run_cli(
        f"--path.procfs={os.path.join(FIXTURES, 'proc', scenario)}",
        f"--path.sysfs={os.path.join(FIXTURES, 'sys', scenario)}",
        "--collector.disable-defaults", "--web.disable-exporter-metrics",
        "--collector.protocols", "--collector.interfaces", "--collector.routes",
        "--collector.routes.table", "--collector.ports", "--collector.ports.source=procfs",
        "--collector.ports.top-destinations=5", "--collector.limits", *extra, "dump")
    assert r.returncode == 0, r.stderr
    body = "".join(line + "\n" for line in r.stdout.splitlines()
                   if not line.startswith("netstat_exporter_collector_duration_seconds{"))
    return body, r.stderr


@pytest.mark.parametrize("name,scenario,extra", CASES, ids=[c[0] for c in CASES])
def test_golden(name: str, scenario: str, extra: Tuple[str, ...]) -> None:
    body, _ = dump(scenario, *extra)
    path = os.path.join(FIXTURES, "golden", f"{name}.prom")
    if UPDATE:
        with open(path, "w") as f:
            f.write(body)
    with open(path) as f:
        want = f.read()
    assert body == want, f"exposition differs from {path}; UPDATE_GOLDEN=1 regenerates it"


@pytest.mark.skipif(not have("promtool"), reason="promtool is installed by scripts/test-all")
@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_golden_passes_promtool(name: str) -> None:
    with open(os.path.join(FIXTURES, "golden", f"{name}.prom"), "rb") as f:
        r = subprocess.run(["promtool", "check", "metrics"], input=f.read(),
                           capture_output=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r


def _success(body: str) -> dict:  # type: ignore[type-arg]
    return {m.group(1): m.group(2) for m in re.finditer(
        r'^netstat_exporter_collector_success\{collector="(\w+)"\} (\S+)$', body, re.M)}


def test_malformed_fails_only_the_collectors_that_read_it() -> None:
    body, err = dump("malformed")
    assert _success(body) == {"protocols": "0.0", "interfaces": "1.0", "routes": "0.0",
                              "ports": "0.0", "limits": "0.0"}
    assert "netstat_interface_receive_bytes_total{" in body
    # Each failure is one log line naming the file and line.
    root = os.path.join(FIXTURES, "proc", "malformed")
    assert f"{root}/net/snmp:8: Tcp has 15 fields but 13 values" in err
    assert f"{root}/net/ipv6_route:2: bad address" in err
    assert f"{root}/sys/net/ipv4/tcp_fin_timeout:1: not an integer" in err
    assert f"{root}/sys/net/ipv4/ip_local_reserved_ports:1: bad port range" in err
    assert "Traceback" not in err


def test_truncated_fails_only_the_collectors_that_read_it() -> None:
    body, err = dump("truncated")
    assert _success(body) == {"protocols": "0.0", "interfaces": "0.0", "routes": "0.0",
                              "ports": "1.0", "limits": "1.0"}
    root = os.path.join(FIXTURES, "proc", "truncated")
    assert f"{root}/net/netstat:3: header of IpExt has no value line" in err
    assert f"{root}/net/dev:6: wlan0 has 3 values, the header names 16" in err
    assert f"{root}/net/route:7: expected 11 columns" in err
    assert "Traceback" not in err


@pytest.mark.skipif(not have("promtool"), reason="promtool is installed by scripts/test-all")
def test_live_scrape_passes_promtool() -> None:
    """A real scrape of this host with every default collector and every listing on."""
    with running_exporter("--collector.routes.table", "--collector.ports.top-destinations=10",
                          "--collector.protocols.fields=.*") as ex:
        text = ex.scrape_text()
    for name in ("protocols", "interfaces", "routes", "ports", "limits"):
        assert f'netstat_exporter_collector_success{{collector="{name}"}} 1.0' in text
    r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r
