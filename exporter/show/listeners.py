"""``show listeners``: the ``netstat -tulnp`` / ``netstat -ano -b`` table from the ``listeners``
collector: who listens where, accept queues against their backlog, connections per listening
port and state, and the expected-listeners verdict, unexpected listeners first."""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional, Tuple

from exporter.collectors import listeners as ls
from exporter.show.reading import Reading
from exporter.show.states import state_key
from exporter.show.table import Column, Row, Section, View, percent

VERDICT = {"true": "yes", "false": "NO", "": ""}


def endpoint(family: str, address: str, port: str) -> str:
    return f"[{address}]:{port}" if family == "ipv6" or ":" in address else f"{address}:{port}"


def proto_name(protocol: str, family: str) -> str:
    """netstat's Proto column: tcp, tcp6, udp, udp6."""
    return protocol + ("6" if family == "ipv6" else "")


def _port_key(port: str) -> Tuple[int, str]:
    return (int(port), "") if port.isdigit() else (1 << 20, port)


def queues(snap: Reading) -> List[Row]:
    """Accept queues of TCP listeners, fullest (against the backlog) first."""
    limit = {(s.get("family"), s.get("address"), s.get("port")): s.value
             for s in snap.all(ls.M_LIMIT.name)}
    rows: List[Row] = []
    for s in snap.all(ls.M_QUEUE.name):
        key = (s.get("family"), s.get("address"), s.get("port"))
        lim: Optional[float] = limit.get(key)
        rows.append({"address": endpoint(*key), "family": key[0], "port": key[2],
                     "queue": s.value, "backlog": lim,
                     "fill": (s.value / lim) if lim else None})
    rows.sort(key=lambda r: (-(r["fill"] or 0.0), -r["queue"], _port_key(r["port"]), r["address"]))
    return rows


def connections(snap: Reading) -> Dict[str, Dict[str, float]]:
    """port -> state -> TCP connections on that listening port."""
    out: Dict[str, Dict[str, float]] = defaultdict(dict)
    for s in snap.all(ls.M_CONN.name):
        out[s.get("port")][s.get("state")] = s.value
    return out


def build(snap: Reading) -> View:
    info = snap.all(ls.M_INFO.name)
    conns = connections(snap)
    rows: List[Row] = []
    for s in info:
        fam, port = s.get("family"), s.get("port")
        row: Row = {
            "proto": proto_name(s.get("protocol"), fam), "protocol": s.get("protocol"),
            "family": fam, "address": s.get("address"), "port": port,
            "local": endpoint(fam, s.get("address"), port), "service": s.get("service"),
            "process": s.get("process"), "executable": s.get("executable"),
            "user": s.get("user"), "expected": VERDICT.get(s.get("expected"), s.get("expected")),
        }
        if "pid" in s.labels:  # --collector.listeners.pid-label
            pid = s.get("pid")
            row["pid"] = int(pid) if pid.isdigit() and pid != "0" else None
        rows.append(row)
    rows.sort(key=lambda r: (r["expected"] != "NO", r["protocol"], _port_key(r["port"]),
                             r["family"], r["address"], r["process"]))
    pid_col = [Column("pid", "PID", numeric=True)] if any("pid" in r for r in rows) else []
    # Without an expected-listeners file there is no verdict: no column, no order by it.
    judged = any(r["expected"] for r in rows)
    verdict = [Column("expected", "EXPECTED")] if judged else []
    main = Section("listeners", "Listening sockets" + (" (unexpected first)" if judged else ""), [
        Column("proto", "PROTO"), Column("local", "LOCAL ADDRESS"),
        Column("service", "SERVICE", shrink=True), Column("process", "PROGRAM", shrink=True),
        *pid_col, Column("user", "USER", shrink=True), *verdict,
        Column("executable", "EXECUTABLE", shrink=True, keep_end=True)], rows)

    q = Section("queues", "TCP accept queues (fullest first)", [
        Column("address", "LOCAL ADDRESS"), Column("queue", "QUEUE", numeric=True),
        Column("backlog", "BACKLOG", numeric=True),
        Column("fill", "FULL", numeric=True, fmt=percent)], queues(snap),
        empty="not reported by this source")

    # Every state is in JSON; the text shows the states some port has connections in
    # (established always), so the table fits.
    states = sorted({st for per in conns.values() for st in per}, key=state_key)
    shown = [st for st in states
             if st == "established" or any(per.get(st) for per in conns.values())]
    c = Section("connections", "TCP connections per listening port", [
        Column("port", "PORT"), *[Column(st, st.upper(), numeric=True) for st in shown]],
        [{"port": p, **{st: conns[p].get(st, 0.0) for st in states}}
         for p in sorted(conns, key=_port_key)],
        empty="not collected: the exporter runs with --no-collector.listeners.connections")

    view = View("listeners", snap.source, snap.wall, [main, q, c])
    facts = []
    unexpected = sum(s.value for s in snap.all(ls.M_UNEXPECTED.name))
    if snap.has(ls.M_UNEXPECTED.name):
        facts.append(f"{unexpected:.0f} unexpected")
    unattributed = sum(s.value for s in snap.all(ls.M_UNATTRIBUTED.name))
    if unattributed:
        facts.append(f"{unattributed:.0f} without a known process")
    total = sum(s.value for s in snap.all(ls.M_COUNT.name))
    view.header = f"{total:.0f} listening sockets" + ("; " + "; ".join(facts) if facts else "")
    return view
