"""docs/metrics.md is generated from the declarations, and what the exporter emits is declared."""

from __future__ import annotations

import re

from helpers import run_cli
from prometheus_client.parser import text_string_to_metric_families

from exporter import docs
from exporter.collectors.api import specs


def test_every_emitted_metric_is_declared_with_its_type_and_labels() -> None:
    declared = {m.name: m for s in specs().values() for m in s.metrics}
    declared.update({m.name: m for m in docs.EXPORTER_METRICS})
    r = run_cli("dump")
    assert r.returncode == 0, r.stderr
    seen = set()
    for fam in text_string_to_metric_families(r.stdout):
        if fam.name.startswith("process_"):
            continue
        name = fam.name + ("_total" if fam.type == "counter" else "")
        assert name in declared, f"{name} is emitted but not declared"
        assert declared[name].type == fam.type, name
        for s in fam.samples:
            assert set(s.labels) <= set(declared[name].labels) | {"pid"}, (name, s.labels)
        seen.add(name)
    assert "netstat_sockets" in seen


def test_metric_names_follow_conventions() -> None:
    for s in specs().values():
        for m in s.metrics:
            # "<n>" marks a documented family of names (one per ICMP message type).
            assert re.fullmatch(r"netstat_(?:[a-z0-9_]|<n>)+", m.name), m.name
            assert m.help.strip() and not m.help.endswith(" "), m.name
