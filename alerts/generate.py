#!/usr/bin/env python3
"""Generates the Prometheus rule files alerts/netstat-rules.yaml (recording rules) and
alerts/netstat-alerts.yaml (alerting rules) from the rule definitions below and one table of
settings: the series selector, the runbook address, every threshold and every window.

The committed rule files are this script's output with the defaults; tests/test_alerts.py fails
when they differ. To tune, either edit ``SETTINGS`` and run the script, or override settings on
the command line and write the files wherever Prometheus reads them::

    python3 alerts/generate.py --set selector='job="node"' --set close_wait_max=500 \\
        --out /etc/prometheus/rules

``python3 alerts/generate.py --list`` prints every setting with its default and meaning.
Standard library only, so it runs wherever Python 3.9+ does.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
# exporter/availability.py, standard library only like this script.
sys.path.insert(0, os.path.dirname(HERE))
from exporter.availability import where_missing  # noqa: E402

# The metrics these rules use that some system never exports, and the systems that do
# (docs/metrics.md's columns); an alert built on one says so in its description.
# tests/test_alerts.py holds this table against the exporter's own reference.
AVAILABLE_ON: Dict[str, Tuple[str, ...]] = {
    "netstat_limits_tcp_max_orphans": ("Linux",),
    "netstat_limits_tcp_max_tw_buckets": ("Linux",),
    "netstat_listener_accept_queue_length": ("Linux",),
    "netstat_listener_accept_queue_limit": ("Linux",),
    "netstat_netns_skipped": ("Linux",),
    "netstat_netns_sockstat_tcp_time_wait_sockets": ("Linux",),
    "netstat_netns_tcp_ext_listen_drops_total": ("Linux",),
    "netstat_netns_tcp_out_segs_total": ("Linux",),
    "netstat_netns_tcp_retrans_segs_total": ("Linux",),
    "netstat_netns_tcp_sockets": ("Linux",),
    "netstat_ports_ephemeral_available": ("Linux",),
    "netstat_ports_ephemeral_destination_used_max": ("Linux",),
    "netstat_sockstat_tcp_orphan_sockets": ("Linux",),
    "netstat_sockstat_tcp_time_wait_sockets": ("Linux",),
    "netstat_tcp_ext_listen_drops_total": ("Linux",),
    "netstat_tcp_ext_syncookies_sent_total": ("Linux",),
    "netstat_tcp_ext_tw_total": ("Linux",),
    "netstat_tcpevents_port_events_total": ("Linux",),
    "netstat_udp6_rcvbuf_errors_total": ("Linux",),
    "netstat_udp_rcvbuf_errors_total": ("Linux", "macOS"),
}
RULES_FILE = "netstat-rules.yaml"
ALERTS_FILE = "netstat-alerts.yaml"

# (name, default, meaning). Names ending in _for or _window are Prometheus durations; selector
# and runbook_url are text; everything else is a number. The runbook explains each default.
SETTINGS: Tuple[Tuple[str, str, str], ...] = (
    ("selector", 'job="netstat"',
     "label matchers selecting the exporter's series in every rule, e.g. job=\"node\" or "
     "job=~\"netstat|edge\",env=\"prod\""),
    ("runbook_url",
     "https://github.com/netstat-exporter/netstat-exporter/blob/main/alerts/runbook.md",
     "address of alerts/runbook.md; each alert links to #<alert name in lower case>"),
    ("rate_window", "5m", "range of rate() and increase() over the protocol counters"),
    ("time_wait_baseline_window", "1h",
     "window of the TIME_WAIT baseline (median over the window)"),
    ("time_wait_spike_factor", "3", "TIME_WAIT above this many times the baseline is a spike"),
    ("time_wait_spike_min", "5000", "no TIME_WAIT spike below this many sockets"),
    ("time_wait_spike_for", "10m", "how long a TIME_WAIT spike lasts before it alerts"),
    ("time_wait_entries_factor", "3",
     "connections entering TIME_WAIT per rate_window above this many times their baseline "
     "(median over time_wait_baseline_window) is a burst"),
    ("time_wait_entries_min", "5000",
     "no TIME_WAIT entry burst below this many connections entering TIME_WAIT per rate_window"),
    ("time_wait_entries_for", "1m",
     "how long a TIME_WAIT entry burst lasts before it alerts; keep it below rate_window, over "
     "which a burst shorter than a scrape interval stays visible"),
    ("time_wait_limit_ratio", "0.8", "TIME_WAIT sockets / net.ipv4.tcp_max_tw_buckets"),
    ("time_wait_limit_for", "5m", ""),
    ("close_wait_max", "100", "CLOSE_WAIT connections on one listening port (or on the host "
     "without the listeners collector)"),
    ("close_wait_for", "15m", ""),
    ("listen_drops_max", "0", "connection attempts dropped by listeners per rate_window"),
    ("listen_drops_for", "5m", ""),
    ("accept_queue_ratio", "0.8", "accept queue length / accept queue limit of a listener"),
    ("accept_queue_for", "5m", ""),
    ("ephemeral_ports_ratio", "0.8",
     "most ephemeral ports used towards one destination / ephemeral ports available"),
    ("ephemeral_ports_for", "5m", ""),
    ("retransmit_ratio", "0.05", "retransmitted / sent TCP segments over rate_window"),
    ("retransmit_min_rate", "100",
     "sent TCP segments per second below which the retransmission ratio is ignored"),
    ("retransmit_for", "15m", ""),
    ("syncookies_max", "0", "SYN cookies sent per rate_window"),
    ("syncookies_for", "5m", ""),
    ("udp_rcvbuf_errors_max", "0",
     "UDP datagrams dropped per second for a full receive buffer, per address family"),
    ("udp_rcvbuf_errors_for", "15m", ""),
    ("orphans_ratio", "0.5", "orphaned TCP sockets / net.ipv4.tcp_max_orphans"),
    ("orphans_for", "5m", ""),
    ("unexpected_listener_for", "2m", ""),
    ("listener_vanished_window", "1h",
     "a listener present in at least half of this window's scrapes and gone now has vanished"),
    ("listener_vanished_for", "5m", ""),
    ("exporter_down_for", "5m", ""),
    ("exporter_absent_for", "15m", ""),
    ("collector_failing_for", "10m", ""),
)
# Settings of the per-pod rules (the netns collector), kept apart from the host's.
POD_SETTINGS: Tuple[Tuple[str, str, str], ...] = (
    ("kube_state_metrics_selector", 'job="kube-state-metrics"',
     "label matchers selecting kube-state-metrics' kube_pod_info, which gives the per-pod "
     "rules their pod and namespace names"),
    ("pod_time_wait_spike_factor", "3",
     "a pod's TIME_WAIT above this many times its baseline is a spike"),
    ("pod_time_wait_spike_min", "1000", "no pod TIME_WAIT spike below this many sockets"),
    ("pod_time_wait_spike_for", "10m", ""),
    ("pod_close_wait_max", "50", "TCP connections in CLOSE_WAIT in one pod"),
    ("pod_close_wait_for", "15m", ""),
    ("pod_listen_drops_max", "0", "connection attempts dropped by a pod's listeners per "
     "rate_window"),
    ("pod_listen_drops_for", "5m", ""),
    ("netns_skipped_for", "30m", "how long namespaces are left out of every scrape before "
     "it is reported"),
)
# Settings of the per-service TCP event rules (the tcpevents collector).
TCPEVENTS_SETTINGS: Tuple[Tuple[str, str, str], ...] = (
    ("service_retransmit_ratio", "0.5",
     "retransmitted segments per connection established on one port over rate_window"),
    ("service_retransmit_min_rate", "1",
     "retransmits per second on one port below which its ratio is ignored"),
    ("service_retransmit_for", "15m", ""),
    ("service_resets_max", "5", "TCP resets sent and received per second on one port"),
    ("service_resets_for", "10m", ""),
)
SETTINGS = SETTINGS + POD_SETTINGS + TCPEVENTS_SETTINGS
DEFAULTS: Dict[str, str] = {name: default for name, default, _ in SETTINGS}
_SELECTORS = ("selector", "kube_state_metrics_selector")

_DURATION = re.compile(r"^(?:\d+(?:ms|[smhdwy]))+$")
_NUMBER = re.compile(r"^(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


class SettingError(ValueError):
    """A setting that does not exist or whose value has the wrong form."""


def check_settings(values: Mapping[str, str]) -> Dict[str, str]:
    """The defaults overridden by ``values``, each value checked against its kind."""
    out = dict(DEFAULTS)
    for name, value in values.items():
        if name not in DEFAULTS:
            raise SettingError(f"unknown setting {name!r} (see --list)")
        value = str(value).strip()
        if name.endswith(("_for", "_window")):
            if not _DURATION.match(value):
                raise SettingError(f"{name}: {value!r} is not a Prometheus duration (like 5m)")
        elif name in _SELECTORS:
            if not value or "{" in value or "}" in value:
                raise SettingError(f"{name}: give label matchers without braces, "
                                   'like job="netstat"')
        elif name == "runbook_url":
            if not value or "#" in value:
                raise SettingError("runbook_url: give the address of runbook.md, without #")
        elif not _NUMBER.match(value):
            raise SettingError(f"{name}: {value!r} is not a non-negative number")
        out[name] = value
    return out


# --- rule definitions ------------------------------------------------------------------------
# ${name} is replaced by a setting. Expressions are dedented. Series from the exporter are always
# selected with {${selector}}; joins match on instance and job, which every target has.

def _q(query: str) -> str:
    """Template snippet: the humanized value of the first series ``query`` returns (query is a
    printf format taking $labels.instance and $labels.job)."""
    return ('{{ with printf "' + query + '" $labels.instance $labels.job | query }}'
            "{{ . | first | value | humanize }}{{ end }}")


_WHERE = "{{ $labels.address }} port {{ $labels.port }}"
_PROCESS = "{{ with $labels.process }} ({{ . }}){{ end }}"

RECORDING_GROUPS: List[Dict[str, Any]] = [
    {"name": "netstat.rules", "rules": [
        {"record": "instance:netstat_tcp_time_wait:sum", "expr": """
            sum without (protocol, family, state) (
              netstat_sockets{${selector}, protocol="tcp", state="time_wait"}
            )"""},
        # The baseline: the median is not pulled up by a spike until the spike has lasted half
        # the window, so a spike stands out against it.
        {"record": "instance:netstat_tcp_time_wait:median_${time_wait_baseline_window}",
         "expr": """
            quantile_over_time(0.5,
              instance:netstat_tcp_time_wait:sum[${time_wait_baseline_window}]
            )"""},
        # Entries into TIME_WAIT: TcpExt TW is counted when a socket's TIME_WAIT timer is armed
        # (__inet_twsk_schedule, net/ipv4/inet_timewait_sock.c), so a burst of connections that
        # enter TIME_WAIT and are gone before the next scrape still shows here, where the
        # TIME_WAIT gauge above never sees it.
        {"record": "instance:netstat_tcp_time_wait_entries:increase${rate_window}", "expr": """
            increase(netstat_tcp_ext_tw_total{${selector}}[${rate_window}])"""},
        {"record": "instance:netstat_tcp_time_wait_entries_increase${rate_window}"
                   ":median_${time_wait_baseline_window}",
         "expr": """
            quantile_over_time(0.5,
              instance:netstat_tcp_time_wait_entries:increase${rate_window}[${time_wait_baseline_window}]
            )"""},
        {"record": "instance:netstat_tcp_close_wait:sum", "expr": """
            sum without (protocol, family, state) (
              netstat_sockets{${selector}, protocol="tcp", state="close_wait"}
            )"""},
        {"record": "instance:netstat_tcp_out_segs:rate${rate_window}", "expr": """
            rate(netstat_tcp_out_segs_total{${selector}}[${rate_window}])"""},
        {"record": "instance:netstat_tcp_retransmit:ratio_rate${rate_window}", "expr": """
            rate(netstat_tcp_retrans_segs_total{${selector}}[${rate_window}])
            /
            rate(netstat_tcp_out_segs_total{${selector}}[${rate_window}])"""},
        # IPv4 and IPv6 datagrams are counted apart (/proc/net/snmp Udp:, /proc/net/snmp6
        # Udp6*); the family label keeps both series after the counters' names are dropped.
        {"record": "instance_family:netstat_udp_rcvbuf_errors:rate${rate_window}", "expr": """
            label_replace(
              rate(netstat_udp_rcvbuf_errors_total{${selector}}[${rate_window}]),
              "family", "ipv4", "", ""
            )
            or
            label_replace(
              rate(netstat_udp6_rcvbuf_errors_total{${selector}}[${rate_window}]),
              "family", "ipv6", "", ""
            )"""},
    ]},
]


def _alert(name: str, severity: str, expr: str, for_: str, summary: str,
           description: str) -> Dict[str, Any]:
    return {"alert": name, "expr": expr, "for": for_, "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": description,
                            "runbook_url": "${runbook_url}#" + name.lower()}}


_ACCEPT_RATIO = """(
              netstat_listener_accept_queue_length{${selector}}
              / netstat_listener_accept_queue_limit{${selector}}
              > ${accept_queue_ratio}
            )"""
_LISTENERS_OK = 'netstat_exporter_collector_success{${selector}, collector="listeners"}'
_CLOSE_WAIT_PORT = """(
              netstat_listener_connections{${selector}, state="close_wait"}
              > ${close_wait_max}
            )"""

_TW_ENTRIES_BASELINE = ("instance:netstat_tcp_time_wait_entries_increase${rate_window}"
                        ":median_${time_wait_baseline_window}")

ALERT_GROUPS: List[Dict[str, Any]] = [
    {"name": "netstat.sockets", "rules": [
        _alert("NetstatTimeWaitSpike", "warning", """
            instance:netstat_tcp_time_wait:sum
              > ${time_wait_spike_factor}
                * instance:netstat_tcp_time_wait:median_${time_wait_baseline_window}
            and
            instance:netstat_tcp_time_wait:sum > ${time_wait_spike_min}""",
               "${time_wait_spike_for}",
               "TCP sockets in TIME_WAIT far above their usual number.",
               "{{ $labels.instance }} has {{ $value | humanize }} TCP sockets in TIME_WAIT, "
               "more than ${time_wait_spike_factor} times its median of "
               + _q("instance:netstat_tcp_time_wait:median_${time_wait_baseline_window}"
                    "{instance=%q,job=%q}")
               + " over the last ${time_wait_baseline_window}."),
        _alert("NetstatTimeWaitEntryBurst", "warning", """
            instance:netstat_tcp_time_wait_entries:increase${rate_window}
              > ${time_wait_entries_factor}
                * """ + _TW_ENTRIES_BASELINE + """
            and
            instance:netstat_tcp_time_wait_entries:increase${rate_window} > ${time_wait_entries_min}""",
               "${time_wait_entries_for}",
               "Far more TCP connections than usual entered TIME_WAIT.",
               "{{ $value | humanize }} TCP connections entered TIME_WAIT on "
               "{{ $labels.instance }} in the last ${rate_window}, more than "
               "${time_wait_entries_factor} times its median of "
               + _q("instance:netstat_tcp_time_wait_entries_increase${rate_window}"
                    ":median_${time_wait_baseline_window}{instance=%q,job=%q}")
               + " over the last ${time_wait_baseline_window}; a burst of short-lived "
               "connections, seen even if it came and went between two scrapes."),
        _alert("NetstatTimeWaitNearLimit", "warning", """
            netstat_sockstat_tcp_time_wait_sockets{${selector}}
              / netstat_limits_tcp_max_tw_buckets{${selector}}
            > ${time_wait_limit_ratio}""",
               "${time_wait_limit_for}",
               "TCP sockets in TIME_WAIT close to net.ipv4.tcp_max_tw_buckets.",
               "{{ $labels.instance }} holds {{ $value | humanizePercentage }} of "
               "net.ipv4.tcp_max_tw_buckets ("
               + _q("netstat_limits_tcp_max_tw_buckets{instance=%q,job=%q}")
               + ") in TIME_WAIT; past the limit the kernel drops TIME_WAIT sockets early."),
        _alert("NetstatCloseWaitAccumulating", "warning", f"""
            {_CLOSE_WAIT_PORT}
              * on (instance, job, port) group_left (process)
              topk by (instance, job, port) (1,
                max by (instance, job, port, process) (
                  netstat_listener_info{{${{selector}}, protocol="tcp"}}
                )
              )
            or on (instance, job, port)
            {_CLOSE_WAIT_PORT}
            or on (instance, job)
            (
              instance:netstat_tcp_close_wait:sum > ${{close_wait_max}}
              unless on (instance, job) netstat_listener_connections{{${{selector}}}}
            )""",
               "${close_wait_for}",
               "TCP connections pile up in CLOSE_WAIT: an application does not close them.",
               "{{ $labels.instance }} has {{ $value | humanize }} TCP connections in "
               "CLOSE_WAIT on {{ if $labels.port }}{{ if eq $labels.port \"other\" }}"
               "the listening ports beyond --collector.listeners.max-ports{{ else }}"
               "listening port {{ $labels.port }}{{ end }}" + _PROCESS + "{{ else }}"
               "all its ports{{ end }}: the peer closed them and the application did not."),
        _alert("NetstatEphemeralPortsExhaustion", "warning", """
            netstat_ports_ephemeral_destination_used_max{${selector}}
              / on (instance, job) group_left
                netstat_ports_ephemeral_available{${selector}}
            > ${ephemeral_ports_ratio}""",
               "${ephemeral_ports_for}",
               "Ephemeral ports towards one destination are running out.",
               "{{ $labels.instance }} uses {{ $value | humanizePercentage }} of its "
               "ephemeral ports for {{ $labels.protocol }} towards a single destination; "
               "connect() fails with EADDRNOTAVAIL when none are left."),
        _alert("NetstatOrphansNearLimit", "warning", """
            netstat_sockstat_tcp_orphan_sockets{${selector}}
              / netstat_limits_tcp_max_orphans{${selector}}
            > ${orphans_ratio}""",
               "${orphans_for}",
               "Orphaned TCP sockets close to net.ipv4.tcp_max_orphans.",
               "{{ $labels.instance }} has orphaned TCP sockets at "
               "{{ $value | humanizePercentage }} of net.ipv4.tcp_max_orphans ("
               + _q("netstat_limits_tcp_max_orphans{instance=%q,job=%q}")
               + "); past the limit the kernel resets connections (\"too many orphaned "
               "sockets\")."),
    ]},
    {"name": "netstat.listeners", "rules": [
        _alert("NetstatListenDrops", "warning", """
            increase(netstat_tcp_ext_listen_drops_total{${selector}}[${rate_window}])
              > ${listen_drops_max}""",
               "${listen_drops_for}",
               "Listening TCP sockets drop incoming connections.",
               "{{ $labels.instance }} dropped {{ $value | humanize }} incoming TCP connection "
               "attempts in ${rate_window} ("
               + _q("increase(netstat_tcp_ext_listen_overflows_total{instance=%q,job=%q}"
                    "[${rate_window}])")
               + " of them because an accept queue was full)."),
        _alert("NetstatAcceptQueueNearFull", "warning", f"""
            {_ACCEPT_RATIO}
              * on (instance, job, family, address, port) group_left (process)
              topk by (instance, job, family, address, port) (1,
                netstat_listener_info{{${{selector}}, protocol="tcp"}}
              )
            or on (instance, job, family, address, port)
            {_ACCEPT_RATIO}""",
               "${accept_queue_for}",
               "A listener's accept queue is almost full.",
               "The accept queue of " + _WHERE + _PROCESS + " on {{ $labels.instance }} is "
               "{{ $value | humanizePercentage }} full: the application does not accept "
               "connections as fast as they arrive."),
        _alert("NetstatSynCookiesSent", "info", """
            increase(netstat_tcp_ext_syncookies_sent_total{${selector}}[${rate_window}])
              > ${syncookies_max}""",
               "${syncookies_for}",
               "The kernel answers SYNs with SYN cookies.",
               "{{ $labels.instance }} sent {{ $value | humanize }} SYN cookies in "
               "${rate_window}: a listener's SYN queue overflowed (SYN flood, or a backlog too "
               "small for the connection rate)."),
        _alert("NetstatUnexpectedListener", "warning", """
            netstat_listener_info{${selector}, expected="false"}""",
               "${unexpected_listener_for}",
               "A socket listens that the expected-listeners file does not allow.",
               "{{ with $labels.process }}{{ . }}{{ else }}An unattributed process{{ end }}"
               "{{ with $labels.user }} (user {{ . }}){{ end }} listens on {{ $labels.protocol }} "
               + _WHERE + " on {{ $labels.instance }}, which the expected-listeners file does "
               "not list."),
        _alert("NetstatListenerVanished", "warning", f"""
            (
              sum by (instance, job, protocol, address, port) (
                count_over_time(
                  netstat_listener_info{{${{selector}}}}[${{listener_vanished_window}}]
                )
              )
              / on (instance, job) group_left
              sum by (instance, job) (
                count_over_time({_LISTENERS_OK}[${{listener_vanished_window}}])
              )
            ) >= 0.5
            unless on (instance, job, protocol, address, port)
              netstat_listener_info{{${{selector}}}}
            and on (instance, job)
              {_LISTENERS_OK} == 1""",
               "${listener_vanished_for}",
               "A socket that listened for the last hour listens no more.",
               "Nothing listens any more on {{ $labels.protocol }} " + _WHERE + " on "
               "{{ $labels.instance }}, which had a listener in {{ $value | humanizePercentage }}"
               " of the scrapes of the last ${listener_vanished_window}."),
    ]},
    {"name": "netstat.protocols", "rules": [
        _alert("NetstatTcpRetransmitsHigh", "warning", """
            instance:netstat_tcp_retransmit:ratio_rate${rate_window} > ${retransmit_ratio}
            and
            instance:netstat_tcp_out_segs:rate${rate_window} > ${retransmit_min_rate}""",
               "${retransmit_for}",
               "A high share of TCP segments is retransmitted.",
               "{{ $labels.instance }} retransmits {{ $value | humanizePercentage }} of the TCP "
               "segments it sends ("
               + _q("instance:netstat_tcp_out_segs:rate${rate_window}{instance=%q,job=%q}")
               + " segments per second)."),
        _alert("NetstatUdpReceiveBufferErrors", "warning", """
            instance_family:netstat_udp_rcvbuf_errors:rate${rate_window}
              > ${udp_rcvbuf_errors_max}""",
               "${udp_rcvbuf_errors_for}",
               "UDP datagrams are dropped because a receive buffer is full.",
               "{{ $labels.instance }} drops {{ $value | humanize }} {{ $labels.family }} UDP "
               "datagrams per second because a socket's receive buffer is full."),
    ]},
    {"name": "netstat.exporter", "rules": [
        _alert("NetstatExporterDown", "warning", """
            up{${selector}} == 0""",
               "${exporter_down_for}",
               "Prometheus cannot scrape netstat-exporter.",
               "Prometheus has failed to scrape {{ $labels.instance }} (job {{ $labels.job }}) "
               "for ${exporter_down_for}; no netstat alert can fire for that host."),
        _alert("NetstatExporterAbsent", "warning", """
            absent(up{${selector}})""",
               "${exporter_absent_for}",
               "Prometheus has no netstat-exporter target.",
               "No target matches {${selector}}, so none of the netstat alerts can fire; fix "
               "the scrape configuration or the rules' selector."),
        _alert("NetstatCollectorFailing", "warning", """
            netstat_exporter_collector_success{${selector}} == 0""",
               "${collector_failing_for}",
               "A netstat-exporter collector fails.",
               "Collector {{ $labels.collector }} on {{ $labels.instance }} has failed for "
               "${collector_failing_for}; its metrics are missing. The exporter's log says "
               "why."),
    ]},
]


# --- per pod (the netns collector) -----------------------------------------------------------
# NetstatNamespacesSkipped leaves out the reasons that need no action: no_process (a namespace
# pinned by a mount with no process in it runs no workload) and vanished (a namespace that went
# away while read).
# The exporter names a pod's network namespace by its UID only (netns="<uid>", kind="pod"); pod
# and namespace names come from kube-state-metrics' kube_pod_info{uid}, joined here, so neither
# the exporter nor Prometheus needs the Kubernetes API. Each rule keeps instance, job and netns
# and gains namespace and pod (group_left overwrites the namespace/pod labels a Prometheus
# Operator target adds to the exporter's own series). A static pod runs under its config hash
# (the UID in its cgroup path) while the API server and kube_pod_info know its mirror pod by
# another UID; the mirror pod carries the hash in its kubernetes.io/config.mirror annotation,
# which kube-state-metrics exports as kube_pod_annotations when allowed to
# (--metric-annotations-allowlist=pods=[kubernetes.io/config.mirror]): static pods are named
# from that. Pods neither lists (kube-state-metrics down, the annotation not allowed) drop out
# of these rules but stay on the Pods dashboard's namespace panels.

# kube-state-metrics' label for the mirror pod's kubernetes.io/config.mirror annotation.
_MIRROR = "annotation_kubernetes_io_config_mirror"


def _pod(expr: str, by: str = "") -> str:
    """``expr`` summed per namespace (and ``by``) and named from kube_pod_info, or for a static
    pod from its mirror pod's kube_pod_annotations."""
    keep = "instance, job, netns" + (f", {by}" if by else "")
    return f"""
            sum by ({keep}) (
              {expr}
            )
            * on (netns) group_left (namespace, pod)
            (
              label_replace(
                max by (uid, namespace, pod) (kube_pod_info{{${{kube_state_metrics_selector}}}}),
                "netns", "$1", "uid", "(.+)"
              )
              or
              label_replace(
                max by ({_MIRROR}, namespace, pod) (
                  kube_pod_annotations{{${{kube_state_metrics_selector}}, {_MIRROR}!=""}}
                ),
                "netns", "$1", "{_MIRROR}", "(.+)"
              )
            )"""


