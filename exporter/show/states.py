"""``show states``: sockets by protocol, family and state, zeros included (what ``ss -s``
should have been), from the ``sockets`` collector's families."""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Tuple

from exporter.collectors import sockets as sk
from exporter.show.reading import Reading
from exporter.show.table import Column, Section, View

# glances' grouping of TCP states: how far a connection is in its life.
PHASES: Dict[str, str] = {
    "listen": "listen",
    "syn_sent": "initiated", "syn_recv": "initiated", "new_syn_recv": "initiated",
    "established": "established",
    "fin_wait1": "terminated", "fin_wait2": "terminated", "time_wait": "terminated",
    "close": "terminated", "close_wait": "terminated", "last_ack": "terminated",
    "closing": "terminated",
}
PHASE_ORDER = ["listen", "initiated", "established", "terminated", "other"]
# A connection's life from listen to close; states a newer collector adds come last.
_STATE_ORDER = ["listen", "syn_sent", "syn_recv", "new_syn_recv", "established", "fin_wait1",
                "fin_wait2", "closing", "time_wait", "close_wait", "last_ack", "close",
                "bound_inactive", "unconnected"]
_FAMILY_ORDER = ["ipv4", "ipv6"]
_PROTOCOL_ORDER = ["tcp", "udp", "udplite", "raw", "unix"]


def state_key(state: str) -> Tuple[int, str]:
    return (_STATE_ORDER.index(state) if state in _STATE_ORDER else len(_STATE_ORDER), state)


def family_key(family: str) -> Tuple[int, str]:
    return (_FAMILY_ORDER.index(family) if family in _FAMILY_ORDER else 9, family)


def protocol_key(proto: str) -> Tuple[int, str]:
    return (_PROTOCOL_ORDER.index(proto) if proto in _PROTOCOL_ORDER else 9, proto)


def socket_counts(snap: Reading) -> Dict[Tuple[str, str, str], float]:
    """(protocol, family, state) -> sockets."""
    return {(s.get("protocol"), s.get("family"), s.get("state")): s.value
            for s in snap.all(sk.M_SOCKETS.name)}


def tcp_totals(snap: Reading) -> Dict[str, float]:
    """TCP state -> sockets of both families, in state order."""
    out: Dict[str, float] = defaultdict(float)
    for (proto, _fam, state), v in socket_counts(snap).items():
        if proto == "tcp":
            out[state] += v
    return {k: out[k] for k in sorted(out, key=state_key)}


def build(snap: Reading) -> View:
    counts = socket_counts(snap)
    families = sorted({f for (_p, f, _s) in counts}, key=family_key)
    fam_cols = [Column(f, f.upper(), numeric=True) for f in families]

    tcp = Section("tcp", "TCP sockets by state", [
        Column("state", "STATE"), Column("phase", "PHASE"), *fam_cols,
        Column("total", "TOTAL", numeric=True)])
    phases: Dict[str, float] = {p: 0.0 for p in PHASE_ORDER}
    dgram = Section("datagram", "UDP, UDP-Lite and raw sockets", [
        Column("protocol", "PROTOCOL"), Column("state", "STATE"), *fam_cols,
        Column("total", "TOTAL", numeric=True)])
    by: Dict[Tuple[str, str], Dict[str, float]] = defaultdict(dict)
    for (proto, fam, state), v in counts.items():
        by[(proto, state)][fam] = v
    for proto, state in sorted(by, key=lambda k: (protocol_key(k[0]), state_key(k[1]))):
        vals = by[(proto, state)]
        total = sum(vals.values())
        per_family = {f: vals.get(f) for f in families}
        if proto == "tcp":
            phase = PHASES.get(state, "other")
            phases[phase] += total
            tcp.rows.append({"state": state, "phase": phase, **per_family, "total": total})
        else:
            dgram.rows.append({"protocol": proto, "state": state, **per_family, "total": total})
    phase_sec = Section("phases", "TCP sockets by phase", [
        Column("phase", "PHASE"), Column("sockets", "SOCKETS", numeric=True)],
        [{"phase": p, "sockets": v} for p, v in phases.items() if p != "other" or v])

    unix = Section("unix", "Unix sockets", [
        Column("type", "TYPE"), Column("state", "STATE"), Column("sockets", "SOCKETS", numeric=True)],
        [{"type": s.get("type"), "state": s.get("state"), "sockets": s.value}
         for s in snap.all(sk.M_UNIX.name)])

    queues = Section("queues", "Bytes queued in non-listening sockets", [
        Column("protocol", "PROTOCOL"), Column("family", "FAMILY"),
        Column("receive", "RECV-Q", numeric=True), Column("send", "SEND-Q", numeric=True)])
    rx = {(s.get("protocol"), s.get("family")): s.value for s in snap.all(sk.M_RXQ.name)}
    tx = {(s.get("protocol"), s.get("family")): s.value for s in snap.all(sk.M_TXQ.name)}
    for key in sorted(set(rx) | set(tx), key=lambda k: (protocol_key(k[0]), family_key(k[1]))):
        queues.rows.append({"protocol": key[0], "family": key[1], "receive": rx.get(key),
                            "send": tx.get(key)})

    summary = Section("sockstat", "Kernel totals (/proc/net/sockstat)", [
        Column("name", "WHAT"), Column("value", "VALUE", numeric=True)], empty="not collected")
    summary.rows.extend(_sockstat(snap))

    sources = sorted(f"{s.get('protocol')}={s.get('source')}" for s in snap.all(sk.M_SOURCE.name))
    view = View("states", snap.source, snap.wall, [tcp, phase_sec, dgram, unix, queues, summary])
    if sources:
        view.header = "read with " + ", ".join(sources)
    return view


def _sockstat(snap: Reading) -> List[Dict[str, object]]:
    rows: List[Dict[str, object]] = []

    def add(name: str, metric: str, **labels: str) -> None:
        v = snap.value(metric, **labels)
        if v is not None:
            rows.append({"name": name, "value": v})

    add("sockets used", sk.M_USED.name)
    for s in sorted(snap.all(sk.M_INUSE.name),
                    key=lambda s: (protocol_key(s.get("protocol")), family_key(s.get("family")))):
        rows.append({"name": f"{s.get('protocol')} {s.get('family')} in use", "value": s.value})
    add("tcp orphans (host)", sk.M_ORPHAN.name)
    add("tcp time_wait", sk.M_TW.name)
    add("tcp allocated (host)", sk.M_ALLOC.name)
    for s in sorted(snap.all(sk.M_MEM.name), key=lambda s: protocol_key(s.get("protocol"))):
        rows.append({"name": f"{s.get('protocol')} memory bytes (host)", "value": s.value})
    for s in sorted(snap.all(sk.M_FRAG_Q.name), key=lambda s: family_key(s.get("family"))):
        rows.append({"name": f"{s.get('family')} fragment queues", "value": s.value})
    return rows
