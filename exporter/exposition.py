"""Rendering a scrape: the Prometheus text format (0.0.4) by a lean encoder of our own,
everything else (OpenMetrics, text format 1.0.0 with name escaping) by client_python.

The text format is what Prometheus asks for unless told otherwise, and client_python's
``generate_latest`` spends more on one scrape of this exporter (about 275 samples) than most
collectors do: per sample it re-validates and re-escapes the metric name and every label name,
formats through ``str.format`` and scans the name for three OpenMetrics suffixes. Names come
from a bounded set (the collectors' declarations), so here their escaped forms are memoised, and
a sample costs one join of its labels. The output is byte for byte what ``generate_latest``
writes (tests/test_exposition.py holds the two side by side on full scrapes and on the golden
fixtures); nothing here knows a metric name.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Dict, List, Tuple

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, gzip_accepted
from prometheus_client.exposition import choose_encoder as _prom_choose_encoder
from prometheus_client.exposition import generate_latest as _prom_generate_latest
from prometheus_client.openmetrics import exposition as _om
from prometheus_client.registry import Collector

__all__ = ["choose_encoder", "generate_text", "gzip_accepted"]

# The text format's type for client_python's OpenMetrics types (as generate_latest munges them).
_TEXT_TYPE = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram",
              "unknown": "untyped"}
_NAME_SUFFIX = {"counter": "_total", "info": "_info"}
# Samples with these suffixes go into a gauge family of their own, after the metric's samples.
_OM_SUFFIXES = ("_created", "_gsum", "_gcount")

# Bounded by the names the collectors declare and the label names they use.
_CACHE = 4096


@lru_cache(maxsize=_CACHE)
def _metric_name(name: str) -> str:
    return _om.escape_metric_name(name, _om.UNDERSCORES)


@lru_cache(maxsize=_CACHE)
def _label_prefix(name: str) -> str:
    return _om.escape_label_name(name, _om.UNDERSCORES) + '="'


@lru_cache(maxsize=_CACHE)
def _help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


@lru_cache(maxsize=_CACHE)
def _family_head(name: str, mtype: str, documentation: str) -> Tuple[str, str, Dict[str, str]]:
    """A family's HELP and TYPE lines, its escaped help, and its OpenMetrics sample names."""
    shown = _metric_name(name + _NAME_SUFFIX.get(mtype, ""))
    doc = _help(documentation)
    return (f"# HELP {shown} {doc}\n# TYPE {shown} {_TEXT_TYPE.get(mtype, mtype)}\n", doc,
            {name + suffix: suffix for suffix in _OM_SUFFIXES})


_INF = float("inf")

# The text before the value of a sample ('name{a="x",b="y"} ', 'name '), by its name and
# labels: most series of a scrape are the series of the last one. Cleared when full, so label
# values that churn (ports, destinations) cannot make it grow without bound.
_HEADS: Dict[object, str] = {}
_MAX_HEADS = 20000


def _number(v: float) -> str:
    """client_python's ``floatToGoString``, its cases in the order of how often they occur."""
    d = float(v)
    s = repr(d)
    if d > 0:
        if d == _INF:
            return "+Inf"
        dot = s.find(".")
        if dot > 6:  # Go switches to exponents sooner than Python
            mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1:]}".rstrip("0.")
            return f"{mantissa}e+{dot - 1:02d}"
        return s
    if d == d:
        return "-Inf" if d == -_INF else s
    return "NaN"


def _value(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _sample_head(name: str, labels: Dict[str, str]) -> str:
    """'name{a="x",b="y"} ' or 'name ': a sample's line up to its value."""
    if not labels:
        return _metric_name(name) + " "
    body = '",'.join([_label_prefix(k) + _value(v) for k, v in sorted(labels.items())])
    return f"{_metric_name(name)}{{{body}\"}} "


def generate_text(registry: Collector) -> bytes:
    """The text format 0.0.4 of everything ``registry.collect()`` yields, exactly as
    ``prometheus_client.generate_latest`` renders it."""
    out: List[str] = []
    append = out.append
    metric_name, number = _metric_name, _number
    heads = _HEADS
    for metric in registry.collect():
        name, mtype = metric.name, metric.type
        header, doc, om_names = _family_head(name, mtype, metric.documentation)
        append(header)
        attrs = metric.__dict__
        rows = attrs.get("_rows")
        if rows is not None and not attrs["_samples"]:
            # A family of exporter.rows: (label values, value), no Sample to take apart.
            sname, names = attrs["row_name"], attrs["_labelnames"]
            for values, v in rows:
                rkey: object = (values, sname)  # a tuple first: never a Sample line's key
                head = heads.get(rkey)
                if head is None:
                    head = _sample_head(sname, dict(zip(names, values)))
                    if len(heads) >= _MAX_HEADS:
                        heads.clear()
                    heads[rkey] = head
                append(head + number(v) + "\n")
            continue
        om: Dict[str, List[str]] = {}
        for s in metric.samples:
            sname, labels, ts = s.name, s.labels, s.timestamp
            key = (sname, *labels.items()) if labels else sname
            head = heads.get(key)
            if head is None:
                head = _sample_head(sname, labels)
                if len(heads) >= _MAX_HEADS:
                    heads.clear()
                heads[key] = head
            line = head + number(s.value)
            if ts is not None:
                line = f"{line} {int(float(ts) * 1000):d}"
            suffix = om_names.get(sname)
            if suffix is None:
                append(line + "\n")
            else:
                om.setdefault(suffix, []).append(line + "\n")
        for suffix, lines in sorted(om.items()):
            gauge = metric_name(name + suffix)
            append(f"# HELP {gauge} {doc}\n# TYPE {gauge} gauge\n")
            out.extend(lines)
    return "".join(out).encode("utf-8")


def choose_encoder(accept_header: str) -> Tuple[Callable[[Collector], bytes], str]:
    """As client_python's ``choose_encoder``, with :func:`generate_text` for the plain text
    format; OpenMetrics and escaping-aware text formats stay with client_python."""
    encoder, content_type = _prom_choose_encoder(accept_header)
    if encoder is _prom_generate_latest and content_type == CONTENT_TYPE_PLAIN_0_0_4:
        return generate_text, content_type
    return encoder, content_type