_POD_WHO = "{{ $labels.namespace }}/{{ $labels.pod }} on {{ $labels.instance }}"

RECORDING_GROUPS.append(
    {"name": "netstat.pods.rules", "rules": [
        {"record": "pod:netstat_netns_tcp_time_wait:sum", "expr": _pod(
            'netstat_netns_sockstat_tcp_time_wait_sockets{${selector}, kind="pod"}')},
        {"record": "pod:netstat_netns_tcp_time_wait:median_${time_wait_baseline_window}",
         "expr": """
            quantile_over_time(0.5,
              pod:netstat_netns_tcp_time_wait:sum[${time_wait_baseline_window}]
            )"""},
        {"record": "pod:netstat_netns_tcp_sockets:sum", "expr": _pod(
            'netstat_netns_tcp_sockets{${selector}, kind="pod"}', "state")},
        {"record": "pod:netstat_netns_tcp_close_wait:sum", "expr": _pod(
            'netstat_netns_tcp_sockets{${selector}, kind="pod", state="close_wait"}')},
        {"record": "pod:netstat_netns_tcp_retransmit:ratio_rate${rate_window}", "expr": _pod(
            'rate(netstat_netns_tcp_retrans_segs_total{${selector}, kind="pod"}[${rate_window}])\n'
            '              / (rate(netstat_netns_tcp_out_segs_total{${selector}, kind="pod"}'
            '[${rate_window}]) > 0)')},
        {"record": "pod:netstat_netns_tcp_ext_listen_drops:increase${rate_window}",
         "expr": _pod('increase(netstat_netns_tcp_ext_listen_drops_total{${selector}, '
                      'kind="pod"}[${rate_window}])')},
    ]})

