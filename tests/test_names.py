"""Every metric name the exporter can export, listed, so that renaming one is always deliberate.

Dashboards, alert rules and users' own queries depend on these names. A change to the naming
rule, a collector's declaration or the protocol table that renames or drops a metric fails here
until tests/fixtures/metric-names.txt is updated in the same commit (and with it docs/metrics.md,
the rules and the dashboards, whose tests check the names they use against the declarations).
"""

from __future__ import annotations

import os
import re
from typing import Set

from helpers import FIXTURES, run_cli
from prometheus_client.parser import text_string_to_metric_families

from exporter import docs
from exporter.collectors.protocols.table import TABLE

LIST = os.path.join(FIXTURES, "metric-names.txt")


def listed() -> Set[str]:
    with open(LIST) as f:
        return {line.strip() for line in f if line.strip()}


def test_every_exported_name_is_listed() -> None:
    declared = docs.metric_names()
    added, removed = sorted(declared - listed()), sorted(listed() - declared)
    assert not added and not removed, (
        f"metric names changed (new: {added}; gone: {removed}). If that is intended, update "
        f"{LIST} and say so in the change: dashboards and alerts of users depend on them")


def test_every_name_a_full_dump_emits_is_listed() -> None:
    """The list is of what is really exported, not only of the declarations: every collector on,
    every protocol field selected, on this machine."""
    r = run_cli("--collector.protocols.fields=.*", "--collector.routes.table", "dump")
    assert r.returncode == 0, r.stderr
    names = listed()
    emitted = set()
    for fam in text_string_to_metric_families(r.stdout):
        if fam.name.startswith("process_"):
            continue  # client_python's process collector: its names are not ours to choose
        name = fam.name + ("_total" if fam.type == "counter" else "")
        emitted.add(name)
        pattern = re.sub(r"type\d+", "type<n>", name)
        assert name in names or pattern in names, name
    assert len(emitted) > 100


# Abbreviations the naming rule used to cut in two ("delayed_ac_ks", "frag_o_ks",
# "ml_dv2", "tcpsack"), and units that are not base units.
BAD = re.compile(r"_(?:ac_ks|o_ks|rt_os|ml_dv2|tcp(?:sack|dsack|ack|ao|md5|ofo|mtup|plb|syn|ts|hp))_"
                 r"|octets|_ms(?:_|$)|millisecond|_mp_tcp_")


def test_names_read_as_an_sre_types_them() -> None:
    names = listed()
    for n in names:
        assert not BAD.search(n + "_"), n
        # One-letter words only where the kernel has them (TCPRcvQDrop, TCPReqQFullDrop).
        for word in n.split("_"):
            assert len(word) > 1 or word == "q", n
    # One prefix per subsystem: never both "listener_" and "listeners_", "route_" and "routes".
    prefixes = {n.split("_")[1] for n in names}
    assert not {p for p in prefixes if p + "s" in prefixes}, prefixes
    # The same kernel word is spelt one way: SACK is "sack" in every TcpExt name.
    for n in names:
        if n.startswith("netstat_tcp_ext_tcp"):
            assert n.startswith("netstat_tcp_ext_tcp_"), n


def test_help_keeps_the_kernel_field() -> None:
    """Renamed for reading, each protocol metric's HELP still names the kernel's own field, so
    nstat output maps to metrics and back."""
    by_name = {f.name: f for f in TABLE.values()}
    for name, kernel in [("netstat_tcp_ext_delayed_acks_total", "TcpExt DelayedACKs"),
                         ("netstat_ip_ext_in_bytes_total", "IpExt InOctets"),
                         ("netstat_tcp_rto_min_seconds", "Tcp RtoMin"),
                         ("netstat_icmp6_in_mldv2_reports_total", "Icmp6 InMLDv2Reports")]:
        assert by_name[name].help.startswith(kernel + " in /proc/net/"), name
