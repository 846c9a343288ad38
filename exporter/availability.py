"""Which systems lack a metric, said in one sentence for a dashboard panel's or an alert's
description. Standard library only: alerts/generate.py, which runs wherever Python does,
imports it too (with its own table of what is missing where; tests/test_alerts.py holds that
table against the reference, :func:`exporter.docs.availability`).
"""

from __future__ import annotations

import re
from typing import Dict, List, Mapping, Sequence, Tuple

# The systems, as docs/metrics.md's columns head them.
SYSTEMS = ("Linux", "Windows", "macOS")
_METRIC = re.compile(r"\bnetstat_[a-z0-9_]+\b")


def where_missing(text: str, available: Mapping[str, Sequence[str]]) -> str:
    """A sentence naming the systems on which metrics of ``text`` (a panel's queries, a rule's
    expression) never appear, "" when all of them appear everywhere. ``available`` maps a
    metric to the systems that have it; metrics it does not list are taken to be everywhere."""
    missing: Dict[str, List[str]] = {}
    for name in sorted(set(_METRIC.findall(text))):
        for system in SYSTEMS:
            if name in available and system not in available[name]:
                missing.setdefault(system, []).append(name)
    if not missing:
        return ""
    names = sorted({n for ns in missing.values() for n in ns})
    return (f"Empty on {' and '.join(missing)}: {', '.join(names)} "
            f"{'is' if len(names) == 1 else 'are'} not exported there (docs/metrics.md).")


__all__: Tuple[str, ...] = ("SYSTEMS", "where_missing")