ALERT_GROUPS.append(
    {"name": "netstat.pods", "rules": [
        _alert("NetstatPodTimeWaitSpike", "warning", """
            pod:netstat_netns_tcp_time_wait:sum
              > ${pod_time_wait_spike_factor}
                * pod:netstat_netns_tcp_time_wait:median_${time_wait_baseline_window}
            and
            pod:netstat_netns_tcp_time_wait:sum > ${pod_time_wait_spike_min}""",
               "${pod_time_wait_spike_for}",
               "A pod's TCP sockets in TIME_WAIT far above their usual number.",
               "Pod " + _POD_WHO + " has {{ $value | humanize }} TCP sockets in TIME_WAIT, "
               "more than ${pod_time_wait_spike_factor} times its median over the last "
               "${time_wait_baseline_window}."),
        _alert("NetstatPodCloseWaitAccumulating", "warning", """
            pod:netstat_netns_tcp_close_wait:sum > ${pod_close_wait_max}""",
               "${pod_close_wait_for}",
               "TCP connections pile up in CLOSE_WAIT in a pod: its application does not "
               "close them.",
               "Pod " + _POD_WHO + " has {{ $value | humanize }} TCP connections in "
               "CLOSE_WAIT: the peer closed them and the application did not."),
        _alert("NetstatPodListenDrops", "warning", """
            pod:netstat_netns_tcp_ext_listen_drops:increase${rate_window}
              > ${pod_listen_drops_max}""",
               "${pod_listen_drops_for}",
               "A pod's listening TCP sockets drop incoming connections.",
               "Pod " + _POD_WHO + " dropped {{ $value | humanize }} incoming TCP connection "
               "attempts in ${rate_window}: its accept queue overflows or its SYN queue is "
               "full."),
        _alert("NetstatNamespacesSkipped", "info", """
            sum by (instance, job, tier, reason) (
              netstat_netns_skipped{${selector}, reason=~"max_namespaces|time_budget|permission|error"}
            ) > 0""",
               "${netns_skipped_for}",
               "The netns collector leaves network namespaces out of its scrapes.",
               "{{ $labels.instance }} leaves {{ $value | humanize }} network namespaces out "
               "of tier {{ $labels.tier }} in every scrape ({{ $labels.reason }}); their pods "
               "are not watched."),
    ]})


