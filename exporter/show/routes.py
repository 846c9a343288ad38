"""``show routes``: ``netstat -r`` from the ``routes`` collector: routes per family and
interface, the default routes, and the table itself when the exporter lists it."""

from __future__ import annotations

from typing import Tuple, Union

from exporter.collectors import routes as rt
from exporter.show.reading import Reading, Sample
from exporter.show.states import family_key
from exporter.show.table import Column, Section, View


def build(snap: Reading) -> View:
    counts = Section("counts", "Routes per family and interface", [
        Column("family", "FAMILY"), Column("interface", "IFACE"),
        Column("routes", "ROUTES", numeric=True)],
        [{"family": s.get("family"), "interface": s.get("interface"), "routes": s.value}
         for s in sorted(snap.all(rt.M_ROUTES.name), key=label_key)])
    defaults = Section("default", "Default routes", [
        Column("family", "FAMILY"), Column("gateway", "GATEWAY"), Column("interface", "IFACE"),
        Column("metric", "METRIC", numeric=True)],
        [{"family": s.get("family"), "gateway": s.get("gateway"),
          "interface": s.get("interface"), "metric": _num(s.get("metric"))}
         for s in sorted(snap.all(rt.M_DEFAULT.name), key=label_key)])
    table = Section("table", "Routing table", [
        Column("family", "FAMILY"), Column("destination", "DESTINATION", shrink=True),
        Column("gateway", "GATEWAY", shrink=True), Column("interface", "IFACE"),
        Column("metric", "METRIC", numeric=True)],
        [{"family": s.get("family"), "destination": s.get("destination"),
          "gateway": s.get("gateway"), "interface": s.get("interface"),
          "metric": _num(s.get("metric"))}
         for s in sorted(snap.all(rt.M_INFO.name), key=label_key)],
        empty="not listed: the exporter runs without --collector.routes.table")
    view = View("routes", snap.source, snap.wall, [counts, defaults, table])
    listed, total = len(table.rows), sum(r["routes"] for r in counts.rows)
    if table.rows and listed < total:
        view.header = f"{listed} of {total:.0f} routes listed (--collector.routes.max-routes)"
    return view


def label_key(s: Sample) -> Tuple[Tuple[int, str], str, str, int, str]:
    metric = s.get("metric")
    return (family_key(s.get("family")), s.get("interface"), s.get("destination"),
            int(metric) if metric.isdigit() else -1, s.get("gateway"))


def _num(text: str) -> Union[int, str]:
    return int(text) if text.isdigit() else text
