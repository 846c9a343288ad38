"""Generates docs/metrics.md from the collectors' metric declarations.

``python -m exporter.docs > docs/metrics.md``; tests/test_docs.py fails when the file is stale.
"""

from __future__ import annotations

from typing import Set

from exporter.collectors.api import MetricDoc
from exporter.scrape import EXPORTER_METRICS as _COLLECTION_METRICS
from exporter.scrape import specs
from exporter.web.telemetry import HTTP_METRICS

# The exporter's own metrics: its collectors' timing and success, build info, and the HTTP
# server's counters (served on /metrics only, not by `dump`).
EXPORTER_METRICS = _COLLECTION_METRICS + HTTP_METRICS

__all__ = ["EXPORTER_METRICS", "metric_names", "render"]


def _row(m: MetricDoc) -> str:
    labels = ", ".join(f"`{x}`" for x in m.labels) or "none"
    help_ = m.help.replace("|", "\\|")
    if m.note:
        help_ += f" *({m.note})*"
    return f"| `{m.name}` | {m.type} | {labels} | {help_} |"


def render() -> str:
    out = [
        "# Metrics reference",
        "",
        "Generated from the collectors' declarations by `python -m exporter.docs`; "
        "`tests/test_docs.py` fails when this file is out of date.",
        "",
        "Every metric carries the labels listed; the `instance` and `job` labels are added by "
        "Prometheus. Counters end in `_total`.",
        "",
    ]
    for name, spec in specs().items():
        state = "on" if spec.default_enabled else "off"
        out += [f"## `{name}` (default {state})", "", spec.description[0].upper()
                + spec.description[1:] + ".", "",
                "| metric | type | labels | help |", "| --- | --- | --- | --- |"]
        out += [_row(m) for m in spec.metrics]
        out.append("")
    out += ["## Exporter", "", "Always present; `process_*` (RSS, CPU, open file descriptors) "
            "comes from client_python's process collector and is left out, with "
            "`netstat_exporter_build_info` and the HTTP server's `netstat_exporter_http_*` "
            "counters (which `dump` has no server to report), by "
            "`--web.disable-exporter-metrics`.", "",
            "| metric | type | labels | help |", "| --- | --- | --- | --- |"]
    out += [_row(m) for m in EXPORTER_METRICS]
    return "\n".join(out) + "\n"


def metric_names() -> Set[str]:
    """Every metric name the reference lists (for rule and dashboard tests)."""
    names = {m.name for s in specs().values() for m in s.metrics}
    return names | {m.name for m in EXPORTER_METRICS}


if __name__ == "__main__":
    print(render(), end="")