# --- per service port (the tcpevents collector) ----------------------------------------------
# One series per (port, side): side="local" is a listening port of the host (joined with
# netstat_listener_info for the process), side="remote" the port of a service the host calls.


def _events(record: str, events: str) -> Dict[str, Any]:
    return {"record": f"instance_port_side:netstat_tcpevents_{record}:rate${{rate_window}}",
            "expr": f"""
            sum without (event) (
              rate(netstat_tcpevents_port_events_total{{${{selector}}, event=~"{events}"}}[${{rate_window}}])
            )"""}


RECORDING_GROUPS.append(
    {"name": "netstat.tcpevents.rules", "rules": [
        _events("retransmits", "retransmit"),
        _events("established", "established"),
        _events("resets", "reset_sent|reset_received"),
    ]})


def _with_process(expr: str) -> str:
    """``expr`` (a template taking a side matcher) with the process of the local listening
    port joined in; remote ports, and local ports nothing listens on, as they are."""
    return f"""
            {expr.format(side='{side="local"}')}
              * on (instance, job, port) group_left (process)
              topk by (instance, job, port) (1,
                max by (instance, job, port, process) (
                  netstat_listener_info{{${{selector}}, protocol="tcp"}}
                )
              )
            or on (instance, job, port, side)
            {expr.format(side="")}"""


