"""limits: the /proc/sys reader, the collector on fixture trees (conntrack present or not, a
malformed value), and live values set in a fresh network namespace."""

from __future__ import annotations

import os

import pytest
from helpers import FIXTURES, value
from nshelpers import dump, needs_root, netns, read_sysctl, set_sysctl
from prometheus_client import CollectorRegistry

from exporter.collectors.limits import LimitsCollector
from exporter.config import Config
from exporter.procfs import sysctl
from exporter.procfs.errors import ParseError

PAGE = os.sysconf("SC_PAGE_SIZE")


def test_parse_ints() -> None:
    assert sysctl.parse_ints("287898\t383867\t575796\n", "p") == [287898, 383867, 575796]
    for bad in ("", "abc", "1 x"):
        with pytest.raises(ParseError):
            sysctl.parse_ints(bad, "p")


def test_read_missing_and_multi() -> None:
    root = os.path.join(FIXTURES, "proc", "old")
    assert sysctl.read_int(root, "net/netfilter/nf_conntrack_max") is None
    with pytest.raises(ParseError, match="expected one value, got 3"):
        sysctl.read_int(root, "net/ipv4/tcp_mem")


def collect(scenario: str) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(LimitsCollector(Config(procfs=os.path.join(FIXTURES, "proc", scenario))))
    return reg


def test_collector_on_fixtures() -> None:
    reg = collect("new")
    assert reg.get_sample_value("netstat_limits_tcp_max_tw_buckets") == 131072
    assert reg.get_sample_value("netstat_limits_tcp_fin_timeout_seconds") == 60
    assert reg.get_sample_value("netstat_limits_somaxconn") == 4096
    assert reg.get_sample_value("netstat_limits_tcp_mem_bytes", {"level": "pressure"}) == \
        383867 * PAGE
    assert reg.get_sample_value("netstat_limits_ip_local_port_range_low") == 40000
    assert reg.get_sample_value("netstat_limits_ip_local_port_range_high") == 40099
    assert reg.get_sample_value("netstat_limits_nf_conntrack_entries") == 12
    assert reg.get_sample_value("netstat_limits_nf_conntrack_max") == 262144
    old = collect("old")
    assert old.get_sample_value("netstat_limits_nf_conntrack_max") is None
    assert old.get_sample_value("netstat_limits_somaxconn") == 4096


def test_missing_tree_is_no_data(tmp_path: os.PathLike[str]) -> None:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(LimitsCollector(Config(procfs=str(tmp_path))))
    assert list(reg.collect()) == []


def test_malformed_value_names_the_file() -> None:
    with pytest.raises(ParseError, match=r"sys/net/ipv4/tcp_fin_timeout:1: not an integer"):
        list(LimitsCollector(Config(procfs=os.path.join(FIXTURES, "proc", "malformed")))
             .collect())


@needs_root
def test_live_values_set_in_a_namespace() -> None:
    with netns("limits") as ns:
        set_sysctl(ns, {"net/ipv4/tcp_max_tw_buckets": "4321",
                        "net/ipv4/tcp_fin_timeout": "17", "net/core/somaxconn": "777",
                        "net/ipv4/tcp_max_syn_backlog": "333",
                        "net/ipv4/ip_local_port_range": "41000 41999"})
        samples = dump(ns, "--collector.disable-defaults", "--collector.limits")
        # tcp_mem, tcp_max_orphans and conntrack are global; recent kernels hide them from
        # other namespaces, and then they are no data.
        mem = [int(x) for x in read_sysctl(ns, "net/ipv4/tcp_mem").split()]
        orphans = read_sysctl(ns, "net/ipv4/tcp_max_orphans")
        ct = {k: read_sysctl(ns, f"net/netfilter/{k}")
              for k in ("nf_conntrack_count", "nf_conntrack_max")}
    assert value(samples, "netstat_limits_tcp_max_tw_buckets") == 4321
    assert value(samples, "netstat_limits_tcp_fin_timeout_seconds") == 17
    assert value(samples, "netstat_limits_somaxconn") == 777
    assert value(samples, "netstat_limits_tcp_max_syn_backlog") == 333
    assert value(samples, "netstat_limits_ip_local_port_range_low") == 41000
    assert value(samples, "netstat_limits_ip_local_port_range_high") == 41999
    assert value(samples, "netstat_limits_tcp_max_orphans") == \
        (float(orphans) if orphans else None)
    for level, pages in zip(("min", "pressure", "max"), mem or [None] * 3):
        want = pages * PAGE if pages is not None else None
        assert value(samples, "netstat_limits_tcp_mem_bytes", level=level) == want
    for key, metric in (("nf_conntrack_count", "netstat_limits_nf_conntrack_entries"),
                        ("nf_conntrack_max", "netstat_limits_nf_conntrack_max")):
        want = float(ct[key]) if ct[key] else None
        assert value(samples, metric) == want
