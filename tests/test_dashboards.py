"""Tests of the Grafana dashboards in dashboards/.

Grafana itself is not installed on test machines, so the dashboards are proved the next best way:
- dashboards/generate.py makes every committed file (tests/test_regenerate.py holds the JSON
  to its output);
- the rules of Grafana's dashboard linter (github.com/grafana/dashboard-linter), rewritten here,
  pass, with the exceptions of dashboards/.lint;
- every metric name in a query is in the exporter's metrics reference (or is a recording rule of
  alerts/netstat-rules.yaml, or a series Prometheus makes itself);
- every query, with Grafana's variables substituted, is accepted by a real Prometheus that has
  scraped the real exporter, and returns data unless listed in EXPECTED_EMPTY with a reason;
- the fleet dashboard returns one row per host when Prometheus scrapes exporters in several
  network namespaces.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import subprocess
import time
import urllib.parse
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

import pytest
import yaml
from helpers import ROOT, free_port, have, http_get, poll, running_exporter, stop
from nshelpers import NetNS

from exporter import docs
from exporter.collectors.api import specs

DASH_DIR = os.path.join(ROOT, "dashboards")
# The dashboards every real-Prometheus test here must fill on a plain host.
FILES = ("netstat-host.json", "netstat-listeners.json", "netstat-fleet.json")
# The Pods dashboard needs pods and kube-state-metrics: tests/test_netns_e2e.py fills it.
POD_FILES = ("netstat-pods.json",)
ALL_FILES = FILES + POD_FILES
UIDS = {"netstat-host.json": "netstat-host", "netstat-listeners.json": "netstat-listeners",
        "netstat-fleet.json": "netstat-fleet", "netstat-pods.json": "netstat-pods"}
RULES_FILE = os.path.join(ROOT, "alerts", "netstat-rules.yaml")
ALERTS_FILE = os.path.join(ROOT, "alerts", "netstat-alerts.yaml")
DS_VAR = "${datasource}"
# Series Prometheus makes itself, which the exporter's reference cannot list.
PROMETHEUS_SERIES = {"ALERTS"}
# Units of Grafana's value formats (packages/grafana-data/src/valueFormats/categories.ts) that the
# dashboards may use.
UNITS = {"none", "short", "percent", "percentunit", "bytes", "decbytes", "bits", "Bps", "bps",
         "pps", "cps", "ops", "s", "ms", "dateTimeAsIso", "dateTimeFromNow", "bool"}
# Panel types whose fieldConfig carries a unit (the linter checks stat, graph, table,
# timeseries, gauge; bargauge is held to the same rule here).
UNIT_PANELS = {"stat", "table", "timeseries", "gauge", "bargauge"}
RATE_FUNCS = {"rate", "irate", "increase"}

# (dashboard uid, panel title or annotation name, refId) -> why no data is right on an idle
# host. Everything else must return data. tests/test_tcpevents_e2e.py makes the traffic the
# tcpevents panels show, and holds them to it.
EXPECTED_EMPTY: Dict[Tuple[str, str, str], str] = {
    ("netstat-listeners", "Retransmits per port", "A"): "tcpevents: no port retransmitted",
    ("netstat-listeners", "Resets per port", "A"): "tcpevents: no reset sent or received",
    ("netstat-listeners", "Failed connects and peer closes", "A"):
        "tcpevents: no connect failed and no peer closed first",
}


def load(name: str) -> Dict[str, Any]:
    with open(os.path.join(DASH_DIR, name), encoding="utf-8") as f:
        return json.load(f)  # type: ignore[no-any-return]


def generator() -> Any:
    spec = importlib.util.spec_from_file_location("dashboards_generate",
                                                  os.path.join(DASH_DIR, "generate.py"))
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def lint_exclusions() -> Dict[str, Set[str]]:
    """Rule name -> dashboard titles excluded by dashboards/.lint."""
    with open(os.path.join(DASH_DIR, ".lint"), encoding="utf-8") as f:
        conf = yaml.safe_load(f)
    out: Dict[str, Set[str]] = {}
    for rule, body in (conf.get("exclusions") or {}).items():
        assert body and body.get("reason"), f".lint: exclusion of {rule} needs a reason"
        out[rule] = {e["dashboard"] for e in body.get("entries") or []}
    return out


# --- a small PromQL lexer: enough to find selectors, ranges and the functions around them ------

_TOKEN = re.compile(r"""\s*(?:
    (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<brace>\{(?:"(?:[^"\\]|\\.)*"|[^}"])*\})
  | (?P<range>\[[^\]]*\])
  | (?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?)
  | (?P<id>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>\S)
)""", re.X)
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan"}
AGGREGATORS = {"sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk",
               "quantile", "count_values", "group"}
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}


class Selector:
    def __init__(self, metric: str, matchers: List[Tuple[str, str, str]],
                 range_: Optional[str], func: Optional[str]) -> None:
        self.metric, self.matchers, self.range, self.func = metric, matchers, range_, func


def tokens(expr: str) -> List[Tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        if not expr[pos:].strip():
            break
        m = _TOKEN.match(expr, pos)
        assert m, f"cannot lex {expr[pos:]!r}"
        kind = m.lastgroup
        assert kind
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def matchers(brace: str) -> List[Tuple[str, str, str]]:
    body, out, pos = brace[1:-1], [], 0
    while body[pos:].strip():
        m = _MATCHER.match(body, pos)
        assert m, f"bad matchers {brace!r}"
        out.append((m.group(1), m.group(2), m.group(3)))
        pos = m.end()
    return out


def selectors(expr: str) -> List[Selector]:
    """Every vector selector of a PromQL expression, with its range and the function that
    directly takes it."""
    toks = tokens(expr)
    out: List[Selector] = []
    stack: List[Optional[str]] = []  # function (or None for plain parentheses) per open paren
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else ("", "")
        if kind == "id" and text in LABEL_LISTS:
            if nxt == ("op", "("):  # by (a, b): label names, not metrics
                i += 2
                while toks[i] != ("op", ")"):
                    i += 1
            i += 1
            continue
        if kind == "id" and text in AGGREGATORS and nxt != ("op", "("):
            # sum by (a) (...): skip the label list; the next parenthesis is the aggregator's
            i += 1
            if toks[i][1] in ("by", "without"):
                i += 2
                while toks[i] != ("op", ")"):
                    i += 1
                i += 1
            assert toks[i] == ("op", "("), f"aggregator without operand in {expr!r}"
            stack.append(text)
            i += 1
            continue
        if kind == "id" and nxt == ("op", "("):
            stack.append(text)
            i += 2
            continue
        if kind == "op" and text == "(":
            stack.append(None)
        elif kind == "op" and text == ")":
            stack.pop()
        elif kind == "id" and text.lower() not in KEYWORDS:
            ms: List[Tuple[str, str, str]] = []
            j = i + 1
            if j < len(toks) and toks[j][0] == "brace":
                ms = matchers(toks[j][1])
                j += 1
            rng = toks[j][1][1:-1] if j < len(toks) and toks[j][0] == "range" else None
            if rng is not None:
                j += 1
            out.append(Selector(text, ms, rng, stack[-1] if stack else None))
            i = j
            continue
        elif kind == "range":
            raise AssertionError(f"range without a selector in {expr!r}")
        i += 1
    assert not stack, f"unbalanced parentheses in {expr!r}"
    return out


def label_values_inner(query: str) -> str:
    m = re.fullmatch(r"label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\)", query)
    assert m, f"variable query {query!r} is not label_values(<selector>, <label>)"
    return m.group(1)


# --- walking a dashboard -----------------------------------------------------------------------

def panels(d: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    for p in d["panels"]:
        yield p
        yield from p.get("panels", [])  # collapsed rows keep their panels inside


def queries(d: Dict[str, Any]) -> Iterator[Tuple[str, str, str, bool]]:
    """(panel title or annotation name, refId, expr, instant) of every PromQL query."""
    for p in panels(d):
        for t in p.get("targets", []):
            yield p["title"], t["refId"], t["expr"], bool(t.get("instant"))
    for a in d["annotations"]["list"]:
        if "expr" in a:
            yield a["name"], "annotation", a["expr"], False


def lint(d: Dict[str, Any], exclusions: Optional[Dict[str, Set[str]]] = None) -> List[str]:
    """Problems Grafana's dashboard linter would report (plus the project's conventions)."""
    exclusions = lint_exclusions() if exclusions is None else exclusions
    title = d.get("title", "")
    bad: List[str] = []
    if d.get("schemaVersion", 0) < 39:
        bad.append(f"schemaVersion {d.get('schemaVersion')} is older than Grafana 11's 39")
    if "netstat" not in d.get("tags", []):
        bad.append("not tagged netstat")
    if not any(lk.get("type") == "dashboards" and "netstat" in lk.get("tags", [])
               for lk in d.get("links", [])):
        bad.append("no link to the other netstat dashboards")

    # template-datasource-rule
    tvars = {v["name"]: v for v in d["templating"]["list"]}
    ds = [v for v in tvars.values() if v["type"] == "datasource"]
    if len(ds) != 1 or ds[0]["name"] != "datasource" or ds[0].get("query") != "prometheus":
        bad.append("template-datasource-rule: need one 'datasource' variable of type prometheus")
    elif ds[0].get("label") != "Data source":
        bad.append("template-datasource-rule: datasource variable should be labelled "
                   "'Data source'")
    # template-job-rule, template-instance-rule, template-label-promql-rule,
    # template-on-time-change-reload
    for name in ("job", "instance"):
        v = tvars.get(name)
        if v is None:
            bad.append(f"template-{name}-rule: no {name} variable")
            continue
        if v.get("datasource", {}).get("uid") not in ("$datasource", DS_VAR):
            bad.append(f"template-{name}-rule: {name} variable does not use $datasource")
        if v["type"] != "query" or v.get("label") != name.capitalize():
            bad.append(f"template-{name}-rule: {name} should be a query labelled "
                       f"{name.capitalize()}")
        if v.get("allValue") != ".+":
            bad.append(f"template-{name}-rule: allValue should be '.+'")
        if not v.get("multi") and title not in exclusions.get(f"template-{name}-rule", ()):
            bad.append(f"template-{name}-rule: {name} should be multi-select")
        try:
            inner = label_values_inner(v["query"])
            if name == "instance":
                check_selectors(inner, bad, f"{name} variable", need=("job",))
            tokens(inner)
        except AssertionError as e:
            bad.append(f"template-label-promql-rule: {e}")
    for v in tvars.values():
        if v["type"] == "query" and v.get("refresh") != 2:
            bad.append(f"template-on-time-change-reload: {v['name']} refresh should be 2")

    titles = [p.get("title") for p in panels(d) if p["type"] != "row"]
    if len(titles) != len(set(titles)):
        bad.append(f"panel titles are not unique (.lint entries and reports name panels by "
                   f"title): {sorted(t for t in titles if titles.count(t) > 1)}")
    ids = [p.get("id") for p in panels(d)]
    if len(ids) != len(set(ids)) or None in ids:
        bad.append(f"panel ids are not unique: {ids}")
    grid_problems(d, bad)
    for p in panels(d):
        where = f"panel {p.get('title')!r}"
        if p["type"] == "row":
            continue
        # panel-title-description-rule
        if not p.get("title") or not p.get("description"):
            bad.append(f"panel-title-description-rule: {where} needs a title and description")
        # panel-units-rule
        if p["type"] in UNIT_PANELS:
            unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
            if unit not in UNITS:
                bad.append(f"panel-units-rule: {where} has no or invalid unit {unit!r}")
            for o in p["fieldConfig"].get("overrides", []):
                for prop in o["properties"]:
                    if prop["id"] == "unit" and prop["value"] not in UNITS:
                        bad.append(f"panel-units-rule: {where} override unit {prop['value']!r}")
        if p["type"] == "alertlist":
            continue
        # panel-no-targets-rule, panel-datasource-rule
        tg = p.get("targets") or []
        if not tg:
            bad.append(f"panel-no-targets-rule: {where} has no targets")
        if p.get("datasource", {}).get("uid") != DS_VAR:
            bad.append(f"panel-datasource-rule: {where} does not use {DS_VAR}")
        refs = [t.get("refId") for t in tg]
        if len(refs) != len(set(refs)) or not all(refs):
            bad.append(f"{where}: targets need distinct refIds, have {refs}")
        for t in tg:
            if t.get("datasource", {}).get("uid") != DS_VAR:
                bad.append(f"panel-datasource-rule: {where} target {t.get('refId')} "
                           f"does not use {DS_VAR}")
    for title_, ref, expr, _ in queries(d):
        check_selectors(expr, bad, f"{title_!r}/{ref}")
    hard_coded_datasources(d, bad)
    return bad


def check_selectors(expr: str, bad: List[str], where: str,
                    need: Tuple[str, ...] = ("job", "instance")) -> None:
    try:
        sels = selectors(expr)
    except AssertionError as e:
        bad.append(f"target-promql-rule: {where}: {e}")
        return
    for s in sels:
        have_ = {(n, op, v) for n, op, v in s.matchers}
        for label in need:  # target-job-rule, target-instance-rule
            if (label, "=~", f"${label}") not in have_:
                bad.append(f"target-{label}-rule: {where}: {s.metric} lacks {label}=~\"${label}\"")
        if s.func in RATE_FUNCS and s.range != "$__rate_interval":
            bad.append(f"target-rate-interval-rule: {where}: {s.func} over [{s.range}]")
        if s.metric.endswith("_total") and (s.func not in RATE_FUNCS or s.range is None):
            bad.append(f"target-counter-agg-rule: {where}: {s.metric} not in rate/increase")


def hard_coded_datasources(node: Any, bad: List[str], path: str = "") -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "datasource" and v is not None:
                uid = v.get("uid") if isinstance(v, dict) else v
                if uid not in (DS_VAR, "-- Grafana --"):
                    bad.append(f"hard-coded datasource {v!r} at {path}")
            hard_coded_datasources(v, bad, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            hard_coded_datasources(v, bad, f"{path}[{i}]")


def grid_problems(d: Dict[str, Any], bad: List[str]) -> None:
    taken: Dict[Tuple[int, int], str] = {}
    for p in d["panels"]:
        g = p["gridPos"]
        if g["x"] < 0 or g["w"] < 1 or g["x"] + g["w"] > 24:
            bad.append(f"panel {p['title']!r} outside the 24-column grid: {g}")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in taken:
                    bad.append(f"panel {p['title']!r} overlaps {taken[(x, y)]!r}")
                    return
                taken[(x, y)] = p["title"]


# --- static tests ------------------------------------------------------------------------------

def test_the_generator_makes_every_dashboard_file() -> None:
    """Each committed file is generated (tests/test_regenerate.py holds them to the output)."""
    assert sorted(generator().dashboards()) == sorted(ALL_FILES)


@pytest.mark.parametrize("name", ALL_FILES)
def test_dashboard_passes_the_linter_rules(name: str) -> None:
    d = load(name)
    assert d["uid"] == UIDS[name]
    assert lint(d) == []


def test_uids_unique_and_dashboards_link_each_other() -> None:
    ds = [load(n) for n in ALL_FILES]
    assert len({d["uid"] for d in ds}) == len(ds)
    assert len({d["title"] for d in ds}) == len(ds)
    for d in ds:  # the dashboards link is by tag: each must carry the others' tag
        for link in d["links"]:
            assert all(t in other["tags"] for other in ds for t in link["tags"])
    # Hosts on the Fleet dashboard link to the Host dashboard with that host's instance.
    fleet = json.dumps(load("netstat-fleet.json"))
    assert "/d/netstat-host/" in fleet and "var-instance=${__value.raw}" in fleet \
        and "var-instance=${__field.labels.instance}" in fleet


def test_every_metric_is_in_the_reference() -> None:
    known = docs.metric_names() | recording_rules() | PROMETHEUS_SERIES
    used: Dict[str, str] = {}
    for name in ALL_FILES:
        d = load(name)
        for title, ref, expr, _ in queries(d):
            for s in selectors(expr):
                used.setdefault(s.metric, f"{name}: {title}/{ref}")
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                for s in selectors(label_values_inner(v["query"])):
                    used.setdefault(s.metric, f"{name}: variable {v['name']}")
    unknown = {m: where for m, where in used.items() if m not in known}
    assert not unknown, f"metrics not in docs/metrics.md nor the recording rules: {unknown}"


def recording_rules() -> Set[str]:
    if not os.path.exists(RULES_FILE):
        return set()
    with open(RULES_FILE, encoding="utf-8") as f:
        rules = yaml.safe_load(f)
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def test_expected_empty_entries_name_real_queries() -> None:
    real = {(load(n)["uid"], t, ref) for n in ALL_FILES for t, ref, _, _ in queries(load(n))}
    assert set(EXPECTED_EMPTY) <= real, set(EXPECTED_EMPTY) - real


# The lint must be able to fail: each mutation breaks one rule and must be reported.
def _mutations() -> List[Tuple[str, Callable[[Dict[str, Any]], None], str]]:
    def first_target(d: Dict[str, Any]) -> Dict[str, Any]:
        return next(t for p in panels(d) for t in p.get("targets", []))

    def first_rate(d: Dict[str, Any]) -> Dict[str, Any]:
        return next(t for p in panels(d) for t in p.get("targets", [])
                    if "$__rate_interval" in t["expr"])

    def drop_instance(d: Dict[str, Any]) -> None:
        t = first_target(d)
        t["expr"] = t["expr"].replace('instance=~"$instance",', "")

    def fixed_range(d: Dict[str, Any]) -> None:
        t = first_rate(d)
        t["expr"] = t["expr"].replace("$__rate_interval", "5m")

    def raw_counter(d: Dict[str, Any]) -> None:
        first_target(d)["expr"] = 'netstat_tcp_out_segs_total{job=~"$job",instance=~"$instance"}'

    def hard_ds(d: Dict[str, Any]) -> None:
        next(p for p in panels(d) if p["type"] != "row")["datasource"] = {
            "type": "prometheus", "uid": "P1809F7CD0C75ACF3"}

    def no_unit(d: Dict[str, Any]) -> None:
        p = next(p for p in panels(d) if p["type"] == "timeseries")
        del p["fieldConfig"]["defaults"]["unit"]

    def no_description(d: Dict[str, Any]) -> None:
        next(p for p in panels(d) if p["type"] != "row")["description"] = ""

    def dup_id(d: Dict[str, Any]) -> None:
        d["panels"][2]["id"] = d["panels"][1]["id"]

    def dup_title(d: Dict[str, Any]) -> None:
        ps = [p for p in panels(d) if p["type"] != "row"]
        ps[1]["title"] = ps[0]["title"]

    def dup_ref(d: Dict[str, Any]) -> None:
        p = next(p for p in panels(d) if len(p.get("targets", [])) > 1)
        p["targets"][1]["refId"] = p["targets"][0]["refId"]

    def single_job(d: Dict[str, Any]) -> None:
        next(v for v in d["templating"]["list"] if v["name"] == "job")["multi"] = False

    def no_reload(d: Dict[str, Any]) -> None:
        next(v for v in d["templating"]["list"] if v["name"] == "job")["refresh"] = 1

    return [("drop instance matcher", drop_instance, "target-instance-rule"),
            ("rate over 5m", fixed_range, "target-rate-interval-rule"),
            ("raw counter", raw_counter, "target-counter-agg-rule"),
            ("hard-coded datasource", hard_ds, "panel-datasource-rule"),
            ("no unit", no_unit, "panel-units-rule"),
            ("no description", no_description, "panel-title-description-rule"),
            ("duplicate panel id", dup_id, "panel ids are not unique"),
            ("duplicate refId", dup_ref, "distinct refIds"),
            ("duplicate title", dup_title, "panel titles are not unique"),
            ("single-select job", single_job, "job should be multi-select"),
            ("variable not reloaded", no_reload, "template-on-time-change-reload")]


@pytest.mark.parametrize("what,mutate,expected", _mutations(), ids=lambda x: x
                         if isinstance(x, str) else "")
def test_lint_reports_each_broken_rule(what: str, mutate: Callable[[Dict[str, Any]], None],
                                       expected: str) -> None:
    d = copy.deepcopy(load("netstat-host.json"))
    mutate(d)
    problems = lint(d)
    assert any(expected in p for p in problems), (what, problems)


def test_selector_lexer() -> None:
    s = selectors('sum by (job, instance) (rate(a_total{job=~"$job",x="}"}[$__rate_interval])) '
                  '/ on (job) group_left (y) max(b{instance=~"$i"}) or vector(0) '
                  'and topk(10, label_replace(c, "d", "e", "", ""))')
    assert [(x.metric, x.func, x.range) for x in s] == [
        ("a_total", "rate", "$__rate_interval"), ("b", "max", None), ("c", "label_replace", None)]
    assert s[0].matchers == [("job", "=~", "$job"), ("x", "=", "}")]


# --- end to end: a real Prometheus scraping the real exporter ----------------------------------

def substitute(expr: str, job: str, instance: str) -> str:
    """Grafana's variables as Grafana would expand them for a 1 s scrape interval."""
    for k, v in (("$__rate_interval", "15s"), ("$__interval", "5s"), ("$__range", "1m"),
                 ("$job", job), ("$instance", instance)):
        expr = expr.replace(k, v)
    assert "$" not in expr, expr
    return expr


