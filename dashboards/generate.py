#!/usr/bin/env python3
"""Generates the Grafana dashboards of this directory (netstat-host.json, netstat-listeners.json,
netstat-fleet.json) from plain Python data.

    python3 dashboards/generate.py           # rewrite the JSON files
    python3 dashboards/generate.py --check   # exit 1 if a committed file differs

The JSON is committed; tests/test_dashboards.py fails when it is not what this script writes, and
lints and runs every query in it. Plain dicts rather than an SDK: the dashboard JSON model is
what Grafana imports, and this keeps the project free of a dependency that only builds files.

Conventions kept by construction: every query goes through :func:`sel`, so it carries the
``job`` and ``instance`` matchers; every ``rate``/``increase`` goes through :func:`rate` or
:func:`increase`, so it uses ``$__rate_interval``; every panel is built with a unit and a
description, which names the metrics Windows or macOS lack where the panel uses one; every
data source is the ``${datasource}`` variable.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

Json = Dict[str, Any]

HERE = os.path.dirname(os.path.abspath(__file__))
# The exporter's own reference says which metrics Windows and macOS lack (exporter.docs).
sys.path.insert(0, os.path.dirname(HERE))
from exporter.docs import availability, where_missing  # noqa: E402

AVAILABLE = availability()
SCHEMA_VERSION = 39  # Grafana 11.0
TAGS = ["netstat", "network", "prometheus"]
DS: Json = {"type": "prometheus", "uid": "${datasource}"}
HOST_UID, LISTENERS_UID, FLEET_UID = "netstat-host", "netstat-listeners", "netstat-fleet"
# The series every job/instance variable is read from: always exposed, whichever collectors run.
VAR_METRIC = "netstat_exporter_collector_success"
TOPK = 10

# Recording rule of alerts/netstat-rules.yaml: the median of TIME_WAIT sockets over the last hour,
# the baseline NetstatTimeWaitSpike compares against.
TIME_WAIT_BASELINE = "instance:netstat_tcp_time_wait:median_1h"


# --- PromQL -----------------------------------------------------------------------------------

def sel(metric: str, *matchers: str) -> str:
    """``metric{job=~"$job",instance=~"$instance",<matchers>}``."""
    inner = ",".join(['job=~"$job"', 'instance=~"$instance"', *matchers])
    return f"{metric}{{{inner}}}"


def rate(metric: str, *matchers: str) -> str:
    return f"rate({sel(metric, *matchers)}[$__rate_interval])"


def increase(metric: str, *matchers: str) -> str:
    return f"increase({sel(metric, *matchers)}[$__rate_interval])"


def host_link(job: str, instance: str) -> str:
    """URL of the Host dashboard for one host, keeping data source and time range."""
    return (f"/d/{HOST_UID}/netstat-host?var-datasource=${{datasource}}&var-job={job}"
            f"&var-instance={instance}&${{__url_time_range}}")


# --- panels -----------------------------------------------------------------------------------

def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False,
           table: bool = False) -> Json:
    t: Json = {"datasource": DS, "expr": expr, "refId": ref}
    if table:
        t.update(format="table", instant=True, range=False)
    elif instant:
        t.update(instant=True, range=False)
    else:
        t.update(range=True, instant=False)
    if legend:
        t["legendFormat"] = legend
    return t


def targets(*specs: Tuple[str, str], instant: bool = False, table: bool = False) -> List[Json]:
    """Targets from (expr, legend) pairs, refIds A, B, C..."""
    return [target(e, lg, chr(ord("A") + i), instant, table) for i, (e, lg) in enumerate(specs)]


def thresholds(*steps: Tuple[Optional[float], str]) -> Json:
    return {"mode": "absolute",
            "steps": [{"color": c, "value": v} for v, c in steps]}


GREEN = thresholds((None, "green"))


def override(name: str, *props: Tuple[str, Any], regex: bool = False) -> Json:
    return {"matcher": {"id": "byRegexp" if regex else "byName", "options": name},
            "properties": [{"id": k, "value": v} for k, v in props]}


def _panel(kind: str, title: str, description: str, unit: str, tg: List[Json], w: int, h: int,
           defaults: Optional[Json] = None, overrides: Sequence[Json] = (),
           options: Optional[Json] = None, **extra: Any) -> Json:
    # A panel built on metrics that some systems lack says so (docs/metrics.md's columns).
    missing = where_missing(json.dumps(tg), AVAILABLE)
    p: Json = {
        "type": kind, "title": title, "datasource": DS,
        "description": f"{description} {missing}" if missing else description,
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "fieldConfig": {"defaults": {"unit": unit, **(defaults or {})},
                        "overrides": list(overrides)},
        "options": options or {},
        "targets": tg,
    }
    p.update(extra)
    return p


def timeseries(title: str, description: str, unit: str, tg: List[Json], w: int = 12,
               h: int = 8, stack: bool = False, overrides: Sequence[Json] = (),
               minimum: Optional[float] = 0, max_: Optional[float] = None) -> Json:
    custom: Json = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 30 if stack else 10,
                    "showPoints": "never", "spanNulls": False,
                    "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
    defaults: Json = {"custom": custom, "color": {"mode": "palette-classic"},
                      "thresholds": GREEN}
    if minimum is not None:
        defaults["min"] = minimum
    if max_ is not None:
        defaults["max"] = max_
    return _panel("timeseries", title, description, unit, tg, w, h, defaults, overrides,
                  {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                              "calcs": ["lastNotNull", "max"]},
                   "tooltip": {"mode": "multi", "sort": "desc"}})


def stat(title: str, description: str, unit: str, tg: List[Json], w: int = 4, h: int = 4,
         steps: Json = GREEN, mappings: Sequence[Json] = (), decimals: Optional[int] = None,
         links: Sequence[Json] = ()) -> Json:
    defaults: Json = {"thresholds": steps, "color": {"mode": "thresholds"},
                      "mappings": list(mappings)}
    if decimals is not None:
        defaults["decimals"] = decimals
    if links:
        defaults["links"] = list(links)
    return _panel("stat", title, description, unit, tg, w, h, defaults, (),
                  {"colorMode": "background", "graphMode": "area", "justifyMode": "auto",
                   "orientation": "auto", "textMode": "auto",
                   "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}})


def bargauge(title: str, description: str, unit: str, tg: List[Json], w: int = 8, h: int = 8,
             steps: Json = GREEN, max_: Optional[float] = None, links: Sequence[Json] = ()
             ) -> Json:
    defaults: Json = {"thresholds": steps, "color": {"mode": "thresholds"}, "min": 0,
                      "links": list(links)}
    if max_ is not None:
        defaults["max"] = max_
    return _panel("bargauge", title, description, unit, tg, w, h, defaults, (),
                  {"displayMode": "gradient", "orientation": "horizontal", "showUnfilled": True,
                   "valueMode": "color", "namePlacement": "auto", "sizing": "auto",
                   "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}})


def table(title: str, description: str, unit: str, tg: List[Json], w: int = 24, h: int = 10,
          overrides: Sequence[Json] = (), transformations: Sequence[Json] = (),
          sort_by: Sequence[Tuple[str, bool]] = ()) -> Json:
    return _panel("table", title, description, unit, tg, w, h,
                  {"custom": {"align": "auto", "cellOptions": {"type": "auto"},
                              "filterable": True},
                   "thresholds": GREEN, "color": {"mode": "thresholds"}},
                  overrides,
                  {"showHeader": True, "cellHeight": "sm",
                   "footer": {"show": False, "reducer": ["sum"], "countRows": False,
                              "fields": ""},
                   "sortBy": [{"displayName": n, "desc": d} for n, d in sort_by]},
                  transformations=list(transformations))


def alertlist(title: str, description: str, label_filter: str, w: int = 24, h: int = 6
              ) -> Json:
    """Grafana's alert list panel (unified alerting): the netstat alerts (names starting with
    Netstat, as in alerts/netstat-alerts.yaml) Grafana knows of, including those of a
    Prometheus data source's rules, filtered by label."""
    return {
        "type": "alertlist", "title": title, "description": description,
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "options": {
            "viewMode": "list", "groupMode": "default", "groupBy": [], "maxItems": 20,
            "sortOrder": 3, "dashboardAlerts": False, "alertName": "Netstat",
            "showInstances": True,
            "alertInstanceLabelFilter": label_filter,
            "stateFilter": {"firing": True, "pending": True, "noData": False,
                            "normal": False, "error": True},
            "folder": None,
        },
    }


