"""promtool check metrics on a real scrape of the running exporter, with every collector that is
on by default, reports nothing."""

from __future__ import annotations

import subprocess

import pytest
from helpers import have, running_exporter


def test_promtool_check_metrics_on_a_live_scrape() -> None:
    if not have("promtool"):
        pytest.fail("promtool not installed (scripts/test-all installs Debian's prometheus)")
    with running_exporter() as ex:
        text = ex.scrape_text()
    assert "netstat_sockets{" in text
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", \
        (r.stdout, r.stderr)
