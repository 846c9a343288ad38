"""A --path.procfs that is not a procfs is refused at start; a file every Linux has, missing, fails
its collector; a file a kernel may lack (IPv6 off) is still no data.

An empty directory given as --path.procfs used to exit 0 with every collector reporting success
and most data silently missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import List, Tuple

import pytest
from helpers import FIXTURES, Sample, parse, run_cli, value

NEW = os.path.join(FIXTURES, "proc", "new")
COLLECTORS = ("protocols", "interfaces", "routes")


def dump(procfs: str) -> Tuple[List[Sample], str]:
    r = run_cli(f"--path.procfs={procfs}", f"--path.sysfs={os.path.join(FIXTURES, 'sys', 'new')}",
                "--collector.disable-defaults", *(f"--collector.{c}" for c in COLLECTORS),
                "--web.disable-exporter-metrics", "dump")
    assert r.returncode == 0, r.stderr
    return parse(r.stdout), r.stderr


def test_empty_directory_is_refused_at_start(tmp_path: Path) -> None:
    r = run_cli(f"--path.procfs={tmp_path}", "dump")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == (f"netstat-exporter: error: --path.procfs '{tmp_path}' is not a procfs: "
                        "it has no net/ directory\n")


def test_a_real_procfs_and_the_fixture_trees_are_accepted() -> None:
    for root in ("/proc", NEW):
        r = run_cli(f"--path.procfs={root}", "--collector.disable-defaults",
                    "--collector.protocols", "dump")
        assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("missing, collector", [
    ("snmp", "protocols"), ("netstat", "protocols"), ("dev", "interfaces"), ("route", "routes"),
])
def test_file_every_linux_has_missing_fails_its_collector(tmp_path: Path, missing: str,
                                                          collector: str) -> None:
    root = tmp_path / "proc"
    shutil.copytree(NEW, root)
    os.remove(root / "net" / missing)
    samples, log = dump(str(root))
    for c in COLLECTORS:
        ok = value(samples, "netstat_exporter_collector_success", collector=c)
        assert ok == (0.0 if c == collector else 1.0), (c, log)
    assert f"{root / 'net' / missing}: missing" in log, log


@pytest.mark.parametrize("missing", ["snmp6", "ipv6_route"])
def test_file_a_kernel_may_lack_is_no_data(tmp_path: Path, missing: str) -> None:
    root = tmp_path / "proc"
    shutil.copytree(NEW, root)
    os.remove(root / "net" / missing)
    samples, log = dump(str(root))
    for c in COLLECTORS:
        assert value(samples, "netstat_exporter_collector_success", collector=c) == 1.0, log
    assert "level=error" not in log
