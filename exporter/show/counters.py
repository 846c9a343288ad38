"""``show counters``: the ``netstat -s`` / ``nstat`` counters of the ``protocols`` collector,
grouped by protocol in the kernel's order; with ``--changed`` only those that moved since the
last look, with deltas and rates (``nstat``'s habit: the last look is kept in a history file).

Protocol counters are recognised by what their HELP says (``<Group> <Field> in
/proc/net/<file>: ...``, as the collector's table writes it) rather than by their names, so the
view keeps working whatever the metric names become and against other versions of the exporter.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from exporter.collectors.protocols import DEFAULT_PROTOCOLS_FIELDS
from exporter.collectors.protocols.table import FILES, TABLE
from exporter.show.reading import Reading, ShowError
from exporter.show.table import Column, Row, Section, View, rate, signed

_HELP = re.compile(r"^(\w+) (\w+) in /proc/net/(snmp6|snmp|netstat): ?(.*)$", re.S)
_GROUPS = list(FILES)
_DEFAULT_SET = re.compile(DEFAULT_PROTOCOLS_FIELDS)
_POSITION = {key: i for i, key in enumerate(TABLE)}


@dataclass(frozen=True)
class Counter:
    group: str
    field: str
    kind: str  # counter or gauge
    value: float
    description: str
    metric: str

    @property
    def key(self) -> str:
        return f"{self.group}_{self.field}"  # as nstat and --collector.protocols.fields name it


def protocol_counters(snap: Reading) -> List[Counter]:
    """Every protocol counter in the reading, in group order, then the kernel's field order."""
    out: List[Counter] = []
    for name, samples in snap.samples.items():
        m = _HELP.match(snap.help.get(name, ""))
        if not m or m.group(1) not in FILES or not samples:
            continue
        kind = "counter" if snap.type.get(name) == "counter" else "gauge"
        out.append(Counter(m.group(1), m.group(2), kind, samples[0].value, m.group(4).strip(),
                           name))
    out.sort(key=_order)
    return out


def _order(c: Counter) -> Tuple[int, int, str]:
    g = _GROUPS.index(c.group) if c.group in _GROUPS else len(_GROUPS)
    pos = _POSITION.get((c.group, c.field), len(_POSITION))
    num = re.search(r"(\d+)$", c.field)  # IcmpMsg InType3 before InType11
    return (g, pos, f"{c.field.rstrip('0123456789')}{int(num.group(1)):05d}" if num else c.field)


@dataclass
class Change:
    delta: Optional[float]
    rate: Optional[float]


def changes(now: List[Counter], before: Optional[Dict[str, float]], seconds: Optional[float]
            ) -> Dict[str, Change]:
    """Per counter key: the change since ``before`` (a counter that went down was reset, so
    its whole value is the change, as Prometheus' rate() takes it) and the rate per second.
    Without an earlier look, a counter's change is its value (since it started), a gauge's is
    unknown."""
    out: Dict[str, Change] = {}
    for c in now:
        prev = None if before is None else before.get(c.key)
        if prev is None:
            out[c.key] = Change(c.value if c.kind == "counter" and before is None else None, None)
            continue
        if c.kind == "counter":
            delta = c.value - prev if c.value >= prev else c.value
            out[c.key] = Change(delta, delta / seconds if seconds and seconds > 0 else None)
        else:
            out[c.key] = Change(c.value - prev, None)
    return out


def build(snap: Reading, changed: bool = False, describe: bool = False,
          before: Optional[Dict[str, float]] = None, before_wall: Optional[float] = None) -> View:
    counters = protocol_counters(snap)
    seconds = snap.wall - before_wall if before_wall is not None else None
    moves = changes(counters, before, seconds) if changed else {}
    cols = [Column("field", "FIELD"), Column("value", "VALUE", numeric=True)]
    if changed:
        cols += [Column("delta", "CHANGE", numeric=True, fmt=signed),
                 Column("rate", "RATE", numeric=True, fmt=rate)]
    if describe:
        cols.append(Column("help", "MEANING", shrink=True, wrap=True))
    sections: Dict[str, Section] = {}
    for c in counters:
        row: Row = {"field": c.field, "value": c.value, "type": c.kind, "metric": c.metric}
        if changed:
            mv = moves[c.key]
            if not mv.delta:
                continue
            row["delta"], row["rate"] = mv.delta, mv.rate
        if describe:
            row["help"] = c.description
        if c.group not in sections:
            sections[c.group] = Section(c.group, f"{c.group} (/proc/net/{FILES[c.group]})", cols)
        sections[c.group].rows.append(row)
    view = View("counters", snap.source, snap.wall, list(sections.values()))
    if changed:
        if before is None:
            view.header = "first look: changes since the counters started (boot)"
        else:
            view.header = f"changes in the last {seconds:.1f} s" if seconds is not None else ""
        if not sections:
            view.header += "; nothing moved"
    elif not counters:
        view.header = "no protocol counters in this exposition"
    if counters and all(_DEFAULT_SET.match(c.key) for c in counters):
        # An exporter's default set is a fraction of what netstat -s shows: say so, or the
        # missing counters look like zeros nobody printed.
        partial = (f"{len(counters)} counters: the default set "
                   "(--collector.protocols.fields=.* exports all)")
        view.header = f"{view.header}; {partial}" if view.header else partial
    return view


# --- the history of the last look ------------------------------------------------------------

def history_path(source_key: str, explicit: str = "") -> str:
    """``--history`` when given; else one file per source under $XDG_STATE_HOME (or
    ~/.local/state)/netstat-exporter/, so looks at different hosts do not mix."""
    if explicit:
        return explicit
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "state")
    digest = hashlib.sha256(source_key.encode()).hexdigest()[:16]
    return os.path.join(base, "netstat-exporter", f"counters-{digest}.json")


def load_history(path: str) -> Tuple[Optional[Dict[str, float]], Optional[float]]:
    """(values by Group_Field, wall time of the look), or (None, None) when there is none.
    A history that is not ours is an error rather than silently replaced."""
    try:
        with open(path, encoding="utf-8") as f:
            data: Any = json.load(f)
        values = {str(k): float(v) for k, v in data["values"].items()}
        return values, float(data["wall"])
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ShowError(f"history file {path}: unreadable ({type(e).__name__}); "
                        "remove it or give another with --history") from None


def save_history(path: str, snap: Reading) -> None:
    values = {c.key: c.value for c in protocol_counters(snap)}
    data = {"source": snap.source, "wall": snap.wall, "values": values}
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".counters-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError as e:
        raise ShowError(f"history file {path}: cannot write ({e.strerror or e})") from None
