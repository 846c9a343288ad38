"""What a view produces, and its two renderings: aligned plain text that fits a width (80
columns unless the terminal says otherwise), and JSON with the same numbers.

A view is a list of sections; a section is a titled table whose rows are dicts keyed by column
key. Rows may carry more keys than the text shows (every state of a listener's connections,
say); JSON has them all. Numbers are never cut to fit: only columns marked ``shrink`` (names,
paths) are shortened, with an ellipsis on the side that matters less.
"""

from __future__ import annotations

import datetime
import json
import math
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

Row = Dict[str, Any]


@dataclass(frozen=True)
class Column:
    key: str
    heading: str
    numeric: bool = False
    shrink: bool = False  # may be shortened to fit the width
    keep_end: bool = False  # when shortened, keep the end (paths) rather than the start
    wrap: bool = False  # when narrowed, continue on the next lines instead of cutting (prose)
    fmt: Optional[Callable[[Any], str]] = None  # text form of a number (rates, percentages)


@dataclass
class Section:
    key: str
    title: str
    columns: List[Column]
    rows: List[Row] = field(default_factory=list)
    note: str = ""
    empty: str = "none"  # what the text says when there are no rows


@dataclass
class View:
    name: str
    source: str
    wall: float
    sections: List[Section] = field(default_factory=list)
    header: str = ""  # one line under the title in text (nothing in JSON: it repeats the data)
    failed: List[str] = field(default_factory=list)  # collectors that failed in this scrape

    def section(self, key: str) -> Section:
        for s in self.sections:
            if s.key == key:
                return s
        raise KeyError(key)


def cell(col: Column, value: Any) -> str:
    """The text of one cell."""
    if value is None or value == "":
        return "-" if col.numeric else ""
    if col.fmt is not None:
        return col.fmt(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return number(value)
    return str(value)


def number(v: float) -> str:
    """Whole numbers without a decimal point (counts are floats in the exposition); others to
    the millisecond, without trailing zeros (seconds converted from the kernel's ms: 0.2)."""
    if math.isfinite(v) and v == int(v) and abs(v) < 1e18:
        return str(int(v))
    if not math.isfinite(v):
        return str(v)
    return f"{v:.3f}".rstrip("0").rstrip(".")


def rate(v: Any) -> str:
    return f"{v:.1f}/s" if isinstance(v, (int, float)) else str(v)


def percent(v: Any) -> str:
    """A ratio (0..1) printed as a percentage."""
    return f"{100 * v:.1f}%" if isinstance(v, (int, float)) else str(v)


def signed(v: Any) -> str:
    if not isinstance(v, (int, float)):
        return str(v)
    s = number(float(v))
    return s if v <= 0 else "+" + s


def _cut(text: str, width: int, keep_end: bool, ellipsis: str) -> str:
    if len(text) <= width:
        return text
    if width <= len(ellipsis):
        return text[:width]
    n = width - len(ellipsis)
    return ellipsis + text[-n:] if keep_end else text[:n] + ellipsis


def render_section(sec: Section, width: int = 80, ellipsis: str = "…") -> List[str]:
    lines = [sec.title]
    if not sec.rows:
        lines.append(f"  ({sec.empty})")
    else:
        cols = sec.columns
        cells = [[cell(c, r.get(c.key)) for c in cols] for r in sec.rows]
        widths = [max([len(c.heading)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
        _fit(cols, widths, width)
        head = "  ".join(_pad(c.heading, w, c.numeric) for c, w in zip(cols, widths))
        lines.append(head.rstrip())
        for row in cells:
            wrapped = {i: textwrap.wrap(t, max(w, 1)) or [""]
                       for i, (c, t, w) in enumerate(zip(cols, row, widths)) if c.wrap}
            parts = [_pad(wrapped[i][0] if i in wrapped else _cut(t, w, c.keep_end, ellipsis),
                          w, c.numeric)
                     for i, (c, t, w) in enumerate(zip(cols, row, widths))]
            lines.append("  ".join(parts).rstrip())
            for n in range(1, max((len(v) for v in wrapped.values()), default=1)):
                parts = [_pad(wrapped[i][n] if i in wrapped and n < len(wrapped[i]) else "", w,
                              c.numeric) for i, (c, w) in enumerate(zip(cols, widths))]
                lines.append("  ".join(parts).rstrip())
    if sec.note:
        lines.append(sec.note)
    return lines


def _pad(text: str, w: int, right: bool) -> str:
    return text.rjust(w) if right else text.ljust(w)


def _fit(cols: Sequence[Column], widths: List[int], width: int) -> None:
    """Narrow the shrinkable columns, widest first, until the row fits (or they are at their
    heading's width)."""
    over = sum(widths) + 2 * (len(widths) - 1) - width
    while over > 0:
        cand = [i for i, c in enumerate(cols)
                if c.shrink and widths[i] > max(len(c.heading), 20 if c.wrap else 6)]
        if not cand:
            return
        i = max(cand, key=lambda j: widths[j])
        widths[i] -= 1
        over -= 1


def render_text(view: View, width: int = 80, ellipsis: str = "…") -> str:
    when = datetime.datetime.fromtimestamp(view.wall, datetime.timezone.utc)
    out = [f"{view.name} from {view.source} at {when:%Y-%m-%d %H:%M:%S} UTC"]
    if view.header:
        out.append(view.header)
    if view.failed:
        out.append(f"warning: collector {', '.join(view.failed)} failed in this scrape "
                   "(the exporter's log says why)")
    for sec in view.sections:
        out.append("")
        out.extend(render_section(sec, width, ellipsis))
    return "\n".join(out) + "\n"


def to_json(view: View) -> Dict[str, Any]:
    when = datetime.datetime.fromtimestamp(view.wall, datetime.timezone.utc)
    return {
        "view": view.name,
        "source": view.source,
        "time": when.isoformat().replace("+00:00", "Z"),
        "failed_collectors": view.failed,
        "sections": {
            s.key: {"title": s.title, "columns": [c.key for c in s.columns],
                    "rows": [{k: _plain(v) for k, v in r.items()} for r in s.rows],
                    **({"note": s.note} if s.note else {})}
            for s in view.sections
        },
    }


def _plain(v: Any) -> Any:
    """JSON numbers as integers where they are whole (counts), floats otherwise."""
    if isinstance(v, float) and math.isfinite(v) and v == int(v) and abs(v) < 1e18:
        return int(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def render_json(view: View) -> str:
    return json.dumps(to_json(view), indent=2, sort_keys=False) + "\n"
