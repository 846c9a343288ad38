"""Reading the plain-text tables of ``show`` back to compare them with the JSON of the same
view: an independent reading (the text is parsed by column position, not re-rendered)."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

TIME = re.compile(r" at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


def normalise(text: str) -> str:
    return TIME.sub(" at <time> UTC", text)


def blocks(text: str) -> Dict[str, List[str]]:
    """Section title -> its lines (title excluded); sections are separated by blank lines."""
    out: Dict[str, List[str]] = {}
    for chunk in text.split("\n\n")[1:]:
        lines = chunk.rstrip("\n").split("\n")
        out[lines[0]] = lines[1:]
    return out


def headings(header: str) -> List[Tuple[str, int, int]]:
    """(heading, start, end) per column: headings are separated by two spaces or more."""
    return [(m.group(0), m.start(), m.end()) for m in re.finditer(r"\S+(?: \S+)*", header)]


def numeric_cell(line: str, end: int) -> str:
    """A right-aligned cell ends where its heading ends; numbers hold no spaces."""
    part = line[:end].rstrip()
    return part.split(" ")[-1] if len(part) == end else ""


def parse_number(text: str) -> Optional[float]:
    if text in ("-", ""):
        return None
    if text.endswith("%"):
        return float(text[:-1]) / 100
    if text.endswith("/s"):
        return float(text[:-2])
    return float(text)


def matches(text: str, want: Any) -> bool:
    """The text's number against the JSON's, within the text's rounding."""
    got = parse_number(text)
    if got is None or want is None:
        return got is None and want is None
    if text.endswith("%"):
        return abs(got - float(want)) <= 0.0005 + 1e-12
    decimals = len(text.rstrip("%/s").split(".")[1]) if "." in text else 0
    return abs(got - float(want)) <= 0.5 * 10 ** -decimals + 1e-9


def compare(text: str, doc: Dict[str, Any]) -> int:
    """Assert every number of every JSON row is the number the text table shows in the same
    row and column; returns how many numbers were compared."""
    found = blocks(text)
    compared = 0
    for key, sec in doc["sections"].items():
        lines = found[sec["title"]]
        if not sec["rows"]:
            assert lines[0].startswith("  ("), (key, lines)
            continue
        cols = headings(lines[0])
        assert len(cols) == len(sec["columns"]), (key, cols, sec["columns"])
        body = [ln for ln in lines[1:] if not ln.startswith(" ")]  # wrapped prose continues
        body = body[: len(sec["rows"])]
        assert len(body) == len(sec["rows"]), (key, body)
        numeric = {c for c in sec["columns"] if any(
            isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)
            for r in sec["rows"])}
        for line, row in zip(body, sec["rows"]):
            for (_heading, _start, end), col in zip(cols, sec["columns"]):
                want = row.get(col)
                if col in numeric:
                    cell = numeric_cell(line, end)
                    assert matches(cell, want), (key, col, cell, want, line)
                    compared += 1
    return compared
