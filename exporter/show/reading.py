"""One reading of an exposition, parsed: the samples of every family, with its type and HELP,
indexed by sample name (which for counters is the declared ``..._total`` name)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from prometheus_client.parser import text_string_to_metric_families


class ShowError(Exception):
    """Anything a user can cause while showing (an unreachable URL, wrong credentials, text that
    is not an exposition): printed as one line, exit status 1."""


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Dict[str, str]
    value: float

    def get(self, label: str) -> str:
        return self.labels.get(label, "")


@dataclass
class Reading:
    """Samples by name; ``help`` and ``type`` by sample name; when it was taken."""

    samples: Dict[str, List[Sample]] = field(default_factory=dict)
    help: Dict[str, str] = field(default_factory=dict)
    type: Dict[str, str] = field(default_factory=dict)
    monotonic: float = 0.0
    wall: float = 0.0
    source: str = ""

    def all(self, name: str, **labels: str) -> List[Sample]:
        return [s for s in self.samples.get(name, ())
                if all(s.labels.get(k) == v for k, v in labels.items())]

    def value(self, name: str, **labels: str) -> Optional[float]:
        found = self.all(name, **labels)
        return found[0].value if found else None

    def has(self, name: str) -> bool:
        return bool(self.samples.get(name))


def parse(text: str, source: str = "", monotonic: Optional[float] = None,
          wall: Optional[float] = None) -> Reading:
    """Parse the text exposition format; :class:`ShowError` when it is not one."""
    snap = Reading(monotonic=time.monotonic() if monotonic is None else monotonic,
                    wall=time.time() if wall is None else wall, source=source)
    try:
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                snap.samples.setdefault(s.name, []).append(
                    Sample(s.name, dict(s.labels), float(s.value)))
                snap.help.setdefault(s.name, fam.documentation)
                snap.type.setdefault(s.name, fam.type)
    except (ValueError, TypeError, IndexError, KeyError) as e:
        first = " ".join(str(e).split())[:200]
        raise ShowError(f"{source or 'input'}: not the Prometheus text format ({first})") from None
    return snap


def pairs(samples: Iterable[Sample], *labels: str) -> Dict[Tuple[str, ...], float]:
    """``{(label values...): value}`` for the given labels."""
    return {tuple(s.get(k) for k in labels): s.value for s in samples}
