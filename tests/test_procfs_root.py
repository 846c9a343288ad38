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


# --- the one reader every /proc and /sys file goes through -----------------------------------


def test_read_bytes_reads_to_the_end_past_short_reads(tmp_path: Path) -> None:
    """A short read is not the end of a /proc file on every kernel (a seq_file read before
    Linux 5.10 returns one buffer's worth): only an empty read ends the file. A FIFO written
    in two parts gives the reader a short read first."""
    import threading
    import time

    from exporter.procfs import read_bytes

    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)

    def writer() -> None:
        with open(fifo, "wb", buffering=0) as f:
            f.write(b"a" * 100)
            time.sleep(0.05)
            f.write(b"b" * 100)

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert read_bytes(fifo) == b"a" * 100 + b"b" * 100
    finally:
        t.join(5)


def test_read_text_whole_large_and_empty_files(tmp_path: Path) -> None:
    from exporter.procfs import read_text

    big = "".join(f"line {i}\n" for i in range(50_000))  # several read chunks
    (tmp_path / "big").write_text(big)
    (tmp_path / "empty").write_text("")
    (tmp_path / "name").write_bytes(b"t\xc3\xabst \xff\n")
    assert read_text(str(tmp_path), "big") == big
    assert read_text(str(tmp_path), "empty") == ""
    assert read_text(str(tmp_path), "name") == "tëst \udcff\n"  # surrogateescape
    with pytest.raises(FileNotFoundError):
        read_text(str(tmp_path), "missing")


@pytest.mark.serial  # the host's interfaces, read twice
def test_read_text_of_a_live_proc_file_matches_python_open() -> None:
    from exporter.procfs import read_text

    with open("/proc/self/net/dev") as f:
        expected = [line.split(":")[0] for line in f.read().splitlines()]
    got = [line.split(":")[0] for line in read_text("/proc", "net", "dev").splitlines()]
    assert got == expected
