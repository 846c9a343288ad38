"""exporter.rows: families that keep (label values, value) rows are, to everyone reading them,
client_python's families with the same calls; the text encoder writes their rows as
client_python writes the samples."""

from __future__ import annotations

from typing import Iterator, List

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.samples import Sample

from exporter.exposition import generate_text
from exporter.rows import CounterRows, GaugeRows


class _Registry:
    def __init__(self, metrics: List[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


def _pair(kind: str) -> List[Metric]:
    """The same calls on a family of rows and on client_python's own."""
    out: List[Metric] = []
    for cls in ((GaugeRows, GaugeMetricFamily) if kind == "gauge"
                else (CounterRows, CounterMetricFamily)):
        fam = cls(f"x_{kind}", 'help with "quotes" and \\ and\nnewline', labels=["b", "a"])
        fam.add_metric(["1", 'q"uote'], 1.5)
        fam.add_metric(("2", "back\\slash"), 2.0)
        fam.add_metric(["3", "new\nline"], float("inf"))
        out.append(fam)
    return out


def test_rows_read_as_client_python_samples() -> None:
    for kind in ("gauge", "counter"):
        rows, prom = _pair(kind)
        assert rows.samples == prom.samples
        assert rows == prom and rows.type == prom.type and rows.name == prom.name
        assert rows.samples[0].name == (f"x_{kind}_total" if kind == "counter" else "x_gauge")


def test_rows_are_written_as_client_python_writes_the_samples() -> None:
    for kind in ("gauge", "counter"):
        rows, prom = _pair(kind)
        want = generate_latest(_Registry([prom]))  # type: ignore[arg-type]
        # Twice: the second time each line's start comes from the encoder's memo.
        for _ in range(2):
            rows2, _ = _pair(kind)
            assert generate_text(_Registry([rows2])) == want


def test_samples_appended_between_rows_keep_their_order() -> None:
    """A collector may append Samples to the list ``samples`` gives it and add rows after;
    readers and the encoder see all of them in the order they came."""
    rows, prom = _pair("gauge")
    for fam in (rows, prom):
        fam.samples.append(Sample("x_gauge", {"a": "x", "b": "y"}, 7.0, None))
        fam.add_metric(["4", "z"], 4.0)
    assert [s.value for s in rows.samples] == [1.5, 2.0, float("inf"), 7.0, 4.0]
    assert rows.samples == prom.samples
    assert generate_text(_Registry([rows])) == \
        generate_latest(_Registry([prom]))  # type: ignore[arg-type]


def test_a_created_time_or_timestamp_takes_client_pythons_path() -> None:
    rows = CounterRows("c", "h", labels=["l"])
    prom = CounterMetricFamily("c", "h", labels=["l"])
    gauge_rows = GaugeRows("g", "h", labels=[])
    gauge_prom = GaugeMetricFamily("g", "h", labels=[])
    for fam in (rows, prom):
        fam.add_metric(["v"], 3.0, created=1700000000.0)
        fam.add_metric(["w"], 4.0)
    for fam in (gauge_rows, gauge_prom):
        fam.add_metric([], 1.0, timestamp=1700000000.5)
        fam.add_metric([], 2.0)
    assert rows.samples == prom.samples and len(prom.samples) == 3
    assert gauge_rows.samples == gauge_prom.samples
    assert generate_text(_Registry([rows, gauge_rows])) == \
        generate_latest(_Registry([prom, gauge_prom]))  # type: ignore[arg-type]


def test_setting_samples_replaces_the_rows() -> None:
    fam = GaugeRows("g", "h", labels=["l"])
    fam.add_metric(["a"], 1.0)
    fam.samples = [Sample("g", {"l": "b"}, 2.0, None)]
    assert [s.labels["l"] for s in fam.samples] == ["b"]
    assert generate_text(_Registry([fam])) == b'# HELP g h\n# TYPE g gauge\ng{l="b"} 2.0\n'


def test_asking_whether_there_are_samples_leaves_the_rows() -> None:
    from exporter.rows import has_samples

    fam = GaugeRows("g", "h", labels=[])
    assert not has_samples(fam)
    fam.add_metric([], 1.0)
    assert has_samples(fam) and fam.__dict__["_rows"] and not fam.__dict__["_samples"]
    assert has_samples(GaugeMetricFamily("p", "h", value=1.0))


def test_metricdoc_add_takes_label_values_in_declared_order() -> None:
    from exporter.collectors.api import MetricDoc

    doc = MetricDoc("netstat_test_rows", "gauge", "h", ("b", "a"))
    fam = doc.family()
    doc.add(fam, {"a": "1", "b": "2"}, 3.0)
    assert fam.__dict__["_rows"] == [(("2", "1"), 3.0)]
    doc.add(fam, {"a": "1", "c": "2"}, 4.0)  # not the declared labels: a Sample as given
    assert [s.labels for s in fam.samples] == [{"b": "2", "a": "1"}, {"a": "1", "c": "2"}]
