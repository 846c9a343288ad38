"""Generates docs/metrics.md from the collectors' metric declarations.

``python -m exporter.docs > docs/metrics.md`` (scripts/regenerate runs it with the other
generators); tests/test_regenerate.py fails when the file is stale.
"""

from __future__ import annotations

from typing import AbstractSet, Dict, List, Set, Tuple

from exporter.availability import where_missing
from exporter.collectors.api import MetricDoc, specs
from exporter.scrape import SCRAPE_METRICS
from exporter.system import system_class
from exporter.web.telemetry import HTTP_METRICS

# The exporter's own metrics: its collectors' timing and success, build info, and the HTTP
# server's counters (served on /metrics only, not by `dump`).
EXPORTER_METRICS = SCRAPE_METRICS + HTTP_METRICS

__all__ = ["EXPORTER_METRICS", "availability", "metric_names", "render", "where_missing"]


# docs/metrics.md's columns: the systems, as their columns are headed.
_SYSTEMS = (("linux", "Linux"), ("windows", "Windows"), ("darwin", "macOS"))


def _row(m: MetricDoc, collector: str = "") -> str:
    labels = ", ".join(f"`{x}`" for x in m.labels) or "none"
    help_ = m.help.replace("|", "\\|")
    if m.note:
        help_ += f" *({m.note})*"
    marks = " | ".join("yes" if on else "-" for on in _on(m, collector))
    return f"| `{m.name}` | {m.type} | {labels} | {marks} | {help_} |"


def _on(m: MetricDoc, collector: str) -> List[bool]:
    """Whether each system of :data:`_SYSTEMS` can emit ``m``: the metric says it may, its
    collector runs there and, for a protocol counter, the system has that field."""
    out = []
    for name, _ in _SYSTEMS:
        cls = system_class(name)
        on = name in m.systems and (not collector or collector in cls.collectors)
        if on and collector == "protocols" and cls.protocol_fields:
            on = m.name in _protocol_names(cls.protocol_fields)
        out.append(on)
    return out


def _protocol_names(fields: AbstractSet[Tuple[str, str]]) -> Set[str]:
    from exporter.collectors.protocols.table import lookup

    return {lookup(g, f).name for g, f in fields}


_HEAD = "| metric | type | labels | " + " | ".join(t for _, t in _SYSTEMS) + " | help |"
_RULE = "| --- | --- | --- | " + " | ".join("---" for _ in _SYSTEMS) + " | --- |"


def render() -> str:
    out = [
        "# Metrics reference",
        "",
        "Generated from the collectors' declarations by `python -m exporter.docs` (run by "
        "`scripts/regenerate`); `tests/test_regenerate.py` fails when this file is out of date.",
        "",
        "Every metric carries the labels listed; the `instance` and `job` labels are added by "
        "Prometheus. Counters end in `_total`. The Linux, Windows and macOS columns say where "
        "a metric can appear: on Linux from netlink, /proc and /sys; on Windows and macOS from "
        "psutil and the system's own calls (see the README's section on each system).",
        "",
    ]
    for name, spec in specs().items():
        state = "on" if spec.default_enabled else "off"
        out += [f"## `{name}` (default {state})", "", spec.description[0].upper()
                + spec.description[1:] + ".", "",
                _HEAD, _RULE]
        out += [_row(m, name) for m in spec.metrics]
        out.append("")
    out += ["## Exporter", "", "Always present; `process_*` (RSS, CPU, open file descriptors) "
            "comes from client_python's process collector and is left out, with "
            "`netstat_exporter_build_info` and the HTTP server's `netstat_exporter_http_*` "
            "counters (which `dump` has no server to report), by "
            "`--web.disable-exporter-metrics`.", "",
            _HEAD, _RULE]
    out += [_row(m) for m in EXPORTER_METRICS]
    return "\n".join(out) + "\n"


def availability() -> Dict[str, Tuple[str, ...]]:
    """Every metric of a collector -> the systems (as :data:`_SYSTEMS` titles them) where it
    can appear; the exporter's own metrics appear everywhere."""
    out = {m.name: tuple(t for (_, t), on in zip(_SYSTEMS, _on(m, name)) if on)
           for name, spec in specs().items() for m in spec.metrics}
    out.update({m.name: tuple(t for _, t in _SYSTEMS) for m in EXPORTER_METRICS})
    return out


def metric_names() -> Set[str]:
    """Every metric name the reference lists (for rule and dashboard tests)."""
    names = {m.name for s in specs().values() for m in s.metrics}
    return names | {m.name for m in EXPORTER_METRICS}


if __name__ == "__main__":
    print(render(), end="")