def collector_flags() -> List[str]:
    """Every registered collector on, default or not. The netns collector reads every network
    namespace of the machine, other runs' included, so its time budget is cut to keep each
    scrape well inside the 1 s scrape timeout these tests use (what it leaves out is counted,
    and its own dashboard is tested in test_netns_e2e.py)."""
    return [f"--collector.{n}" for n in specs()] + ["--collector.netns.time-budget=0.1"]


def alerts_without_for(workdir: str) -> str:
    """A copy of alerts/netstat-alerts.yaml whose alerts fire as soon as their expression holds
    (no ``for``), so that a test of a few seconds sees ALERTS series for the annotations."""
    with open(ALERTS_FILE, encoding="utf-8") as f:
        rules = yaml.safe_load(f)
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("for", None)
    path = os.path.join(workdir, "netstat-alerts-now.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(rules, f)
    return path


class Prometheus:
    """A real Prometheus (Debian's package) on a loopback port with a temporary TSDB."""

    def __init__(self, targets: List[str], workdir: str, netns: Optional[str] = None,
                 get: Optional[Callable[[str], Tuple[int, bytes]]] = None) -> None:
        self.port = 9090 if netns else free_port()
        conf: Dict[str, Any] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                       "scrape_timeout": "1s"},
            "scrape_configs": [{"job_name": "netstat",
                                "static_configs": [{"targets": targets}]}],
        }
        conf["rule_files"] = [RULES_FILE, alerts_without_for(workdir)]
        path = os.path.join(workdir, "prometheus.yml")
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(conf, f)
        cmd = ["prometheus", f"--config.file={path}",
               f"--storage.tsdb.path={os.path.join(workdir, 'tsdb')}",
               f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self.base = f"http://127.0.0.1:{self.port}"
        self._get = get or (lambda url: http_get(url, timeout=10)[::2])  # type: ignore[misc]
        self.log = open(os.path.join(workdir, "prometheus.log"), "w+")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            self.log.seek(0)
            raise RuntimeError(f"prometheus exited: {self.log.read()[-2000:]}")
        return self._get(self.base + "/-/ready")[0] == 200

    def api(self, path: str, **params: Any) -> Dict[str, Any]:
        status, body = self._get(f"{self.base}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        data = json.loads(body)
        if data.get("status") != "success":
            raise AssertionError(f"{path} {params.get('query')!r}: {status} {data}")
        return data["data"]  # type: ignore[no-any-return]

    def query(self, expr: str, instant: bool) -> List[Dict[str, Any]]:
        """The series a panel would show: instant vector, or a range over the last minute."""
        if instant:
            return self.api("query", query=expr)["result"]  # type: ignore[no-any-return]
        now = time.time()
        res = self.api("query_range", query=expr, start=now - 60, end=now, step=5)["result"]
        for r in res:  # the latest point, as a stat panel shows it
            r["value"] = r["values"][-1] if r["values"] else None
        return [r for r in res if r["values"]]

    def close(self) -> None:
        stop(self.proc, timeout=15)
        self.log.close()


def evaluate(prom: Prometheus, names: Tuple[str, ...], job: str, instance: str,
             timeout: float) -> Dict[Tuple[str, str, str], List[Dict[str, Any]]]:
    """Run every query of the dashboards until each returns data or the deadline passes
    (rates need two samples in their window, recording rules a first evaluation).
    Every query must parse from the first round on."""
    todo = {(load(n)["uid"], t, ref): (substitute(e, job, instance), inst)
            for n in names for t, ref, e, inst in queries(load(n))}
    for n in names:  # the variables' own queries
        for v in load(n)["templating"]["list"]:
            if v["type"] == "query":
                todo[(load(n)["uid"], f"variable {v['name']}", "query")] = (
                    substitute(label_values_inner(v["query"]), job, instance), True)
    results: Dict[Tuple[str, str, str], List[Dict[str, Any]]] = {}
    deadline = time.monotonic() + timeout
    while True:
        for key, (expr, inst) in todo.items():
            if not results.get(key):
                results[key] = prom.query(expr, inst)
        missing = [k for k in todo if not results[k] and k not in EXPECTED_EMPTY]
        if not missing or time.monotonic() > deadline:
            return results
        time.sleep(1)  # one scrape interval between rounds; bounded by the deadline


def report(results: Dict[Tuple[str, str, str], List[Dict[str, Any]]]) -> str:
    lines = [f"{'data' if r else 'EMPTY':5} {n:>4} series  {uid} / {title} / {ref}"
             for (uid, title, ref), r in sorted(results.items()) for n in [len(r)]]
    return "\n".join(lines)


needs_prometheus = pytest.mark.skipif(not have("prometheus"),
                                      reason="prometheus not installed (scripts/test-all "
                                             "installs it)")


@contextmanager
def temporary_listener() -> Iterator[int]:
    """A TCP listener with a connection in CLOSE_WAIT: something for the connection panels of
    the Listeners dashboard to show on an idle host."""
    import socket
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    cli = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    cli.close()  # the server side sits in CLOSE_WAIT until conn is closed
    try:
        yield srv.getsockname()[1]
    finally:
        conn.close()
        srv.close()


def expected_file(path: str, *entries: Dict[str, Any]) -> str:
    """An expected-listeners file for --collector.listeners.expected-file."""
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump({"listeners": list(entries)}, f)
    return f"--collector.listeners.expected-file={path}"


ANY_PORT = {"port": "1-65535", "protocol": "any"}


@needs_prometheus
def test_every_query_returns_data_from_a_real_prometheus(tmp_path: Any) -> None:
    # Python processes (the exporter, this test's listener) are expected; Prometheus, started
    # below, is the unexpected listener the Listeners dashboard must show.
    expected = expected_file(str(tmp_path / "expected.yaml"), dict(ANY_PORT, process="python*"))
    with ExitStack() as stack:
        stack.enter_context(temporary_listener())
        ex = stack.enter_context(running_exporter(*collector_flags(), expected))
        instance = f"127.0.0.1:{ex.port}"
        prom = Prometheus([instance], str(tmp_path))
        stack.callback(prom.close)
        poll(prom.ready, timeout=30, what="prometheus to be ready")
        poll(lambda: prom.query('count_over_time(up{job="netstat"}[1m]) >= 3', True),
             timeout=30, what="three scrapes of the exporter")
        results = evaluate(prom, FILES, "netstat", instance, timeout=45)
    print("\n" + report(results))
    empty = {k for k, r in results.items() if not r and k not in EXPECTED_EMPTY}
    assert not empty, "queries without data:\n" + "\n".join(map(str, sorted(empty)))


# --- the fleet: exporters in network namespaces -----------------------------------------------

@contextmanager
def fleet_namespaces(n: int) -> Iterator[List[Tuple[NetNS, str]]]:
    """``n`` network namespaces, the first a hub joined to each other one by a veth pair made
    inside the namespaces (the root namespace never sees them). Yields (namespace, address its
    exporter listens on)."""
    with ExitStack() as stack:
        nss = [stack.enter_context(NetNS("fleet")) for _ in range(n)]
        hub = nss[0]
        hosts = [(hub, "127.0.0.1")]
        for i, ns in enumerate(nss[1:], start=1):
            hub.ip("link", "add", f"hub{i}", "type", "veth", "peer", "name", "eth0",
                   "netns", ns.name)
            hub.ip("addr", "add", f"10.200.{i}.1/24", "dev", f"hub{i}")
            ns.ip("addr", "add", f"10.200.{i}.2/24", "dev", "eth0")
            hub.ip("link", "set", f"hub{i}", "up")
            ns.ip("link", "set", "eth0", "up")
            hosts.append((ns, f"10.200.{i}.2"))
        yield hosts


@needs_prometheus
@pytest.mark.root
def test_fleet_returns_one_row_per_host(tmp_path: Any) -> None:
    hosts_n = 3
    with ExitStack() as stack:
        hosts = stack.enter_context(fleet_namespaces(hosts_n))
        hub = hosts[0][0]

        def get(url: str) -> Tuple[int, bytes]:  # Prometheus listens in the hub namespace
            status, _, body = hub.call(http_get, url, timeout=10)
            return status, body

        instances = []
        for i, (ns, addr) in enumerate(hosts):
            # The last host expects nothing but port 1: its exporter is an unexpected listener.
            entry = {"port": 1, "protocol": "tcp"} if i == hosts_n - 1 else ANY_PORT
            flag = expected_file(str(tmp_path / f"expected{i}.yaml"), entry)
            ex = stack.enter_context(running_exporter(*collector_flags(), flag, netns=ns.name,
                                                      host=addr))
            instances.append(f"{addr}:{ex.port}")
        prom = Prometheus(instances, str(tmp_path), netns=hub.name, get=get)
        stack.callback(prom.close)
        poll(prom.ready, timeout=30, what="prometheus to be ready")
        poll(lambda: len(prom.query('count_over_time(up{job="netstat"}[1m]) >= 3', True))
             == hosts_n, timeout=30, what="three scrapes of every exporter")
        results = evaluate(prom, ("netstat-fleet.json",), "netstat", ".+", timeout=45)
    print("\n" + report(results))
    for key, rows in results.items():
        if key in EXPECTED_EMPTY or key[2] == "query":  # variables: one value per series
            continue
        assert rows, f"{key}: no data"
        if key[2] == "annotation":  # alerts, not rows: only the last host's listener fires
            assert {r["metric"]["instance"] for r in rows} == {instances[-1]}, rows
            continue
        per_host = [r["metric"].get("instance") for r in rows]
        if any(per_host):
            assert sorted(per_host) == sorted(instances), (key, per_host)
        else:
            assert len(rows) == 1, (key, rows)
    count = {k[1]: r[0]["value"][1] for k, r in results.items()
             if k[0] == "netstat-fleet" and k[1].startswith("Hosts ")}
    assert count == {"Hosts reporting": str(hosts_n), "Hosts with failing collectors": "0",
                     "Hosts with unexpected listeners": "1",
                     "Hosts checking listeners": str(hosts_n)}


# --- provisioning ------------------------------------------------------------------------------

PROVISIONING = os.path.join(ROOT, "deploy", "grafana", "provisioning")
DASHBOARDS_MOUNT = "/var/lib/grafana/dashboards"


def test_provisioning_loads_the_dashboards_and_a_prometheus_data_source() -> None:
    with open(os.path.join(PROVISIONING, "datasources", "netstat.yaml"), encoding="utf-8") as f:
        ds = yaml.safe_load(f)
    with open(os.path.join(PROVISIONING, "dashboards", "netstat.yaml"), encoding="utf-8") as f:
        prov = yaml.safe_load(f)
    assert ds["apiVersion"] == 1 and prov["apiVersion"] == 1
    (source,) = ds["datasources"]
    # The dashboards' datasource variable lists data sources of this type and starts on the
    # default one.
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert all(v["query"] == source["type"] for n in ALL_FILES
               for v in load(n)["templating"]["list"] if v["type"] == "datasource")
    (provider,) = prov["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == DASHBOARDS_MOUNT
    with open(os.path.join(DASH_DIR, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    # The README's and compose's mount of dashboards/ is where the provider looks.
    with open(os.path.join(ROOT, "deploy", "compose.yaml"), encoding="utf-8") as f:
        grafana = yaml.safe_load(f)["services"]["grafana"]
    mount = f"../dashboards:{DASHBOARDS_MOUNT}"
    assert mount in readme and f"{mount}:ro" in grafana["volumes"]
    # $__rate_interval is computed from the data source's scrape interval: it must be the
    # interval of the Prometheus compose starts.
    with open(os.path.join(ROOT, "deploy", "prometheus", "compose.yml"), encoding="utf-8") as f:
        assert source["jsonData"]["timeInterval"] == yaml.safe_load(f)["global"][
            "scrape_interval"]
