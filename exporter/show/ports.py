"""``show ports``: ephemeral port use against the range (``ports`` and ``limits`` collectors),
and the busiest destinations, where exhaustion really happens."""

from __future__ import annotations

from typing import List, Optional

from exporter.collectors import limits as lm
from exporter.collectors import ports as pt
from exporter.show.reading import Reading
from exporter.show.states import protocol_key
from exporter.show.table import Column, Row, Section, View, percent


def _share(used: Optional[float], available: Optional[float]) -> Optional[float]:
    return used / available if used is not None and available else None


def use_rows(snap: Reading) -> List[Row]:
    """Per protocol: ports used, the busiest destination's, and both against the range."""
    available = snap.value(pt.M_AVAILABLE.name)
    dest = {s.get("protocol"): s.value for s in snap.all(pt.M_DEST_MAX.name)}
    rows: List[Row] = []
    for s in sorted(snap.all(pt.M_USED.name), key=lambda s: protocol_key(s.get("protocol"))):
        p = s.get("protocol")
        rows.append({"protocol": p, "used": s.value, "used_share": _share(s.value, available),
                     "busiest_destination": dest.get(p),
                     "busiest_share": _share(dest.get(p), available)})
    return rows


def build(snap: Reading) -> View:
    available = snap.value(pt.M_AVAILABLE.name)
    low, high = snap.value(lm.M_RANGE_LOW.name), snap.value(lm.M_RANGE_HIGH.name)
    use = Section("use", "Ephemeral ports in use", [
        Column("protocol", "PROTOCOL"), Column("used", "USED", numeric=True),
        Column("used_share", "OF RANGE", numeric=True, fmt=percent),
        Column("busiest_destination", "BUSIEST DEST", numeric=True),
        Column("busiest_share", "OF RANGE", numeric=True, fmt=percent)], use_rows(snap))
    top = Section("destinations", "Busiest destinations", [
        Column("protocol", "PROTOCOL"),
        Column("destination", "LOCAL ADDRESS->REMOTE ADDRESS:PORT", shrink=True),
        Column("used", "PORTS", numeric=True),
        Column("share", "OF RANGE", numeric=True, fmt=percent)],
        [{"protocol": s.get("protocol"), "destination": s.get("destination"), "used": s.value,
          "share": _share(s.value, available)}
         for s in sorted(snap.all(pt.M_DEST.name),
                         key=lambda s: (-s.value, protocol_key(s.get("protocol")),
                                        s.get("destination")))],
        empty="not listed: the exporter runs without --collector.ports.top-destinations")
    view = View("ports", snap.source, snap.wall, [use, top])
    if available is not None:
        rng = f"{low:.0f}-{high:.0f}, " if low is not None and high is not None else ""
        view.header = f"ephemeral range {rng}{available:.0f} ports available for connect()"
    else:
        view.header = "ephemeral range not reported (ports collector off?)"
    return view