def row(title: str) -> Json:
    return {"type": "row", "title": title, "collapsed": False, "panels": [],
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0}}


def merge_table(rename: Dict[str, str], hide: Iterable[str] = ("Time", "job"),
                order: Sequence[str] = ()) -> List[Json]:
    """Transformations joining several table queries into one row per label set, then naming
    the value columns (``Value #A`` is query A's value)."""
    return [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {
            "excludeByName": {n: True for n in hide},
            "indexByName": {n: i for i, n in enumerate(order)},
            "renameByName": rename,
        }},
    ]


def layout(panels: List[Json]) -> List[Json]:
    """Place panels left to right, wrapping at the grid's 24 columns; a row starts a new line.
    Assigns ids in order."""
    x = y = line_h = 0
    for i, p in enumerate(panels, start=1):
        p["id"] = i
        g = p["gridPos"]
        if p["type"] == "row" or x + g["w"] > 24:
            y += line_h
            x = line_h = 0
        g["x"], g["y"] = x, y
        x += g["w"]
        line_h = max(line_h, g["h"])
        if p["type"] == "row":
            x, y, line_h = 0, y + 1, 0
    return panels


# --- dashboard --------------------------------------------------------------------------------

def variables(instance_multi: bool) -> List[Json]:
    def query(name: str, q: str, multi: bool) -> Json:
        return {
            "name": name, "label": name.capitalize(), "type": "query", "datasource": DS,
            "query": q, "definition": q, "refresh": 2, "regex": "", "sort": 1,
            "multi": multi, "includeAll": multi, "allValue": ".+",
            "current": {}, "options": [], "hide": 0, "skipUrlSync": False,
        }

    return [
        {"name": "datasource", "label": "Data source", "type": "datasource",
         "query": "prometheus", "current": {}, "options": [], "refresh": 1, "regex": "",
         "hide": 0, "includeAll": False, "multi": False, "skipUrlSync": False},
        query("job", f"label_values({VAR_METRIC}, job)", True),
        query("instance", f'label_values({VAR_METRIC}{{job=~"$job"}}, instance)',
              instance_multi),
    ]


ALERT_ANNOTATION: Json = {
    "name": "Firing netstat alerts", "datasource": DS, "enable": True, "hide": False,
    "iconColor": "red",
    "expr": sel("ALERTS", 'alertstate="firing"', 'alertname=~"Netstat.*"'),
    "step": "1m", "titleFormat": "{{alertname}}", "textFormat": "{{severity}} on {{instance}}",
    "tagKeys": "alertname,severity", "useValueForTime": False,
}


def dashboard(uid: str, title: str, description: str, panels: List[Json],
              instance_multi: bool) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {"refresh_intervals": ["30s", "1m", "5m", "15m"]},
        "refresh": "1m",
        "timezone": "",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [{"title": "Netstat dashboards", "type": "dashboards", "tags": ["netstat"],
                   "asDropdown": False, "includeVars": True, "keepTime": True,
                   "targetBlank": False, "icon": "external link", "tooltip": "", "url": ""}],
        "annotations": {"list": [
            {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
             "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
             "name": "Annotations & Alerts", "type": "dashboard"},
            ALERT_ANNOTATION,
        ]},
        "templating": {"list": variables(instance_multi)},
        "panels": layout(panels),
    }


# --- Host -------------------------------------------------------------------------------------

