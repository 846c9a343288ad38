"""promtool check metrics on a real scrape of the running exporter, with every collector that is
on by default, reports nothing; the text encoder writes what client_python's would."""

from __future__ import annotations

import os
import subprocess
from typing import Iterator, List, Tuple

import pytest
from helpers import FIXTURES, have, running_exporter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
    SummaryMetricFamily,
    UnknownMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

from exporter import cli
from exporter.exposition import choose_encoder, generate_text
from exporter.scrape import Exporter


def test_promtool_check_metrics_on_a_live_scrape() -> None:
    if not have("promtool"):
        pytest.fail("promtool not installed (scripts/test-all installs Debian's prometheus)")
    with running_exporter() as ex:
        text = ex.scrape_text()
    assert "netstat_sockets{" in text
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", \
        (r.stdout, r.stderr)


# --- the text encoder against client_python's --------------------------------------------

class _Fixed(Collector):
    """The metrics of one collection, replayed: both encoders render the same scrape."""

    def __init__(self, metrics: List[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


def _both(metrics: List[Metric]) -> Tuple[bytes, bytes]:
    fixed = _Fixed(metrics)
    return generate_text(fixed), generate_latest(fixed)


def _exporter(*args: str) -> Exporter:
    ctx = cli.cli.make_context("netstat-exporter", list(args))
    return Exporter(cli.build_config(ctx.params))


def test_text_encoder_matches_client_python_on_a_full_scrape() -> None:
    """Every collector that is on by default plus the optional ones, read from this host."""
    ex = _exporter("--collector.listeners.pid-label", "--collector.routes.table",
                   "--collector.protocols.fields=.*", "--collector.ports.top-destinations=5")
    metrics = list(ex.target().collect())
    assert sum(len(m.samples) for m in metrics) > 200
    ours, theirs = _both(metrics)
    assert ours == theirs


@pytest.mark.parametrize("scenario", ["new", "old", "ipv6-disabled", "malformed", "truncated"])
def test_text_encoder_matches_client_python_on_the_fixtures(scenario: str) -> None:
    ex = _exporter(f"--path.procfs={os.path.join(FIXTURES, 'proc', scenario)}",
                   f"--path.sysfs={os.path.join(FIXTURES, 'sys', scenario)}",
                   "--collector.disable-defaults", "--collector.protocols",
                   "--collector.protocols.fields=.*", "--collector.interfaces",
                   "--collector.routes", "--collector.routes.table", "--collector.ports",
                   "--collector.ports.source=procfs", "--collector.ports.top-destinations=5",
                   "--collector.limits")
    metrics = list(ex.target().collect())
    assert metrics
    ours, theirs = _both(metrics)
    assert ours == theirs


def test_text_encoder_matches_client_python_on_every_metric_type() -> None:
    """The cases a collector might bring one day: escapes in label values and HELP, names
    outside the legacy character set, every metric type, _created samples, timestamps,
    special and large values."""
    counter = CounterMetricFamily("c", 'help with \\ and\nnewline and "quotes"', labels=["a"],
                                  created=1700000000.5)
    counter.add_metric(['back\\slash "quoted"\nnew line'], 3, created=1700000000.25)
    counter.add_metric(["ünïcødé"], 1e21)
    gauge = GaugeMetricFamily("g", "plain")
    gauge.add_metric([], float("nan"))
    gauge2 = GaugeMetricFamily("g2", "special", labels=["z", "a", "m"])
    gauge2.add_metric(["1", "2", "3"], float("inf"), timestamp=1234.5678)
    gauge2.add_metric(["4", "5", "6"], float("-inf"))
    gauge2.add_metric(["7", "8", "9"], 1234567.0)
    gauge2.add_metric(["", "", ""], -0.0)
    info = InfoMetricFamily("i", "info", value={"version": "1.2", "odd": 'x"y'})
    hist = HistogramMetricFamily("h", "hist", buckets=[("0.5", 1), ("+Inf", 3)], sum_value=2.5)
    ghist = GaugeHistogramMetricFamily("gh", "ghist", buckets=[("1", 1), ("+Inf", 2)],
                                       gsum_value=1.5)
    summary = SummaryMetricFamily("s", "summary", count_value=4, sum_value=0.1)
    state = StateSetMetricFamily("st", "stateset", value={"a": True, "b": False})
    unknown = UnknownMetricFamily("u", "unknown", value=7)
    odd_name = GaugeMetricFamily("my.metric-name", "not a legacy name", labels=["label.name"])
    odd_name.add_metric(["v"], 1)
    ours, theirs = _both([counter, gauge, gauge2, info, hist, ghist, summary, state, unknown,
                          odd_name])
    assert ours == theirs
    assert b"_created" in ours and b"_gsum" in ours  # the special cases were exercised


def test_choose_encoder_keeps_client_python_for_other_formats() -> None:
    assert choose_encoder("")[0] is generate_text
    assert choose_encoder("text/plain;version=0.0.4;q=0.5,*/*;q=0.1")[0] is generate_text
    for accept in ("application/openmetrics-text; version=1.0.0; charset=utf-8",
                   "application/openmetrics-text",
                   "text/plain;version=1.0.0;escaping=allow-utf-8"):
        enc, content_type = choose_encoder(accept)
        assert enc is not generate_text, accept
        assert (enc, content_type) != (generate_text, CONTENT_TYPE_PLAIN_0_0_4)


def test_served_text_is_the_text_encoder_and_openmetrics_still_served() -> None:
    with running_exporter() as ex:
        status, headers, body = ex.get("/metrics")
        assert status == 200 and headers["Content-Type"] == CONTENT_TYPE_PLAIN_0_0_4
        assert body.endswith(b"\n") and b"# TYPE netstat_exporter_collector_success gauge\n" \
            in body
        status, headers, body = ex.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert status == 200 and headers["Content-Type"].startswith(
            "application/openmetrics-text")
        assert body.endswith(b"# EOF\n")


def test_number_format_is_client_pythons() -> None:
    from prometheus_client.utils import floatToGoString

    from exporter.exposition import _number

    values = [0, 1, -1, 0.0, -0.0, 0.5, 1e-7, 123456.0, 1234567.0, 1234567.5, 9999999.0,
              1e15, 1e16, 1e21, 1.5e300, -1234567.0, -1e21, 2**53 + 1, 10**25,
              float("inf"), float("-inf"), float("nan"), 42, True]
    for v in values:
        assert _number(v) == floatToGoString(v), v


def test_remembered_sample_heads_stay_bounded_and_right(monkeypatch) -> None:
    """Series heads are remembered between scrapes; label values that churn (a new port every
    scrape) neither grow the memory past its bound nor ever give a stale line."""
    from exporter import exposition

    monkeypatch.setattr(exposition, "_MAX_HEADS", 50)
    monkeypatch.setattr(exposition, "_HEADS", {})

    class Churn(Collector):
        def __init__(self) -> None:
            self.round = 0

        def collect(self) -> Iterator[GaugeMetricFamily]:
            g = GaugeMetricFamily("netstat_test_bytes", "Churning ports.", labels=["port", "x"])
            for i in range(30):
                g.add_metric([str(1000 * self.round + i), 'a"b\\c'], float(i))
            g.add_metric(["1", "same"], 1.5)
            yield g

    c = Churn()
    for r in range(6):
        c.round = r
        assert generate_text(c) == generate_latest(c)  # type: ignore[arg-type]
        assert len(exposition._HEADS) <= 50
