"""``show interfaces``: ``netstat -i`` from the ``interfaces`` collector: traffic, errors and
drops per device, with its state, MTU and speed."""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional

from exporter.collectors import interfaces as itf
from exporter.show.reading import Reading
from exporter.show.table import Column, Row, Section, View

TRAFFIC = ["receive_bytes", "receive_packets", "transmit_bytes", "transmit_packets"]
ERRORS = ["receive_errs", "receive_drop", "receive_fifo", "receive_frame", "transmit_errs",
          "transmit_drop", "transmit_fifo", "transmit_colls", "transmit_carrier"]
# netstat -i's headings where it has one (OVR: FIFO overruns).
_HEAD = {"receive_bytes": "RX-BYTES", "receive_packets": "RX-PKTS", "transmit_bytes": "TX-BYTES",
         "transmit_packets": "TX-PKTS", "receive_errs": "RX-ERR", "receive_drop": "RX-DRP",
         "receive_fifo": "RX-OVR", "receive_frame": "RX-FRM", "transmit_errs": "TX-ERR",
         "transmit_drop": "TX-DRP", "transmit_fifo": "TX-OVR", "transmit_colls": "COLLS",
         "transmit_carrier": "CARR"}


def per_device(snap: Reading) -> Dict[str, Dict[str, float]]:
    """device -> /proc/net/dev column -> value, for every column the reading has."""
    out: Dict[str, Dict[str, float]] = defaultdict(dict)
    for col, doc in itf.COUNTERS.items():
        for s in snap.all(doc.name):
            out[s.get("device")][col] = s.value
    return out


def rates(now: Reading, before: Reading) -> Dict[str, Dict[str, Optional[float]]]:
    """device -> column -> per-second rate between two snapshots (None across a reset)."""
    dt = now.monotonic - before.monotonic
    a, b = per_device(now), per_device(before)
    out: Dict[str, Dict[str, Optional[float]]] = {}
    for dev, cols in a.items():
        out[dev] = {}
        for col, v in cols.items():
            prev = b.get(dev, {}).get(col)
            out[dev][col] = (v - prev) / dt if prev is not None and v >= prev and dt > 0 else None
    return out


def build(snap: Reading) -> View:
    devs = per_device(snap)
    up = {s.get("device"): s.value for s in snap.all(itf.M_UP.name)}
    mtu = {s.get("device"): s.value for s in snap.all(itf.M_MTU.name)}
    speed = {s.get("device"): s.value for s in snap.all(itf.M_SPEED.name)}
    names = sorted(set(devs) | set(up))
    traffic: List[Row] = []
    errors: List[Row] = []
    for d in names:
        state = None if d not in up else ("up" if up[d] else "down")
        spd = speed.get(d)
        traffic.append({"device": d, "state": state, "mtu": mtu.get(d),
                        "speed_mbits": spd * 8 / 1e6 if spd is not None else None,
                        **{c: devs[d].get(c) for c in TRAFFIC}})
        errors.append({"device": d, **{c: devs[d].get(c) for c in ERRORS}})
    t = Section("traffic", "Traffic since the interface came up", [
        Column("device", "IFACE", shrink=True), Column("state", "STATE"),
        Column("mtu", "MTU", numeric=True), Column("speed_mbits", "MBIT/S", numeric=True),
        *[Column(c, _HEAD[c], numeric=True) for c in TRAFFIC]], traffic)
    e = Section("errors", "Errors and drops", [
        Column("device", "IFACE", shrink=True),
        *[Column(c, _HEAD[c], numeric=True) for c in ERRORS]], errors)
    return View("interfaces", snap.source, snap.wall, [t, e])