_SVC_RTX = """(
              instance_port_side:netstat_tcpevents_retransmits:rate${{rate_window}}{side}
                / instance_port_side:netstat_tcpevents_established:rate${{rate_window}}{side}
                > ${{service_retransmit_ratio}}
              and
              instance_port_side:netstat_tcpevents_retransmits:rate${{rate_window}}{side}
                > ${{service_retransmit_min_rate}}
            )"""
_SVC_RST = """(
              instance_port_side:netstat_tcpevents_resets:rate${{rate_window}}{side}
                > ${{service_resets_max}}
            )"""
_SVC = ("{{ if eq $labels.side \"local\" }}port {{ $labels.port }}" + _PROCESS
        + "{{ else }}connections to remote port {{ $labels.port }}{{ end }} on "
        "{{ $labels.instance }}")

ALERT_GROUPS.append(
    {"name": "netstat.tcpevents", "rules": [
        _alert("NetstatServiceRetransmitsHigh", "warning", _with_process(_SVC_RTX),
               "${service_retransmit_for}",
               "The TCP connections of one service retransmit a lot.",
               "{{ if eq $labels.side \"local\" }}Connections to port {{ $labels.port }}"
               + _PROCESS + "{{ else }}Connections to remote port {{ $labels.port }}{{ end }}"
               " on {{ $labels.instance }} retransmit {{ $value | humanize }} "
               "segments per connection established ("
               "{{ with printf \"instance_port_side:netstat_tcpevents_retransmits:rate${rate_window}"
               "{instance=%q,job=%q,port=%q,side=%q}\" $labels.instance $labels.job "
               "$labels.port $labels.side | query }}{{ . | first | value | humanize }}{{ end }}"
               " retransmits per second)."),
        _alert("NetstatServiceResetsHigh", "warning", _with_process(_SVC_RST),
               "${service_resets_for}",
               "One service's TCP connections end in resets.",
               "{{ $value | humanize }} TCP resets per second (sent and received) on "
               + _SVC + ": connections refused, aborted or reset by the peer."),
    ]})