TCP = 'protocol="tcp"'
NOT_TCP = 'protocol!="tcp"'
EST, TW, CW = 'state="established"', 'state="time_wait"', 'state="close_wait"'
TW_CW = 'state=~"time_wait|close_wait"'
UNEXPECTED = 'expected="false"'
PICK_OUT = [
    override("time_wait", ("color", {"mode": "fixed", "fixedColor": "red"}),
             ("custom.lineWidth", 3), ("custom.fillOpacity", 60)),
    override("close_wait", ("color", {"mode": "fixed", "fixedColor": "orange"}),
             ("custom.lineWidth", 3), ("custom.fillOpacity", 60)),
]
LIMIT_LINE = [("color", {"mode": "fixed", "fixedColor": "dark-red"}),
              ("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}),
              ("custom.fillOpacity", 0), ("custom.lineWidth", 2)]


def host_overview() -> List[Json]:
    """Host dashboard, row Overview: TCP states, the two limits, failing collectors."""
    tw = sel("netstat_sockstat_tcp_time_wait_sockets")
    eph_ratio = (f"max by (job, instance) ({sel('netstat_ports_ephemeral_destination_used_max')})"
                 f" / on (job, instance) {sel('netstat_ports_ephemeral_available')}")
    return [
        row("Overview"),
        stat("Established TCP", "TCP connections in ESTABLISHED, both address families "
             "(netstat_sockets, from sock_diag or /proc/net/tcp*).", "short",
             targets((f"sum({sel('netstat_sockets', TCP, EST)})", ""))),
        stat("TIME_WAIT", "TCP sockets in TIME_WAIT. Thousands are normal on busy clients; "
             "compare with the baseline and the limit below.", "short",
             targets((f"sum({sel('netstat_sockets', TCP, TW)})", ""))),
        stat("CLOSE_WAIT", "TCP sockets whose peer has closed but the local application has "
             "not: a steady rise is a leak in the application.", "short",
             targets((f"sum({sel('netstat_sockets', TCP, CW)})", "")),
             steps=thresholds((None, "green"), (100, "orange"), (1000, "red"))),
        stat("TIME_WAIT / limit", "TIME_WAIT sockets as a fraction of net.ipv4.tcp_max_tw_buckets; "
             "at 100% the kernel destroys new TIME_WAIT sockets early (TCPTimeWaitOverflow).",
             "percentunit",
             targets((f"{tw} / {sel('netstat_limits_tcp_max_tw_buckets')}", "")),
             steps=thresholds((None, "green"), (0.5, "orange"), (0.8, "red")), decimals=1),
        stat("Ephemeral ports / range", "The most local ports used towards one destination "
             "as a fraction of the ephemeral range (ip_local_port_range minus reserved ports); "
             "at 100% connect() to that destination fails with EADDRNOTAVAIL.", "percentunit",
             targets((eph_ratio, "")),
             steps=thresholds((None, "green"), (0.5, "orange"), (0.8, "red")), decimals=1),
        stat("Failing collectors", "Collectors of the exporter that failed in the last scrape "
             "(netstat_exporter_collector_success == 0); the exporter log says why.", "short",
             targets((f"sum(1 - {sel(VAR_METRIC)})", "")),
             steps=thresholds((None, "green"), (1, "red"))),
    ]


def host_socket_states() -> List[Json]:
    """Host dashboard, row Socket states: sockets by state, queues and memory, against limits."""
    return [
        row("Socket states"),
        timeseries("TCP sockets by state", "Every TCP state stacked, both families "
                   "(netstat_sockets). TIME_WAIT (red) and CLOSE_WAIT (orange) are drawn thick.",
                   "short",
                   targets((f"sum by (state) ({sel('netstat_sockets', TCP)})", "{{state}}")),
                   w=16, h=9, stack=True, overrides=PICK_OUT),
        timeseries("Other sockets", "UDP, UDP-Lite and raw sockets by state, and Unix sockets "
                   "by type and state (netstat_sockets, netstat_sockets_unix, up to "
                   "--collector.sockets.unix-states-max of them) and in all states by the "
                   "kernel's in-use count (netstat_sockstat_unix_inuse_sockets).", "short",
                   targets((f"sum by (protocol, state) ({sel('netstat_sockets', NOT_TCP)})",
                            "{{protocol}} {{state}}"),
                           (f"sum by (type, state) ({sel('netstat_sockets_unix')})",
                            "unix {{type}} {{state}}"),
                           (f"sum by (type) ({sel('netstat_sockstat_unix_inuse_sockets')})",
                            "unix {{type}} in use (all states)")),
                   w=8, h=9),
        timeseries("TIME_WAIT against baseline and limit", "TCP sockets in TIME_WAIT, their "
                   f"median over the last hour (recording rule {TIME_WAIT_BASELINE} of "
                   "alerts/netstat-rules.yaml, the baseline of NetstatTimeWaitSpike) and "
                   "net.ipv4.tcp_max_tw_buckets.", "short",
                   targets((f"sum({sel('netstat_sockets', TCP, TW)})", "time_wait"),
                           (sel(TIME_WAIT_BASELINE), "baseline (1h median)"),
                           (sel("netstat_limits_tcp_max_tw_buckets"), "tcp_max_tw_buckets")),
                   overrides=[override("tcp_max_tw_buckets", *LIMIT_LINE),
                              override("baseline (1h median)",
                                       ("custom.lineStyle", {"fill": "dash", "dash": [4, 4]}),
                                       ("custom.fillOpacity", 0))]),
        timeseries("Orphans against limit", "TCP sockets no longer attached to a process "
                   "(/proc/net/sockstat 'orphan', host-wide) and net.ipv4.tcp_max_orphans.",
                   "short",
                   targets((sel("netstat_sockstat_tcp_orphan_sockets"), "orphans"),
                           (sel("netstat_limits_tcp_max_orphans"), "tcp_max_orphans")),
                   overrides=[override("tcp_max_orphans", *LIMIT_LINE)]),
        timeseries("Socket queues", "Bytes waiting in receive and send queues of non-listening "
                   "sockets. A growing receive queue is an application not reading; a growing "
                   "send queue is a slow peer or network.", "bytes",
                   targets((f"sum by (protocol) ({sel('netstat_sockets_receive_queue_bytes')})",
                            "{{protocol}} receive"),
                           (f"sum by (protocol) ({sel('netstat_sockets_send_queue_bytes')})",
                            "{{protocol}} send"))),
        timeseries("Socket memory", "Memory of socket buffers (/proc/net/sockstat 'mem', "
                   "host-wide) against net.ipv4.tcp_mem: above 'pressure' TCP shrinks buffers, "
                   "at 'max' it drops and aborts.", "bytes",
                   targets((f"sum by (protocol) ({sel('netstat_sockstat_memory_bytes')})",
                            "{{protocol}}"),
                           (sel("netstat_limits_tcp_mem_bytes", 'level=~"pressure|max"'),
                            "tcp_mem {{level}}")),
                   overrides=[override("tcp_mem .*", *LIMIT_LINE, regex=True)]),
    ]


def host_tcp_errors() -> List[Json]:
    """Host dashboard, row TCP errors: retransmissions, resets, overflows, SYN cookies, churn."""
    return [
        row("TCP errors"),
        timeseries("Retransmitted segments", "Share of sent TCP segments that were "
                   "retransmissions (RetransSegs / OutSegs in /proc/net/snmp). Above a few "
                   "percent: loss, congestion or a dead peer.", "percentunit",
                   targets((f"{rate('netstat_tcp_retrans_segs_total')} / "
                            f"({rate('netstat_tcp_out_segs_total')} > 0)", "retransmit ratio"))),
        timeseries("Segments", "TCP segments received, sent and retransmitted per second "
                   "(InSegs, OutSegs, RetransSegs).", "pps",
                   targets((rate("netstat_tcp_in_segs_total"), "in"),
                           (rate("netstat_tcp_out_segs_total"), "out"),
                           (rate("netstat_tcp_retrans_segs_total"), "retransmitted"))),
        timeseries("Resets and failed connects", "RSTs sent (OutRsts), established connections "
                   "reset (EstabResets), failed connection attempts (AttemptFails) and bad "
                   "segments received (InErrs), per second.", "cps",
                   targets((rate("netstat_tcp_out_rsts_total"), "resets sent"),
                           (rate("netstat_tcp_estab_resets_total"), "established reset"),
                           (rate("netstat_tcp_attempt_fails_total"), "attempt fails"),
                           (rate("netstat_tcp_in_errs_total"), "in errors"))),
        timeseries("Listen queue overflows and drops", "Connections lost because a listener's "
                   "accept queue was full (ListenOverflows), all SYNs dropped at a listener "
                   "(ListenDrops) and segments dropped on a full socket backlog (TCPBacklogDrop), "
                   "per second. See the Listeners dashboard for which queue.", "cps",
                   targets((rate("netstat_tcp_ext_listen_overflows_total"), "listen overflows"),
                           (rate("netstat_tcp_ext_listen_drops_total"), "listen drops"),
                           (rate("netstat_tcp_ext_tcp_backlog_drop_total"), "backlog drops"))),
        timeseries("SYN cookies", "SYN cookies sent when the SYN queue overflowed, received "
                   "back, and failed to validate, per second (SyncookiesSent/Recv/Failed). "
                   "Sent > 0 means SYN floods or a listener far too slow.", "cps",
                   targets((rate("netstat_tcp_ext_syncookies_sent_total"), "sent"),
                           (rate("netstat_tcp_ext_syncookies_recv_total"), "received"),
                           (rate("netstat_tcp_ext_syncookies_failed_total"), "failed"))),
        timeseries("TIME_WAIT churn", "Sockets entering TIME_WAIT (TW), recycled early "
                   "(TWRecycled), killed by RST (TWKilled) and not created because "
                   "tcp_max_tw_buckets was reached (TCPTimeWaitOverflow), per second.", "cps",
                   targets((rate("netstat_tcp_ext_tw_total"), "entered TIME_WAIT"),
                           (rate("netstat_tcp_ext_tw_recycled_total"), "recycled"),
                           (rate("netstat_tcp_ext_tw_killed_total"), "killed"),
                           (rate("netstat_tcp_ext_tcp_time_wait_overflow_total"), "overflow"))),
        timeseries("Opens and aborts", "Connections opened actively (connect) and passively "
                   "(accept), and connections aborted for lack of memory or on timeout, per "
                   "second.", "cps",
                   targets((rate("netstat_tcp_active_opens_total"), "active opens"),
                           (rate("netstat_tcp_passive_opens_total"), "passive opens"),
                           (rate("netstat_tcp_ext_tcp_abort_on_memory_total"), "aborts: memory"),
                           (rate("netstat_tcp_ext_tcp_abort_on_timeout_total"),
                            "aborts: timeout"))),
    ]


def host_udp() -> List[Json]:
    """Host dashboard, row UDP: UDP errors and datagrams."""
    return [
        row("UDP"),
        timeseries("UDP errors", "Datagrams dropped because the receive buffer was full "
                   "(RcvbufErrors), the send buffer was full (SndbufErrors), all receive errors "
                   "(InErrors) and datagrams to a port with no socket (NoPorts), per second, "
                   "IPv4 (/proc/net/snmp) and IPv6 (/proc/net/snmp6).", "cps",
                   targets((rate("netstat_udp_rcvbuf_errors_total"), "receive buffer"),
                           (rate("netstat_udp_sndbuf_errors_total"), "send buffer"),
                           (rate("netstat_udp_in_errors_total"), "in errors"),
                           (rate("netstat_udp_no_ports_total"), "no port"),
                           (rate("netstat_udp6_rcvbuf_errors_total"), "receive buffer (v6)"),
                           (rate("netstat_udp6_in_errors_total"), "in errors (v6)"))),
        timeseries("UDP datagrams", "UDP datagrams received and sent per second (IPv4).", "pps",
                   targets((rate("netstat_udp_in_datagrams_total"), "in"),
                           (rate("netstat_udp_out_datagrams_total"), "out"))),
    ]


def host_interfaces() -> List[Json]:
    """Host dashboard, row Interfaces: traffic, packets, errors, drops, state and MTU."""
    return [
        row("Interfaces"),
        timeseries("Interface throughput", "Bytes per second received (up) and transmitted "
                   "(down) per interface (/proc/net/dev).", "Bps",
                   targets((rate("netstat_interface_receive_bytes_total"), "{{device}} receive"),
                           (rate("netstat_interface_transmit_bytes_total"),
                            "{{device}} transmit")),
                   minimum=None,
                   overrides=[override(".* transmit", ("custom.transform", "negative-Y"),
                                       regex=True)]),
        timeseries("Interface packets", "Packets per second received and transmitted per "
                   "interface (/proc/net/dev).", "pps",
                   targets((rate("netstat_interface_receive_packets_total"), "{{device}} receive"),
                           (rate("netstat_interface_transmit_packets_total"),
                            "{{device}} transmit")),
                   minimum=None,
                   overrides=[override(".* transmit", ("custom.transform", "negative-Y"),
                                       regex=True)]),
        timeseries("Interface errors and drops", "Packets per second with errors or dropped, "
                   "per interface and direction (/proc/net/dev errs and drop).", "pps",
                   targets((rate("netstat_interface_receive_errors_total"),
                            "{{device}} receive errors"),
                           (rate("netstat_interface_transmit_errors_total"),
                            "{{device}} transmit errors"),
                           (rate("netstat_interface_receive_drop_total"),
                            "{{device}} receive drops"),
                           (rate("netstat_interface_transmit_drop_total"),
                            "{{device}} transmit drops"))),
        table("Interfaces", "Each interface: up (1) or down (0), and its MTU.", "short",
              targets((sel("netstat_interface_up"), ""), (sel("netstat_interface_mtu_bytes"), ""),
                      table=True),
              w=12, h=8,
              overrides=[override("Up", ("mappings", [
                  {"type": "value", "options": {
                      "1": {"text": "up", "color": "green", "index": 0},
                      "0": {"text": "down", "color": "red", "index": 1}}}]),
                  ("custom.cellOptions", {"type": "color-text"})),
                  override("MTU", ("unit", "bytes"))],
              transformations=merge_table({"Value #A": "Up", "Value #B": "MTU"},
                                          hide=("Time", "job", "instance"),
                                          order=("device", "Value #A", "Value #B"))),
    ]


def host_ephemeral_ports() -> List[Json]:
    """Host dashboard, row Ephemeral ports: ephemeral port use against the range."""
    return [
        row("Ephemeral ports"),
        timeseries("Ephemeral ports against the range", "Distinct local ports of the "
                   "ephemeral range in use (per protocol), the most used towards a single "
                   "destination, and the size of the range (ip_local_port_range minus "
                   "ip_local_reserved_ports). Exhaustion is per destination.", "short",
                   targets((sel("netstat_ports_ephemeral_used"), "{{protocol}} in use"),
                           (sel("netstat_ports_ephemeral_destination_used_max"),
                            "{{protocol}} busiest destination"),
                           (sel("netstat_ports_ephemeral_available"), "range size")),
                   w=24, overrides=[override("range size", *LIMIT_LINE)]),
    ]


def host_exporter() -> List[Json]:
    """Host dashboard, row Exporter: the exporter's health and this instance's alerts."""
    return [
        row("Exporter"),
        stat("Collector status", "Whether each collector succeeded in the last scrape "
             "(netstat_exporter_collector_success).", "none",
             targets((sel(VAR_METRIC), "{{collector}}")), w=12, h=5,
             steps=thresholds((None, "red"), (1, "green")),
             mappings=[{"type": "value", "options": {
                 "1": {"text": "OK", "index": 0}, "0": {"text": "FAILED", "index": 1}}}]),
        timeseries("Collector duration", "Time each collector took in the scrape "
                   "(netstat_exporter_collector_duration_seconds).", "s",
                   targets((sel("netstat_exporter_collector_duration_seconds"),
                            "{{collector}}")), w=12, h=5),
        alertlist("Firing and pending alerts", "Netstat alerts of this instance known to "
                  "Grafana's alerting (Grafana-managed, or from a Prometheus data source with "
                  "a ruler).", '{instance=~"$instance"}', w=24, h=6),
    ]


def host() -> Json:
    panels = [*host_overview(), *host_socket_states(), *host_tcp_errors(), *host_udp(),
              *host_interfaces(), *host_ephemeral_ports(), *host_exporter()]
    return dashboard(HOST_UID, "Netstat / Host",
                     "One host's sockets, TCP/UDP errors, interfaces, ephemeral ports and the "
                     "exporter's health, from netstat-exporter.", panels, instance_multi=False)


# --- Listeners --------------------------------------------------------------------------------

LISTENER_LABELS = ("instance", "protocol", "family", "address", "port", "service", "process",
                   "executable", "user", "expected")
EXPECTED_MAPPING = [{"type": "value", "options": {
    "false": {"text": "UNEXPECTED", "color": "red", "index": 0},
    "true": {"text": "expected", "color": "green", "index": 1},
    "": {"text": "no file", "color": "text", "index": 2}}}]


def tcp_events_row() -> List[Json]:
    """The "TCP events" row (tcpevents collector, off by default: no data without it)."""
    ev = "netstat_tcpevents_port_events_total"
    local = ("sum by (port, event) (rate(" + sel(ev, 'side="local"')
             + "[$__rate_interval]))")
    info = sel("netstat_listener_info", 'protocol="tcp"')
    named = (f"label_join({local} * on (port) group_left (process) topk by (port) (1, "
             f'max by (port, process) ({info})), "service", " ", "port", "process") '
             f'or on (port, event) label_join({local}, "service", "", "port")')

    def by_port(matcher: str, by: str = "side, port") -> str:
        return f"sum by ({by}) (rate({sel(ev, matcher)}[$__rate_interval]))"

    transitions = ("topk(10, sum by (from, to) (rate("
                   + sel("netstat_tcpevents_transitions_total") + "[$__rate_interval])))")
    events_cols = ("service\\event", "retransmit", "reset_sent", "reset_received",
                   "established", "peer_close", "connect_failed")
    return [
        row("TCP events"),
        table("Events per listening port", "What netstat -s cannot say: per listening port "
              "of these hosts (with its process), TCP retransmissions, resets sent and "
              "received, connections established, peers closing first and failed connects, "
              "per second, counted by the kernel's tracepoints (tcpevents collector, off by "
              "default; every network namespace of the host counts). A port nothing listens "
              "on shows the resets sent to clients knocking on it.", "cps",
              targets((f"sum by (service, event) ({named})", ""), table=True),
              w=24, h=8,
              transformations=[{"id": "groupingToMatrix", "options": {
                  "columnField": "event", "rowField": "service", "valueField": "Value",
                  "emptyValue": "zero"}},
                  {"id": "organize", "options": {
                      "indexByName": {c: i for i, c in enumerate(events_cols)},
                      "renameByName": {"service\\event": "port and process"}}}],
              sort_by=[("retransmit", True)]),
        timeseries("Retransmits per port", "TCP segments retransmitted per second, by port: "
                   "local (a listening port here: its clients' path loses segments) or remote "
                   "(this host calling that port).", "cps",
                   targets((by_port('event="retransmit"'), "{{side}} {{port}}"))),
        timeseries("Resets per port", "TCP resets sent and received per second, by port and "
                   "side.", "cps",
                   targets((by_port('event=~"reset_.*"', "side, port, event"),
                            "{{side}} {{port}} {{event}}"))),
        timeseries("Failed connects and peer closes", "Connects that failed (SYN_SENT to "
                   "CLOSE: refused or timed out) and connections the peer closed first "
                   "(ESTABLISHED to CLOSE_WAIT), per second, by port.", "cps",
                   targets((by_port('event=~"connect_failed|peer_close"', "side, port, event"),
                            "{{side}} {{port}} {{event}}"))),
        timeseries("State transitions", "TCP state transitions per second, host-wide (every "
                   "network namespace), the ten busiest.", "cps",
                   targets((transitions, "{{from}} → {{to}}"))),
    ]


def listeners() -> Json:
    by = "job, instance, family, address, port"
    info = f"max by (job, {', '.join(LISTENER_LABELS)}) ({sel('netstat_listener_info')})"
    qlen, qlim = sel("netstat_listener_accept_queue_length"), sel(
        "netstat_listener_accept_queue_limit")
    fill = f"max by ({by}) ({qlen}) / max by ({by}) ({qlim} > 0)"

    def tcp(expr: str) -> str:
        # Queue series have no protocol label; adding protocol="tcp" makes the table's merge
        # put them on the TCP row of a port that UDP listens on too.
        return f'label_replace({expr}, "protocol", "tcp", "", "")'

    fill_steps = thresholds((None, "green"), (0.5, "orange"), (0.8, "red"))
    columns = (*LISTENER_LABELS, "Value #B", "Value #C", "Value #D")
    panels = [
        row("Summary"),
        stat("Listening sockets", "Sockets listening, TCP and UDP, both families "
             "(netstat_listener_sockets).", "short",
             targets((f"sum({sel('netstat_listener_sockets')})", "")), w=5),
        stat("Unattributed listeners", "Listeners whose owning process could not be "
             "found (another user's process when the exporter is not root, or a socket held "
             "by the kernel).", "short",
             targets((f"sum({sel('netstat_listener_unattributed')})", "")), w=5,
             steps=thresholds((None, "green"), (1, "orange"))),
        stat("Unexpected listeners", "Listeners matching no entry of the expected-listeners "
             "file; no data when no file is configured.", "short",
             targets((f"sum({sel('netstat_listener_unexpected')})", "")), w=5,
             steps=thresholds((None, "green"), (1, "red"))),
        stat("Expected file loaded", "Whether the last reload of the expected-listeners file "
             "succeeded (0: the previous file is still in use).", "none",
             targets((f"min({sel('netstat_listener_expected_file_reload_success')})", "")),
             w=4, steps=thresholds((None, "red"), (1, "green")),
             mappings=[{"type": "value", "options": {"1": {"text": "OK", "index": 0},
                                                      "0": {"text": "FAILED", "index": 1}}}]),
        stat("Fullest accept queue", "The highest accept-queue fill of any TCP listener "
             "(length over backlog). Full queues overflow: see the TCP errors of the Host "
             "dashboard.", "percentunit", targets((f"max({fill})", "")), w=5,
             steps=fill_steps, decimals=0),

        row("Listeners"),
        table("Listeners", "Every listening socket as netstat -lntup / -b shows it: protocol, "
              "address, port, service, process, executable, user; for TCP the accept queue, "
              "its limit (the backlog) and how full it is. Unexpected listeners are red.",
              "short",
              targets((info, ""), (tcp(f"max by ({by}) ({qlen})"), ""),
                      (tcp(f"max by ({by}) ({qlim})"), ""), (tcp(fill), ""), table=True),
              h=12,
              overrides=[
                  override("Expected", ("mappings", EXPECTED_MAPPING),
                           ("custom.cellOptions", {"type": "color-background"})),
                  override("Queue fill", ("unit", "percentunit"), ("thresholds", fill_steps),
                           ("custom.cellOptions", {"type": "gauge", "mode": "basic"}),
                           ("max", 1), ("min", 0)),
              ],
              transformations=merge_table(
                  {"Value #B": "Accept queue", "Value #C": "Queue limit",
                   "Value #D": "Queue fill", "expected": "Expected"},
                  hide=("Time", "job", "Value #A"), order=columns),
              sort_by=[("Queue fill", True)]),
        table("Listeners not in the expected file", "Listeners that match no entry of the expected-listeners "
              "file: a service that should not run, or a file that needs an entry.", "short",
              targets((f"max by (job, {', '.join(LISTENER_LABELS)}) "
                       f"({sel('netstat_listener_info', UNEXPECTED)})", ""),
                      table=True),
              h=6,
              overrides=[override("expected", ("mappings", EXPECTED_MAPPING),
                                  ("custom.cellOptions", {"type": "color-background"}))],
              transformations=merge_table({}, hide=("Time", "job", "Value"),
                                          order=LISTENER_LABELS)),

        row("Connections per listening port"),
        table("Connections by port and state", "TCP sockets whose local port is a listening "
              "port, by state: the connections a service is serving (netstat_listener_"
              "connections). Ports beyond the exporter's cap are summed as 'other'.", "short",
              targets((f"sum by (port, state) ({sel('netstat_listener_connections')})", ""),
                      table=True),
              w=24, h=8,
              transformations=[{"id": "groupingToMatrix", "options": {
                  "columnField": "state", "rowField": "port", "valueField": "Value",
                  "emptyValue": "zero"}}],
              overrides=[override("time_wait", ("custom.cellOptions",
                                                {"type": "color-text"}),
                                  ("thresholds", thresholds((None, "text"), (1, "red"))),
                                  ("color", {"mode": "thresholds"})),
                         override("close_wait", ("custom.cellOptions",
                                                 {"type": "color-text"}),
                                  ("thresholds", thresholds((None, "text"), (1, "orange"))),
                                  ("color", {"mode": "thresholds"}))]),
        timeseries("Established per port", "ESTABLISHED connections per listening port.",
                   "short",
                   targets((f"sum by (port) ({sel('netstat_listener_connections', EST)})",
                            "{{port}}")), stack=True),
        timeseries("TIME_WAIT and CLOSE_WAIT per port", "Connections of each listening port "
                   "in TIME_WAIT (this side closed first) and CLOSE_WAIT (the peer closed, the "
                   "service has not).", "short",
                   targets((f"sum by (port, state) ({sel('netstat_listener_connections', TW_CW)})",
                            "{{port}} {{state}}"))),

        *tcp_events_row(),

        row("Accept queues"),
        timeseries("Accept queue fill", "Accept queue length over its limit for each TCP "
                   "listener: 100% means new connections are dropped (ListenOverflows).",
                   "percentunit", targets((fill, "{{address}}:{{port}}")), max_=1),
        timeseries("Listen overflows and drops", "Connections dropped host-wide because an "
                   "accept queue was full (ListenOverflows) or at a listener for any reason "
                   "(ListenDrops), per second.", "cps",
                   targets((rate("netstat_tcp_ext_listen_overflows_total"), "overflows"),
                           (rate("netstat_tcp_ext_listen_drops_total"), "drops"))),
        alertlist("Firing and pending alerts", "Netstat alerts of the selected instances known "
                  "to Grafana's alerting.", "", w=24, h=6),
    ]
    return dashboard(LISTENERS_UID, "Netstat / Listeners",
                     "Listening sockets with their process, user and accept queue, the "
                     "connections each listening port serves, and unexpected listeners.",
                     panels, instance_multi=True)


# --- Fleet ------------------------------------------------------------------------------------

def per_host(expr: str) -> str:
    return f"sum by (job, instance) ({expr})"


def fleet() -> Json:
    link = [{"title": "Host dashboard for ${__field.labels.instance}",
             "url": host_link("${__field.labels.job}", "${__field.labels.instance}")}]
    tw = per_host(sel("netstat_sockets", TCP, 'state="time_wait"'))
    cw = per_host(sel("netstat_sockets", TCP, 'state="close_wait"'))
    retrans = (f"{per_host(rate('netstat_tcp_retrans_segs_total'))} / "
               f"({per_host(rate('netstat_tcp_out_segs_total'))} > 0)")
    overflows = per_host(rate("netstat_tcp_ext_listen_overflows_total"))
    ports = (f"max by (job, instance) ({sel('netstat_ports_ephemeral_destination_used_max')})"
             f" / on (job, instance) {sel('netstat_ports_ephemeral_available')}")
    tw_limit = (f"{sel('netstat_sockstat_tcp_time_wait_sockets')} / "
                f"{sel('netstat_limits_tcp_max_tw_buckets')}")
    unexpected = per_host(sel("netstat_listener_unexpected"))
    failing = per_host(f"1 - {sel(VAR_METRIC)}")
    ratio_steps = thresholds((None, "green"), (0.5, "orange"), (0.8, "red"))
    panels = [
        row("Fleet"),
        stat("Hosts reporting", "Hosts whose exporter reports (one series of "
             "netstat_exporter_collector_success per host and collector).", "short",
             targets((f"count(count by (job, instance) ({sel(VAR_METRIC)}))", "")), w=6),
        stat("Hosts with failing collectors", "Hosts where at least one collector failed in "
             "the last scrape.", "short",
             targets((f"count({failing} > 0) or vector(0)", "")), w=6,
             steps=thresholds((None, "green"), (1, "red"))),
        stat("Hosts with unexpected listeners", "Hosts with at least one listener matching "
             "no entry of their expected-listeners file.", "short",
             targets((f"count({unexpected} > 0) or vector(0)", "")), w=6,
             steps=thresholds((None, "green"), (1, "red"))),
        stat("Hosts checking listeners", "Hosts whose exporter has an expected-listeners file "
             "configured (the count above covers only these).", "short",
             targets((f"count({unexpected}) or vector(0)", "")), w=6),

        row(f"Top {TOPK} hosts"),
        bargauge("TIME_WAIT", "Hosts with the most TCP sockets in TIME_WAIT.", "short",
                 targets((f"topk({TOPK}, {tw})", "{{instance}}"), instant=True), links=link),
        bargauge("CLOSE_WAIT", "Hosts with the most TCP sockets in CLOSE_WAIT: applications "
                 "not closing sockets their peers closed.", "short",
                 targets((f"topk({TOPK}, {cw})", "{{instance}}"), instant=True), links=link),
        bargauge("Retransmit ratio", "Hosts with the highest share of TCP segments "
                 "retransmitted (RetransSegs / OutSegs).", "percentunit",
                 targets((f"topk({TOPK}, {retrans})", "{{instance}}"), instant=True),
                 steps=thresholds((None, "green"), (0.01, "orange"), (0.05, "red")),
                 links=link),
        bargauge("Listen overflows", "Hosts dropping the most connections on full accept "
                 "queues (ListenOverflows per second).", "cps",
                 targets((f"topk({TOPK}, {overflows})", "{{instance}}"), instant=True),
                 steps=thresholds((None, "green"), (0.1, "red")), links=link),
        bargauge("Ephemeral port exhaustion", "Hosts closest to running out of ephemeral "
                 "ports towards one destination (busiest destination over range size).",
                 "percentunit",
                 targets((f"topk({TOPK}, {ports})", "{{instance}}"), instant=True),
                 steps=ratio_steps, max_=1, links=link),
        bargauge("TIME_WAIT / limit", "Hosts closest to net.ipv4.tcp_max_tw_buckets.",
                 "percentunit",
                 targets((f"topk({TOPK}, {tw_limit})", "{{instance}}"), instant=True),
                 steps=ratio_steps, max_=1, links=link),

        row("Over time"),
        timeseries("TIME_WAIT by host", f"TCP sockets in TIME_WAIT, the {TOPK} highest hosts "
                   "at each moment.", "short",
                   targets((f"topk({TOPK}, {tw})", "{{instance}}"))),
        timeseries("Retransmit ratio by host", f"Share of TCP segments retransmitted, the "
                   f"{TOPK} highest hosts at each moment.", "percentunit",
                   targets((f"topk({TOPK}, {retrans})", "{{instance}}"))),

        row("Hosts"),
        table("Hosts", "One row per host; click an instance to open its Host dashboard.",
              "short",
              targets((tw, ""), (cw, ""), (retrans, ""), (overflows, ""), (ports, ""),
                      (failing, ""), table=True),
              h=10,
              overrides=[
                  override("instance", ("links", [{
                      "title": "Host dashboard for ${__value.raw}",
                      "url": host_link("${__data.fields.job}", "${__value.raw}")}])),
                  override("Retransmit ratio", ("unit", "percentunit"), ("decimals", 2)),
                  override("Listen overflows/s", ("unit", "cps")),
                  override("Port use", ("unit", "percentunit"), ("thresholds", ratio_steps),
                           ("custom.cellOptions", {"type": "color-background"})),
                  override("Failing collectors", ("thresholds",
                                                  thresholds((None, "green"), (1, "red"))),
                           ("custom.cellOptions", {"type": "color-background"})),
              ],
              transformations=merge_table(
                  {"Value #A": "TIME_WAIT", "Value #B": "CLOSE_WAIT",
                   "Value #C": "Retransmit ratio", "Value #D": "Listen overflows/s",
                   "Value #E": "Port use", "Value #F": "Failing collectors"},
                  hide=("Time",),
                  order=("instance", "job", "Value #A", "Value #B", "Value #C", "Value #D",
                         "Value #E", "Value #F")),
              sort_by=[("TIME_WAIT", True)]),
        alertlist("Firing and pending alerts", "Netstat alerts across the fleet known to "
                  "Grafana's alerting.", "", w=24, h=8),
    ]
    return dashboard(FLEET_UID, "Netstat / Fleet",
                     "Many hosts at once: who has the most TIME_WAIT, CLOSE_WAIT, retransmits, "
                     "listen overflows and ephemeral port use, and who has unexpected listeners.",
                     panels, instance_multi=True)


# --- Pods (the netns collector) ---------------------------------------------------------------
# Every query reads the per-pod recording rules of alerts/netstat-rules.yaml (group
# netstat.pods.rules), which carry the pod and namespace names joined from kube-state-metrics'
# kube_pod_info; the exporter itself knows a pod by its UID only (the netns label).

PODS_UID = "netstat-pods"
POD_TW = "pod:netstat_netns_tcp_time_wait:sum"
POD_CW = "pod:netstat_netns_tcp_close_wait:sum"
POD_STATES = "pod:netstat_netns_tcp_sockets:sum"
POD_RETRANS = "pod:netstat_netns_tcp_retransmit:ratio_rate5m"
POD_DROPS = "pod:netstat_netns_tcp_ext_listen_drops:increase5m"
IN_NS = 'namespace=~"$namespace"'
THE_POD = 'pod=~"$pod"'
POD_LEGEND = "{{namespace}}/{{pod}}"


def pod_variables() -> List[Json]:
    """job and instance, then the Kubernetes namespace and the pod, read from a per-pod rule."""
    def query(name: str, label: str, q: str, multi: bool) -> Json:
        return {
            "name": name, "label": label, "type": "query", "datasource": DS,
            "query": q, "definition": q, "refresh": 2, "regex": "", "sort": 1,
            "multi": multi, "includeAll": multi, "allValue": ".+",
            "current": {}, "options": [], "hide": 0, "skipUrlSync": False,
        }

    return variables(instance_multi=True) + [
        query("namespace", "Namespace", f"label_values({sel(POD_TW)}, namespace)", True),
        query("pod", "Pod", f"label_values({sel(POD_TW, IN_NS)}, pod)", False),
    ]


def pods() -> Json:
    top = f"topk({TOPK}, {{}})"
    ratio_steps = thresholds((None, "green"), (0.01, "orange"), (0.05, "red"))
    panels = [
        row(f"Top {TOPK} pods"),
        bargauge("Pods by TIME_WAIT", "Pods with the most TCP time-wait sockets in their network "
                 "namespace (sockstat tw: TIME_WAIT plus orphaned FIN_WAIT2).", "short",
                 targets((top.format(sel(POD_TW, IN_NS)), POD_LEGEND), instant=True), w=6),
        bargauge("Pods by CLOSE_WAIT", "Pods with the most TCP connections in CLOSE_WAIT: the "
                 "application does not close what its peers closed. Needs "
                 "--collector.netns.sockets.", "short",
                 targets((top.format(sel(POD_CW, IN_NS)), POD_LEGEND), instant=True), w=6),
        bargauge("Pods by retransmit ratio", "Pods retransmitting the largest share of the TCP "
                 "segments they send (RetransSegs / OutSegs over 5m).", "percentunit",
                 targets((top.format(sel(POD_RETRANS, IN_NS)), POD_LEGEND), instant=True), w=6,
                 steps=ratio_steps),
        bargauge("Pods by listen drops", "Pods whose listeners dropped the most connection "
                 "attempts in the last 5 minutes (TcpExtListenDrops: full accept queue or SYN "
                 "queue).", "short",
                 targets((top.format(sel(POD_DROPS, IN_NS)), POD_LEGEND), instant=True), w=6,
                 steps=thresholds((None, "green"), (1, "red"))),

        row("Pod $pod"),
        timeseries("TCP states", "The pod's TCP sockets by state, both families (sock_diag "
                   "inside its namespace, what ss -tan shows there). Needs "
                   "--collector.netns.sockets.", "short",
                   targets((f"sum by (state) ({sel(POD_STATES, IN_NS, THE_POD)})",
                            "{{state}}")), w=24, stack=True),
        timeseries("TIME_WAIT", "The pod's TCP time-wait sockets (sockstat tw).", "short",
                   targets((sel(POD_TW, IN_NS, THE_POD), POD_LEGEND)), w=8),
        timeseries("Retransmit ratio", "Share of the pod's TCP segments retransmitted.",
                   "percentunit",
                   targets((sel(POD_RETRANS, IN_NS, THE_POD), POD_LEGEND)), w=8),
        timeseries("Listen drops", "Connection attempts the pod's listeners dropped per 5 "
                   "minutes.", "short",
                   targets((sel(POD_DROPS, IN_NS, THE_POD), POD_LEGEND)), w=8),

        row("netns"),
        stat("Namespaces found", "Network namespaces the netns collector found on the "
             "selected nodes, by what names them (pod UID, container id, ip netns name, host).",
             "short", targets((f"sum by (kind) ({sel('netstat_netns_namespaces')})",
                               "{{kind}}")), w=8),
        stat("Namespaces skipped", "Namespaces left out of the last scrape, by tier and reason "
             "(see the NetstatNamespacesSkipped runbook section).", "short",
             targets((f"sum by (tier, reason) ({sel('netstat_netns_skipped')})",
                      "tier {{tier}} {{reason}}")), w=8,
             steps=thresholds((None, "green"), (1, "orange"))),
        timeseries("Collector time", "Seconds the netns collector took per scrape; its time "
                   "budget (--collector.netns.time-budget) bounds it.", "s",
                   targets((sel("netstat_exporter_collector_duration_seconds",
                                'collector="netns"'), "{{instance}}")), w=8),
        table("Namespaces that are not pods", "Network namespaces read on the selected nodes "
              "that no pod owns: the host, containers outside Kubernetes (container id), "
              "namespaces made with ip netns (name).", "short",
              targets((sel("netstat_netns_info", 'kind!="pod"'), ""), table=True), h=8,
              transformations=merge_table({"Value #A": "read"},
                                          hide=("Time", "job", "__name__", "pod_uid"))),
    ]
    d = dashboard(PODS_UID, "Netstat / Pods",
                  "Socket trouble per pod: TIME_WAIT, CLOSE_WAIT, retransmits and listen drops "
                  "from each pod's own network namespace (the netns collector), named through "
                  "kube-state-metrics' kube_pod_info.", panels, instance_multi=True)
    d["templating"]["list"] = pod_variables()
    return d


# --- files ------------------------------------------------------------------------------------

def dashboards() -> Dict[str, Json]:
    """File name -> dashboard."""
    return {"netstat-host.json": host(), "netstat-listeners.json": listeners(),
            "netstat-fleet.json": fleet(), "netstat-pods.json": pods()}


def render(d: Json) -> str:
    return json.dumps(d, indent=2, ensure_ascii=False) + "\n"


def main(argv: List[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, d in dashboards().items():
        path = os.path.join(HERE, name)
        text = render(d)
        if check:
            try:
                with open(path, encoding="utf-8") as f:
                    if f.read() != text:
                        stale.append(name)
            except FileNotFoundError:
                stale.append(name)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if stale:
        sys.stderr.write(f"generate.py: out of date: {', '.join(stale)} "
                         "(run python3 dashboards/generate.py)\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
