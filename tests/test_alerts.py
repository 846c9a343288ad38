"""The rule files in alerts/: generated from alerts/generate.py (tests/test_regenerate.py holds
them to its output), valid for promtool, unit-tested with `promtool test rules`
(tests/rules/*.yaml), following the mixin conventions, covered by the runbook, and selecting only
metrics the exporter documents."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
from typing import Any, Dict, List

import pytest
import yaml
from alertrules import (
    ALERTS_DIR,
    ROOT,
    RULE_TESTS_DIR,
    load_generator,
    rules,
    selected_names,
    template_queries,
)

from exporter import docs

gen = load_generator()
RULE_TESTS = sorted(glob.glob(os.path.join(RULE_TESTS_DIR, "*.yaml")))
SEVERITIES = {"critical", "warning", "info"}
# Series of kube-state-metrics that the per-pod rules join with (selected by
# kube_state_metrics_selector, never by the exporter's selector).
KUBE_STATE_METRICS = {"kube_pod_info", "kube_pod_annotations"}


def _load(name: str) -> List[Dict[str, Any]]:
    with open(os.path.join(ALERTS_DIR, name), encoding="utf-8") as f:
        return yaml.safe_load(f)["groups"]


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


ALERTS = rules(_load(gen.ALERTS_FILE))
RECORDS = rules(_load(gen.RULES_FILE))
ALERT_NAMES = [r["alert"] for r in ALERTS]


# --- the files are the generator's output ----------------------------------------------------

def test_generated_yaml_reads_back_as_the_definitions() -> None:
    # The small YAML writer in generate.py must round-trip every string (quotes, backslashes,
    # template braces, multi-line expressions).
    for name, groups in gen.rule_groups().items():
        assert yaml.safe_load(gen.render()[name])["groups"] == groups


def test_promtool_check_rules() -> None:
    r = _promtool("check", "rules", *(os.path.join(ALERTS_DIR, n)
                                      for n in (gen.RULES_FILE, gen.ALERTS_FILE)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(RECORDS)} rules found" in r.stdout
    assert f"SUCCESS: {len(ALERTS)} rules found" in r.stdout


# --- promtool unit tests ----------------------------------------------------------------------

@pytest.mark.parametrize("path", RULE_TESTS, ids=os.path.basename)
def test_promtool_unit_tests(path: str) -> None:
    r = _promtool("test", "rules", path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def _rule_tests() -> List[Dict[str, Any]]:
    out = []
    for path in RULE_TESTS:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        assert doc["rule_files"] == ["../../alerts/netstat-rules.yaml",
                                     "../../alerts/netstat-alerts.yaml"], path
        for t in doc["tests"]:
            out += t.get("alert_rule_test", [])
    return out


def test_every_alert_is_unit_tested_both_ways() -> None:
    fires: Dict[str, int] = {}
    quiet: Dict[str, int] = {}
    for case in _rule_tests():
        bucket = fires if case.get("exp_alerts") else quiet
        bucket[case["alertname"]] = bucket.get(case["alertname"], 0) + 1
        for exp in case.get("exp_alerts") or []:
            # Firing cases assert every annotation, not a subset.
            assert set(exp["exp_annotations"]) == {"summary", "description", "runbook_url"}
            assert exp["exp_labels"]["severity"] in SEVERITIES
    unknown = (set(fires) | set(quiet)) - set(ALERT_NAMES)
    assert not unknown, f"unit tests name alerts that do not exist: {sorted(unknown)}"
    for name in ALERT_NAMES:
        assert fires.get(name), f"no unit test where {name} fires"
        assert quiet.get(name), f"no unit test where {name} must stay quiet"


def test_unit_tests_fail_when_an_expectation_is_wrong(tmp_path: Any) -> None:
    # The harness is not vacuous: a firing case with one wrong label fails promtool.
    src = os.path.join(RULE_TESTS_DIR, "sockets.yaml")
    with open(src, encoding="utf-8") as f:
        text = f.read()
    broken = tmp_path / "sockets.yaml"
    broken.write_text(text.replace("../../alerts/", ALERTS_DIR + "/")
                      .replace("instance: proxy:9816", "instance: proxy:9817"))
    r = _promtool("test", "rules", str(broken))
    assert r.returncode != 0
    assert "NetstatEphemeralPortsExhaustion" in r.stdout + r.stderr


# --- conventions ------------------------------------------------------------------------------

def test_alert_conventions() -> None:
    assert len(set(ALERT_NAMES)) == len(ALERT_NAMES)
    base = gen.DEFAULTS["runbook_url"]
    for r in ALERTS:
        name = r["alert"]
        assert re.fullmatch(r"Netstat(?:[A-Z][a-z0-9]+)+", name), name
        assert set(r["labels"]) == {"severity"} and r["labels"]["severity"] in SEVERITIES, name
        ann = r["annotations"]
        assert set(ann) == {"summary", "description", "runbook_url"}, name
        assert "{{" not in ann["summary"] and "$" not in ann["summary"], name
        if r["expr"].startswith("absent("):
            # No series, no labels to template: it names the selector instead.
            assert '{job="netstat"}' in ann["description"], name
        else:
            assert "{{ $labels.instance }}" in ann["description"], name
        assert ann["runbook_url"] == f"{base}#{name.lower()}"
        assert re.fullmatch(r"\d+[smh]", r["for"]), name
        # Raw series carry the selector; recording rules (per instance or per pod) were made
        # from series that did.
        assert 'job="netstat"' in r["expr"] or re.search(r"\b(instance|pod)\w*:", r["expr"]), \
            name


def test_recording_rule_conventions() -> None:
    for r in RECORDS:
        assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", r["record"]), r["record"]
        assert ('job="netstat"' in r["expr"] or "instance:" in r["expr"]
                or "pod:" in r["expr"]), r["record"]


def test_every_raw_selector_carries_the_job_selector() -> None:
    # A selector without the job matcher would read other jobs' series.
    for r in ALERTS + RECORDS:
        for m in re.finditer(r"(?<![\w:])(netstat_\w+|up)(?![\w:])(\{[^}]*\})?", r["expr"]):
            assert m.group(2) and 'job="netstat"' in m.group(2), (r.get("alert") or r["record"],
                                                                  m.group(0))


# --- runbook and README -----------------------------------------------------------------------

def _read(path: str) -> str:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def test_runbook_has_a_section_per_alert() -> None:
    text = _read("alerts/runbook.md")
    headings = re.findall(r"^## (Netstat\w+)\s*$", text, re.M)
    assert sorted(headings) == sorted(ALERT_NAMES)
    for name in ALERT_NAMES:
        section = text.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("Meaning", "Confirm", "Causes", "Action"):
            assert f"**{part}" in section, f"{name}: runbook section lacks {part}"
        assert re.search(r"`(ss|nstat|netstat|sysctl|cat)\b", section), \
            f"{name}: no command to confirm it by hand"


def test_every_setting_is_documented() -> None:
    text = _read("alerts/runbook.md") + _read("alerts/README.md")
    for name in gen.DEFAULTS:
        assert f"`{name}`" in text, f"setting {name} is not documented"
    assert gen.DEFAULTS["runbook_url"] in _read("alerts/README.md")


# --- metric names ------------------------------------------------------------------------------

def test_metric_name_parser() -> None:
    expr = '''sum without (family) (rate(netstat_a_total{job="x", b="y{z}"}[5m] offset 1h))
              / on (instance, job) group_left (process) topk by (port) (1, netstat_b)
              > 1e3 and instance:netstat_c:rate5m unless absent(up{job="netstat"})
              or label_replace(netstat_d, "family", "ipv4", "", "") * 0.5'''
    assert selected_names(expr) == {"netstat_a_total", "netstat_b", "instance:netstat_c:rate5m",
                                    "up", "netstat_d"}


def _used_names() -> Dict[str, set]:
    used: Dict[str, set] = {}
    for r in ALERTS + RECORDS:
        who = r.get("alert") or r["record"]
        names = selected_names(r["expr"])
        for text in r.get("annotations", {}).values():
            for q in template_queries(text):
                names |= selected_names(q)
        for n in names:
            used.setdefault(n, set()).add(who)
    return used


def test_annotation_queries_are_parsed() -> None:
    assert "netstat_tcp_ext_listen_overflows_total" in _used_names()


def test_every_metric_used_exists() -> None:
    """A metric renamed or removed in the exporter must not leave a rule that never fires."""
    recorded = {r["record"] for r in RECORDS}
    known = docs.metric_names() | {"up"} | KUBE_STATE_METRICS
    missing = {}
    for name, users in sorted(_used_names().items()):
        if ":" in name:
            assert name in recorded, f"{sorted(users)} use recording rule {name}, not defined"
        elif name not in known:
            missing[name] = sorted(users)
    assert not missing, "metrics not in docs/metrics.md: " + "; ".join(
        f"{n} (in {', '.join(u)})" for n, u in missing.items())


# --- changing the settings ---------------------------------------------------------------------

def test_selector_changes_everywhere(tmp_path: Any) -> None:
    """Rules generated for another job pass the same unit tests with the job renamed."""
    new = "netstat-edge"
    out = tmp_path / "alerts"
    r = subprocess.run([sys.executable, os.path.join(ALERTS_DIR, "generate.py"),
                        "--set", f'selector=job="{new}"', "--out", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for name in (gen.RULES_FILE, gen.ALERTS_FILE):
        text = (out / name).read_text()
        assert 'job="netstat"' not in text
        assert f'job="{new}"' in text
    assert _promtool("check", "rules", str(out / gen.RULES_FILE),
                     str(out / gen.ALERTS_FILE)).returncode == 0
    for path in RULE_TESTS:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        text = (text.replace("../../alerts/", f"{out}/")
                .replace('job="netstat"', f'job="{new}"')
                .replace("job: netstat", f"job: {new}")
                .replace("(job netstat)", f"(job {new})"))
        moved = tmp_path / os.path.basename(path)
        moved.write_text(text)
        res = _promtool("test", "rules", str(moved))
        assert res.returncode == 0, res.stdout + res.stderr


def test_thresholds_and_windows_are_settings() -> None:
    groups = gen.rule_groups({"close_wait_max": "500", "close_wait_for": "1h",
                              "rate_window": "2m"})
    alerts = {r["alert"]: r for r in rules(groups[gen.ALERTS_FILE])}
    records = {r["record"] for r in rules(groups[gen.RULES_FILE])}
    assert alerts["NetstatCloseWaitAccumulating"]["for"] == "1h"
    assert "> 500" in alerts["NetstatCloseWaitAccumulating"]["expr"]
    assert "> 100" not in alerts["NetstatCloseWaitAccumulating"]["expr"]
    assert "instance:netstat_tcp_retransmit:ratio_rate2m" in records
    assert "[5m]" not in "".join(r["expr"] for r in rules(groups[gen.RULES_FILE]))
    assert "in 2m" in alerts["NetstatListenDrops"]["annotations"]["description"]
    # Every placeholder of the definitions is a setting.
    assert "${" not in str(groups)


@pytest.mark.parametrize("args, message", [
    (["--set", "nope=1"], "unknown setting 'nope'"),
    (["--set", "close_wait_for=soon"], "not a Prometheus duration"),
    (["--set", "close_wait_max=-1"], "not a non-negative number"),
    (["--set", 'selector={job="x"}'], "without braces"),
    (["--set", "close_wait_max"], "expected NAME=VALUE"),
])
def test_generator_rejects_bad_settings(args: List[str], message: str, tmp_path: Any) -> None:
    r = subprocess.run([sys.executable, os.path.join(ALERTS_DIR, "generate.py"), *args,
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert os.listdir(tmp_path) == []


def test_generator_check_and_list(tmp_path: Any) -> None:
    script = os.path.join(ALERTS_DIR, "generate.py")
    ok = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    stale = subprocess.run([sys.executable, script, "--check", "--out", str(tmp_path)],
                           capture_output=True, text=True)
    assert stale.returncode == 1 and "out of date" in stale.stderr
    listed = subprocess.run([sys.executable, script, "--list"], capture_output=True, text=True)
    assert [line.split("=", 1)[0] for line in listed.stdout.splitlines()] == list(gen.DEFAULTS)


def test_kube_state_metrics_series_carry_their_own_selector(tmp_path: Any) -> None:
    exprs = [r["expr"] for r in ALERTS + RECORDS if "kube_pod_info" in r["expr"]]
    assert exprs
    for e in exprs:
        assert "kube_pod_annotations" in e  # static pods, named through their mirror pod
        for m in re.finditer(r"kube_pod_info(\{[^}]*\})?", e):
            assert m.group(1) == '{job="kube-state-metrics"}', e
        for m in re.finditer(r"kube_pod_annotations(\{[^}]*\})?", e):
            assert m.group(1) == ('{job="kube-state-metrics", '
                                  'annotation_kubernetes_io_config_mirror!=""}'), e
    groups = gen.rule_groups({"kube_state_metrics_selector": 'job="ksm",cluster="a"'})
    text = str(groups)
    assert 'kube_pod_info{job="ksm",cluster="a"}' in text and "kube-state-metrics" not in text
    assert 'kube_pod_annotations{job="ksm",cluster="a", annotation_kubernetes_io' in text


def test_rules_on_metrics_some_system_lacks_say_so() -> None:
    """generate.py's table of what Windows and macOS lack is the reference's, and every rule
    whose expression (with the recording rules it reads) uses such a metric has the sentence
    naming them as a comment right above it in the rule file; the others have none."""
    from exporter.availability import SYSTEMS, where_missing

    known = docs.availability()
    groups = gen.rule_groups()
    recorded = {r["record"]: r["expr"] for g in groups[gen.RULES_FILE] for r in g["rules"]}
    used = set()
    for r in ALERTS + RECORDS:
        used |= set(re.findall(r"\bnetstat_[a-z0-9_]+\b", gen.expanded(r["expr"], recorded)))
    assert {m: known[m] for m in sorted(used)
                                if m in known and set(known[m]) != set(SYSTEMS)} == gen.AVAILABLE_ON
    flagged = 0
    for name, text in gen.render().items():
        lines = text.splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"\s*- (?:alert|record): \"?([^\"]+)\"?$", line)
            if not m:
                continue
            rule = next(r for r in ALERTS + RECORDS if m.group(1) in (r.get("alert"),
                                                                      r.get("record")))
            sentence = where_missing(gen.expanded(rule["expr"], recorded), known)
            above: list = []
            j = i - 1
            while j >= 0 and lines[j].strip().startswith("# ") and lines[j].startswith("      "):
                above.insert(0, lines[j].strip()[2:])
                j -= 1
            assert " ".join(above) == sentence, (name, m.group(1))
            flagged += bool(sentence)
    assert flagged  # accept queues and sockstat are Linux's: some rule must say so