# --- rendering -------------------------------------------------------------------------------

def _fill(text: str, values: Mapping[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in values:
            raise KeyError(f"no setting {m.group(1)!r}")
        return values[m.group(1)]

    return _PLACEHOLDER.sub(sub, text)


def _resolve(groups: Sequence[Mapping[str, Any]],
             values: Mapping[str, str]) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
    for g in groups:
        rules: List[Dict[str, Any]] = []
        for r in g["rules"]:
            rule: Dict[str, Any] = {}
            for k, v in r.items():
                if isinstance(v, dict):
                    rule[k] = {kk: _fill(vv, values) for kk, vv in v.items()}
                elif k == "expr":
                    rule[k] = _fill(textwrap.dedent(v.lstrip("\n")).strip(), values)
                else:
                    rule[k] = _fill(v, values)
            rules.append(rule)
        out.append({"name": g["name"], "rules": rules})
    return out


def expanded(expr: str, recorded: Mapping[str, str]) -> str:
    """``expr`` followed by the expressions of the recording rules it reads, and of those they
    read (``recorded``: record name -> expression)."""
    out, seen = [expr], set()
    while True:
        new = [name for name in recorded if name not in seen and any(
            re.search(rf"(?<![\w:]){re.escape(name)}(?![\w:])", text) for text in out)]
        if not new:
            return "\n".join(out)
        seen.update(new)
        out += [recorded[name] for name in new]


def rule_groups(values: Optional[Mapping[str, str]] = None) -> Dict[str, List[Dict[str, Any]]]:
    """The rule groups per file name, with settings ``values`` over the defaults."""
    v = check_settings(values or {})
    return {RULES_FILE: _resolve(RECORDING_GROUPS, v), ALERTS_FILE: _resolve(ALERT_GROUPS, v)}


def system_notes(groups: Mapping[str, Sequence[Mapping[str, Any]]]) -> Dict[str, str]:
    """Rule name -> the sentence saying on which systems its metrics (with those of the
    recording rules it reads) never appear, for the rules where some system lacks one: written
    as a comment above the rule, where whoever adopts the rules for a Windows or macOS fleet
    reads them. (A firing alert's description has no need of it: the metric was there.)"""
    recorded = {r["record"]: r["expr"] for g in groups[RULES_FILE] for r in g["rules"]}
    out = {}
    for rules in groups.values():
        for r in (r for g in rules for r in g["rules"]):
            sentence = where_missing(expanded(r["expr"], recorded), AVAILABLE_ON)
            if sentence:
                out[r.get("alert") or r["record"]] = sentence
    return out


def _header(values: Mapping[str, str]) -> str:
    changed = {k: v for k, v in values.items() if DEFAULTS[k] != v}
    lines = ["# Generated by alerts/generate.py; change settings there or with --set, not here.",
             "# See alerts/README.md and alerts/runbook.md."]
    if changed:
        lines.append("# Settings changed from the defaults: "
                     + ", ".join(f"{k}={v}" for k, v in sorted(changed.items())))
    return "\n".join(lines) + "\n"


def to_yaml(groups: Sequence[Mapping[str, Any]], header: str = "",
            notes: Optional[Mapping[str, str]] = None) -> str:
    """A Prometheus rule file. Expressions are block scalars; other strings are double-quoted
    (JSON strings are valid YAML double-quoted scalars); ``notes`` (rule name -> text) become
    comments above their rules."""
    out = [header + "groups:"]
    for g in groups:
        out.append(f"  - name: {json.dumps(g['name'])}")
        out.append("    rules:")
        for r in g["rules"]:
            note = (notes or {}).get(r.get("alert") or r.get("record") or "")
            if note:
                out += ["      # " + line for line in textwrap.wrap(note, 92)]
            first = True
            for key in ("record", "alert", "expr", "for", "labels", "annotations"):
                if key not in r:
                    continue
                lead = "      - " if first else "        "
                first = False
                val = r[key]
                if key == "expr":
                    out.append(f"{lead}expr: |-")
                    out += [("          " + line).rstrip() for line in val.split("\n")]
                elif isinstance(val, dict):
                    out.append(f"{lead}{key}:")
                    out += [f"          {k}: {json.dumps(v)}" for k, v in val.items()]
                else:
                    out.append(f"{lead}{key}: {json.dumps(val)}")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def render(values: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """File name -> text of both rule files."""
    v = check_settings(values or {})
    groups = rule_groups(v)
    notes = system_notes(groups)
    return {name: to_yaml(rules, _header(v), notes) for name, rules in groups.items()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="alerts/generate.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a setting (repeatable); see --list")
    p.add_argument("--out", default=HERE, help="directory to write the rule files to "
                   "(default: %(default)s)")
    p.add_argument("--list", action="store_true", help="print the settings and exit")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if the files in --out differ from the output")
    a = p.parse_args(argv)
    if a.list:
        for name, default, meaning in SETTINGS:
            print(f"{name}={default}" + (f"  # {meaning}" if meaning else ""))
        return 0
    overrides: Dict[str, str] = {}
    for item in a.set:
        name, sep, value = item.partition("=")
        if not sep:
            return _fail(f"--set {item!r}: expected NAME=VALUE")
        overrides[name.strip()] = value
    try:
        files = render(overrides)
    except SettingError as e:
        return _fail(str(e))
    stale = []
    for name, text in files.items():
        path = os.path.join(a.out, name)
        if a.check:
            try:
                with open(path, encoding="utf-8") as f:
                    if f.read() != text:
                        stale.append(path)
            except OSError:
                stale.append(path)
            continue
        try:
            os.makedirs(a.out, exist_ok=True)
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(path + ".tmp", path)
        except OSError as e:
            return _fail(f"cannot write {path}: {e.strerror}")
    if stale:
        return _fail("out of date: " + ", ".join(stale) + " (run alerts/generate.py)", 1)
    return 0


def _fail(message: str, code: int = 2) -> int:
    print(f"alerts/generate.py: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
