"""deploy/: the systemd unit (systemd-analyze verify and security), the Dockerfile's
instructions, compose.yaml and the Kubernetes and Prometheus configs: every file they reference
exists in the repository, manifests validate offline, promtool accepts the Prometheus config,
the PrometheusRule is in sync with alerts/."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import yaml
from helpers import ROOT, run_cli

from exporter.web.config import parse_web_config

DEPLOY = os.path.join(ROOT, "deploy")
UNIT = os.path.join(DEPLOY, "systemd", "netstat-exporter.service")
K8S = os.path.join(DEPLOY, "kubernetes")
GEN = os.path.join(ROOT, "scripts", "gen-prometheusrule")


def _load_all(path: str) -> List[Dict[str, Any]]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# --- systemd ---------------------------------------------------------------------------------

def _installed_unit(tmp: str) -> str:
    """The unit with ExecStart pointing at this environment's netstat-exporter, so that
    systemd-analyze can check the binary exists."""
    exe = shutil.which("netstat-exporter", path=os.path.dirname(sys.executable))
    assert exe, "netstat-exporter console script not installed next to the test interpreter"
    with open(UNIT) as f:
        text = f.read()
    assert "ExecStart=/opt/netstat-exporter/bin/netstat-exporter $ARGS" in text
    dst = os.path.join(tmp, "netstat-exporter.service")
    with open(dst, "w") as f:
        f.write(text.replace("/opt/netstat-exporter/bin/netstat-exporter", exe))
    return dst


def _unit_settings() -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    with open(UNIT) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", "[")) and "=" in line:
                k, v = line.split("=", 1)
                out.setdefault(k, []).append(v)
    return out


def test_systemd_unit_verifies(tmp_path: os.PathLike[str]) -> None:
    unit = _installed_unit(str(tmp_path))
    r = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def test_systemd_security_rating_ok_or_better(tmp_path: os.PathLike[str]) -> None:
    unit = _installed_unit(str(tmp_path))
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", unit],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", r.stdout)
    assert m, r.stdout[-2000:] + r.stderr
    score, rating = float(m.group(1)), m.group(2)
    print(f"systemd-analyze security --offline=true: {score} {rating}")
    # systemd's scale: <=1.9 SAFE, <=4.9 OK, <=6.9 MEDIUM, <=8.4 EXPOSED, else UNSAFE.
    assert rating in ("SAFE", "OK"), (score, rating)
    assert score <= 4.9


def test_systemd_unit_keeps_what_the_exporter_needs() -> None:
    s = _unit_settings()
    assert s["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_NETLINK AF_UNIX"]
    assert s["CapabilityBoundingSet"] == ["CAP_DAC_READ_SEARCH CAP_SYS_PTRACE"]
    assert s["AmbientCapabilities"] == ["CAP_DAC_READ_SEARCH CAP_SYS_PTRACE"]
    for k in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "DynamicUser"):
        assert s[k] == ["yes"], k
    assert s["ProtectSystem"] == ["strict"]
    assert "@system-service" in s["SystemCallFilter"]
    # It must see the host's sockets and every process's /proc/<pid>/fd.
    assert "PrivateNetwork" not in s and "PrivateUsers" not in s
    assert s.get("ProcSubset", ["all"]) == ["all"]
    assert s.get("ProtectProc", ["default"]) == ["default"]
    assert s["EnvironmentFile"] == ["-/etc/default/netstat-exporter"]
    assert os.path.isfile(os.path.join(DEPLOY, "systemd", "netstat-exporter.default"))


def test_environment_file_only_sets_known_variables() -> None:
    import click

    from exporter.cli import cli

    known = {p.envvar for p in cli.params if isinstance(p, click.Option) and p.envvar}
    seen = set()
    with open(os.path.join(DEPLOY, "systemd", "netstat-exporter.default")) as f:
        for line in f:
            m = re.match(r"#?\s*([A-Z_]+)=", line)
            if m and m.group(1) != "ARGS":
                assert m.group(1) in known, m.group(1)
                seen.add(m.group(1))
    assert "NETSTAT_EXPORTER_WEB_CONFIG_FILE" in seen


# --- Dockerfile ------------------------------------------------------------------------------

def _dockerfile() -> List[Tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: List[Tuple[str, str]] = []
    buf = ""
    with open(os.path.join(DEPLOY, "Dockerfile")) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not buf and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            buf += line
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


SECRET_WORDS = re.compile(r"pass(word)?|secret|token|api[_-]?key|private[_-]?key|credential",
                          re.I)


def test_dockerfile_instructions() -> None:
    ins = _dockerfile()
    stages = [i for i, (k, _) in enumerate(ins) if k == "FROM"]
    assert stages, "no FROM"
    final = ins[stages[-1]:]
    assert re.match(r"python:\$\{PYTHON_VERSION\}-slim$", final[0][1])
    version = [v for k, v in ins if k == "ARG" and v.startswith("PYTHON_VERSION=")]
    assert version and re.fullmatch(r"PYTHON_VERSION=3\.\d+", version[0])
    users = [v for k, v in final if k == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("0", "root"), users
    # Everything after the last USER runs as that user; nothing switches back.
    assert [k for k, _ in final].index("USER") < [k for k, _ in final].index("ENTRYPOINT")
    entry = json.loads([v for k, v in final if k == "ENTRYPOINT"][-1])
    assert entry == ["netstat-exporter"]
    health = [v for k, v in final if k == "HEALTHCHECK"]
    assert health and "/-/healthy" in health[0]
    # Installed from the repository, not from an index.
    assert any(k == "RUN" and "pip install" in v and "'.[web]'" in v for k, v in ins)


def test_dockerfile_has_no_secrets() -> None:
    for k, v in _dockerfile():
        if k in ("ENV", "ARG", "LABEL"):
            for part in shlex.split(v):
                name, _, value = part.partition("=")
                assert not (SECRET_WORDS.search(name) and value), (k, v)
        if k in ("COPY", "ADD"):
            for src in shlex.split(v)[:-1]:
                if src.startswith("--"):
                    continue
                assert not re.search(r"\.(key|pem|crt|p12|pfx)$|id_rsa|\.env$|web-config", src), \
                    (k, v)


def test_dockerfile_copies_exist_and_dockerignore_lets_them_through() -> None:
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        ignore = f.read()
    for k, v in _dockerfile():
        if k == "COPY" and "--from=" not in v:
            for src in shlex.split(v)[:-1]:
                assert os.path.exists(os.path.join(ROOT, src)), f"COPY {src}: not in the repo"
                assert f"!{src}" in ignore or f"!{src}/" in ignore, src


def test_dockerfile_run_command_documented() -> None:
    with open(os.path.join(DEPLOY, "Dockerfile")) as f:
        text = f.read()
    for part in ("--net=host", "--pid=host", "-v /proc:/host/proc:ro", "--path.procfs=/host/proc",
                 "docker build -f deploy/Dockerfile"):
        assert part in text, part


# --- compose ---------------------------------------------------------------------------------

COMPOSE = os.path.join(DEPLOY, "compose.yaml")


def _compose() -> Dict[str, Any]:
    with open(COMPOSE) as f:
        return yaml.safe_load(f)  # type: ignore[no-any-return]


def _mounts(service: Dict[str, Any]) -> Iterator[Tuple[str, str]]:
    """(host path in the repo, container path) of the service's bind mounts from the repo."""
    for v in service.get("volumes", []):
        src, dst = v.split(":")[:2]
        if src.startswith("."):
            yield os.path.normpath(os.path.join(DEPLOY, src)), dst


def _to_host(service: Dict[str, Any], container_path: str) -> str:
    best = None
    for host, dst in _mounts(service):
        inside = container_path == dst or container_path.startswith(dst.rstrip("/") + "/")
        if inside and (best is None or len(dst) > len(best[1])):
            best = (host, dst)
    assert best, f"{container_path} is not mounted from the repository"
    return best[0] + container_path[len(best[1]):]


def compose_references() -> List[str]:
    """Every repository path compose.yaml relies on, directly or through the configs it
    mounts (Prometheus rule files, Grafana provisioning and dashboards)."""
    c = _compose()
    refs = []
    exp = c["services"]["exporter"]
    refs.append(os.path.normpath(os.path.join(DEPLOY, exp["build"]["context"],
                                              exp["build"]["dockerfile"])))
    for svc in c["services"].values():
        refs.extend(h for h, _ in _mounts(svc))
    prom = c["services"]["prometheus"]
    cfg_path = _to_host(prom, "/etc/prometheus/prometheus.yml")
    with open(cfg_path) as f:
        cfg = yaml.safe_load(f)
    refs.extend(_to_host(prom, r) for r in cfg["rule_files"])
    graf = c["services"]["grafana"]
    refs.append(_to_host(graf, "/etc/grafana/provisioning/datasources/netstat.yaml"))
    provider = _to_host(graf, "/etc/grafana/provisioning/dashboards/netstat.yaml")
    refs.append(provider)
    if os.path.exists(provider):
        with open(provider) as f:
            for p in yaml.safe_load(f).get("providers", []):
                path = p.get("options", {}).get("path")
                if path:
                    refs.append(_to_host(graf, path))
    dash_dir = _to_host(graf, "/var/lib/grafana/dashboards")
    refs.extend(os.path.join(dash_dir, n) for n in
                ("netstat-host.json", "netstat-listeners.json", "netstat-fleet.json"))
    return refs


def test_compose_references_exist() -> None:
    missing = [os.path.relpath(p, ROOT) for p in compose_references() if not os.path.exists(p)]
    assert not missing, f"compose.yaml relies on files not in the repository: {missing}"


def test_compose_services() -> None:
    c = _compose()
    exp = c["services"]["exporter"]
    assert exp["network_mode"] == "host" and exp["pid"] == "host" and exp["read_only"] is True
    assert "/proc:/host/proc:ro" in exp["volumes"]
    assert "--path.procfs=/host/proc" in exp["command"]
    assert exp["cap_drop"] == ["ALL"]
    prom_cfg = _to_host(c["services"]["prometheus"], "/etc/prometheus/prometheus.yml")
    with open(prom_cfg) as f:
        targets = yaml.safe_load(f)["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["host.docker.internal:9816"]
    assert "host.docker.internal:host-gateway" in c["services"]["prometheus"]["extra_hosts"]
    # Published only on loopback: nothing of this demo stack is open to the network.
    for svc in c["services"].values():
        for p in svc.get("ports", []):
            assert p.startswith("127.0.0.1:"), p


def test_compose_grafana_datasource_points_at_prometheus_service() -> None:
    ds_file = _to_host(_compose()["services"]["grafana"],
                       "/etc/grafana/provisioning/datasources/netstat.yaml")
    with open(ds_file) as f:
        ds = yaml.safe_load(f)
    urls = [d.get("url") for d in ds.get("datasources", []) if d.get("type") == "prometheus"]
    assert "http://prometheus:9090" in urls, urls


# --- Prometheus config -----------------------------------------------------------------------

PROM = os.path.join(DEPLOY, "prometheus", "prometheus.yml")


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


def templated_prometheus_config(tmp: str, rules: bool) -> str:
    """deploy/prometheus/prometheus.yml with the TLS files made real (empty placeholders are
    enough for promtool) and rule_files made absolute, or left out."""
    with open(PROM) as f:
        cfg = yaml.safe_load(f)
    if rules:
        cfg["rule_files"] = [os.path.normpath(os.path.join(os.path.dirname(PROM), r))
                             for r in cfg["rule_files"]]
    else:
        cfg.pop("rule_files")
    with open(PROM) as f:
        text = yaml.safe_dump(cfg)
    text = text.replace("/etc/prometheus/netstat-exporter", tmp)
    for name in ("ca.crt", "client.crt", "client.key", "password"):
        open(os.path.join(tmp, name), "w").close()
    out = os.path.join(tmp, "prometheus.yml")
    with open(out, "w") as f:
        f.write(text)
    return out


def test_prometheus_example_has_plain_tls_and_basic_auth_jobs() -> None:
    with open(PROM) as f:
        cfg = yaml.safe_load(f)
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["netstat"].get("scheme", "http") == "http"
    tls = jobs["netstat-tls"]
    assert tls["scheme"] == "https" and tls["tls_config"]["ca_file"]
    assert tls["basic_auth"]["username"] and tls["basic_auth"]["password_file"]
    assert cfg["rule_files"] == ["../../alerts/netstat-alerts.yaml",
                                 "../../alerts/netstat-rules.yaml"]


def test_promtool_check_config_scrape_part(tmp_path: os.PathLike[str]) -> None:
    cfg = templated_prometheus_config(str(tmp_path), rules=False)
    r = _promtool("check", "config", cfg)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_check_config_with_rule_files(tmp_path: os.PathLike[str]) -> None:
    """The example as it stands, rule files included (they come from alerts/)."""
    cfg = templated_prometheus_config(str(tmp_path), rules=True)
    r = _promtool("check", "config", cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 2 rule files found" in r.stdout + r.stderr


def test_promtool_check_compose_prometheus_config(tmp_path: os.PathLike[str]) -> None:
    with open(os.path.join(DEPLOY, "prometheus", "compose.yml")) as f:
        cfg = yaml.safe_load(f)
    cfg.pop("rule_files")  # mapped to alerts/ by compose; checked in test_compose_references
    path = os.path.join(str(tmp_path), "p.yml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    r = _promtool("check", "config", path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_example_web_config_is_valid() -> None:
    path = os.path.join(DEPLOY, "web-config.example.yml")
    with open(path) as f:
        cfg = parse_web_config(f.read(), path)
    assert cfg.tls is not None and cfg.tls.client_auth_type == "RequireAndVerifyClientCert"
    import bcrypt
    (user, hashed), = cfg.users
    assert user == "prometheus" and bcrypt.checkpw(b"example", hashed)


# --- Kubernetes ------------------------------------------------------------------------------

def _manifests() -> Dict[str, Dict[str, Any]]:
    out = {}
    for name in sorted(os.listdir(K8S)):
        if name.endswith(".yaml"):
            for doc in _load_all(os.path.join(K8S, name)):
                out[doc["kind"]] = doc
    return out


@pytest.mark.parametrize("name", ["daemonset.yaml", "service.yaml"])
def test_kubernetes_manifests_validate_offline(name: str) -> None:
    import kubernetes_validate

    for doc in _load_all(os.path.join(K8S, name)):
        # strict: unknown fields (typos) are errors too. The schemas ship with the package.
        kubernetes_validate.validate(doc, "1.30", strict=True)


def test_kubernetes_validate_catches_a_typo() -> None:
    import kubernetes_validate

    (ds,) = _load_all(os.path.join(K8S, "daemonset.yaml"))
    ds["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, "1.30", strict=True)


def test_daemonset_security() -> None:
    ds = _manifests()["DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["hostPID"] is True
    assert pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sorted(sc["capabilities"]["add"]) == ["DAC_READ_SEARCH", "SYS_PTRACE"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for kind in ("requests", "limits"):
        assert set(c["resources"][kind]) == {"cpu", "memory"}
    assert "--path.procfs=/host/proc" in c["args"]
    (m,) = c["volumeMounts"]
    (v,) = pod["volumes"]
    assert m["readOnly"] is True and m["mountPath"] == "/host/proc"
    assert v["name"] == m["name"] and v["hostPath"]["path"] == "/proc"


# The parts of prometheus-operator's CRDs (monitoring.coreos.com/v1) these manifests use,
# strict: a misspelt field is an error, as the API server's structural schema would make it.
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_META = {"type": "object", "required": ["name", "namespace"], "additionalProperties": False,
         "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                        "labels": _LABELS, "annotations": _LABELS}}


def _resource(kind: str, spec: Dict[str, Any]) -> Dict[str, Any]:
    """The schema of a monitoring.coreos.com/v1 ``kind`` whose spec is ``spec``."""
    return {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
            "additionalProperties": False,
            "properties": {"apiVersion": {"const": "monitoring.coreos.com/v1"},
                           "kind": {"const": kind}, "metadata": _META, "spec": spec}}


SERVICEMONITOR_SCHEMA = _resource("ServiceMonitor", {
    "type": "object", "required": ["selector", "endpoints"],
    "additionalProperties": False,
    "properties": {
        "jobLabel": {"type": "string"},
        "selector": {"type": "object", "additionalProperties": False,
                     "properties": {"matchLabels": _LABELS}},
        "namespaceSelector": {"type": "object", "additionalProperties": False,
                              "properties": {"any": {"type": "boolean"},
                                             "matchNames": {"type": "array",
                                                            "items": {"type": "string"}}}},
        "endpoints": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "port": {"type": "string"},
                "path": {"type": "string"},
                "scheme": {"enum": ["http", "https"]},
                "interval": {"type": "string", "pattern": r"^(\d+(ms|s|m|h))+$"},
                "scrapeTimeout": {"type": "string", "pattern": r"^(\d+(ms|s|m|h))+$"},
                "relabelings": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "action": {"enum": ["replace", "keep", "drop", "labelmap",
                                            "labeldrop", "labelkeep", "hashmod"]},
                        "sourceLabels": {"type": "array",
                                         "items": {"type": "string"}},
                        "targetLabel": {"type": "string"},
                        "regex": {"type": "string"},
                        "replacement": {"type": "string"},
                        "separator": {"type": "string"}}}}}}}}})
_RULE = {"type": "object", "required": ["expr"], "additionalProperties": False,
         "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
         "properties": {"alert": {"type": "string"}, "record": {"type": "string"},
                        "expr": {"type": ["string", "integer"]},
                        "for": {"type": "string"}, "keep_firing_for": {"type": "string"},
                        "labels": _LABELS, "annotations": _LABELS}}
PROMETHEUSRULE_SCHEMA = _resource("PrometheusRule", {
    "type": "object", "required": ["groups"], "additionalProperties": False,
    "properties": {"groups": {"type": "array", "items": {
        "type": "object", "required": ["name", "rules"], "additionalProperties": False,
        "properties": {"name": {"type": "string"}, "interval": {"type": "string"},
                       "limit": {"type": "integer"},
                       "rules": {"type": "array", "items": _RULE}}}}}})


def test_servicemonitor_structure_and_wiring() -> None:
    import jsonschema

    m = _manifests()
    sm, svc, ds = m["ServiceMonitor"], m["Service"], m["DaemonSet"]
    jsonschema.validate(sm, SERVICEMONITOR_SCHEMA)
    # The ServiceMonitor selects the Service, whose selector selects the DaemonSet's pods,
    # by a port name both define.
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert svc["spec"]["selector"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert sm["metadata"]["namespace"] in sm["spec"]["namespaceSelector"]["matchNames"]
    assert svc["metadata"]["namespace"] == sm["metadata"]["namespace"]
    ports = {p["name"] for p in svc["spec"]["ports"]}
    assert {e["port"] for e in sm["spec"]["endpoints"]} <= ports
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= {p["name"] for p in c["ports"]}


def test_schemas_catch_typos() -> None:
    import jsonschema

    sm = _manifests()["ServiceMonitor"]
    sm["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(sm, SERVICEMONITOR_SCHEMA)
    rule = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "x", "namespace": "y"},
            "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "exp": "up"}]}]}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rule, PROMETHEUSRULE_SCHEMA)


# --- PrometheusRule generator ----------------------------------------------------------------

def _gen(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, GEN, *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


RULES = """groups:
  - name: netstat-test
    rules:
      - alert: NetstatTestAlert
        expr: netstat_tcp_ext_listen_overflows_total > 0
        for: 5m
        labels: {severity: warning}
        annotations:
          summary: Listen queue overflows.
          description: '{{ $labels.instance }} overflows.'
  - name: netstat-test-records
    rules:
      - record: instance:netstat_tcp_retrans_segs:rate5m
        expr: rate(netstat_tcp_retrans_segs_total[5m])
"""


def test_generator_on_a_rules_file(tmp_path: os.PathLike[str]) -> None:
    import jsonschema

    d = str(tmp_path)
    os.makedirs(os.path.join(d, "alerts"))
    os.makedirs(os.path.join(d, "out"))
    with open(os.path.join(d, "alerts", "r.yaml"), "w") as f:
        f.write(RULES)
    r = _gen("--root", d, "-o", "out/pr.yaml", "alerts/r.yaml")
    assert r.returncode == 0, r.stderr
    with open(os.path.join(d, "out", "pr.yaml")) as f:
        text = f.read()
    assert text.startswith("# Generated by scripts/gen-prometheusrule from alerts/r.yaml.")
    doc = yaml.safe_load(text)
    jsonschema.validate(doc, PROMETHEUSRULE_SCHEMA)
    assert doc["spec"]["groups"] == yaml.safe_load(RULES)["groups"]
    # The generated file passes promtool as a rule file once unwrapped.
    unwrapped = os.path.join(d, "unwrapped.yaml")
    with open(unwrapped, "w") as f:
        yaml.safe_dump({"groups": doc["spec"]["groups"]}, f)
    p = _promtool("check", "rules", unwrapped)
    assert p.returncode == 0, p.stdout + p.stderr
    assert _gen("--root", d, "-o", "out/pr.yaml", "--check", "alerts/r.yaml").returncode == 0
    with open(os.path.join(d, "alerts", "r.yaml"), "a") as f:
        f.write("  - name: added\n    rules: []\n")
    stale = _gen("--root", d, "-o", "out/pr.yaml", "--check", "alerts/r.yaml")
    assert stale.returncode == 1 and "out of date" in stale.stderr


def test_generator_refuses_bad_rule_files(tmp_path: os.PathLike[str]) -> None:
    d = str(tmp_path)
    for name, text, part in (("a.yaml", "rules: []\n", "'groups' list"),
                             ("b.yaml", "groups: [{rules: []}]\n", "a name"),
                             ("c.yaml", "groups: [\n", "not valid YAML")):
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
        r = _gen("--root", d, "-o", "-", name)
        assert r.returncode == 2 and part in r.stderr and len(r.stderr.splitlines()) == 1
    with open(os.path.join(d, "dup.yaml"), "w") as f:
        f.write(RULES)
    r = _gen("--root", d, "-o", "-", "dup.yaml", "dup.yaml")
    assert r.returncode == 2 and "appears twice" in r.stderr


def test_prometheusrule_is_valid() -> None:
    """The shipped PrometheusRule passes the CRD's schema (tests/test_regenerate.py holds it to
    the rule files)."""
    (doc,) = _load_all(os.path.join(K8S, "prometheusrule.yaml"))
    import jsonschema

    jsonschema.validate(doc, PROMETHEUSRULE_SCHEMA)


def _rules_job() -> str:
    """The job the shipped rules select (alerts/generate.py's default selector)."""
    sys.path.insert(0, os.path.join(ROOT, "alerts"))
    try:
        import generate
    finally:
        sys.path.pop(0)
    m = re.fullmatch(r'job="([^"]+)"', generate.DEFAULTS["selector"])
    assert m, generate.DEFAULTS["selector"]
    return m.group(1)


def _job_after_relabeling(job_name: str, relabelings: List[Dict[str, Any]]) -> str:
    """The job label a scrape job's targets end up with: job_name, unless a replace rule with
    no source labels (the form these files use) sets it."""
    job = job_name
    for r in relabelings:
        if r.get("target_label", r.get("targetLabel")) == "job" and \
                r.get("action", "replace") == "replace" and \
                not r.get("source_labels", r.get("sourceLabels")):
            job = r["replacement"]
    return job


def test_every_shipped_scrape_gets_the_job_the_rules_select() -> None:
    """A job label other than the rules' selector silently disables every alert."""
    want = _rules_job()
    for path in ("prometheus/prometheus.yml", "prometheus/compose.yml"):
        with open(os.path.join(DEPLOY, path)) as f:
            for job in yaml.safe_load(f)["scrape_configs"]:
                got = _job_after_relabeling(job["job_name"], job.get("relabel_configs", []))
                assert got == want, (path, job["job_name"], got)
    with open(os.path.join(DEPLOY, "kubernetes", "servicemonitor.yaml")) as f:
        sm = yaml.safe_load(f)
    assert "jobLabel" not in sm["spec"]  # it would name the job after a Service label
    for ep in sm["spec"]["endpoints"]:
        # prometheus-operator names the job after the Service; the relabeling overrides it.
        assert _job_after_relabeling("netstat-exporter", ep.get("relabelings", [])) == want


def _json_patch(doc: dict, ops: list) -> dict:
    """RFC 6902 ``add`` operations, which is all netns-sockets/patch.json uses."""
    import copy

    out = copy.deepcopy(doc)
    for op in ops:
        assert op["op"] == "add", op
        *parents, last = op["path"].lstrip("/").split("/")
        node: Any = out
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if last == "-":
            node.append(op["value"])
        else:
            node[last] = op["value"]
    return out


def test_netns_tiers_in_the_daemonset() -> None:
    """Tier 1 of the netns collector runs with the DaemonSet's capabilities as shipped; the
    tier 2 patch adds its flag and SYS_ADMIN and nothing else, and still validates."""
    import kubernetes_validate

    ds = _manifests()["DaemonSet"]
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    assert "--collector.netns" in c["args"] and "--collector.netns.sockets" not in c["args"]
    with open(os.path.join(K8S, "netns-sockets", "patch.json"), encoding="utf-8") as f:
        patched = _json_patch(ds, json.load(f))
    kubernetes_validate.validate(patched, "1.30", strict=True)
    (pc,) = patched["spec"]["template"]["spec"]["containers"]
    assert pc["args"] == c["args"] + ["--collector.netns.sockets"]
    assert sorted(pc["securityContext"]["capabilities"]["add"]) == [
        "DAC_READ_SEARCH", "SYS_ADMIN", "SYS_PTRACE"]
    assert {k: v for k, v in pc["securityContext"].items() if k != "capabilities"} == \
        {k: v for k, v in c["securityContext"].items() if k != "capabilities"}
    # Every flag in the DaemonSet is one the exporter knows.
    r = run_cli(*pc["args"][1:], "--help")  # --path.procfs=/host/proc need not exist here
    assert r.returncode == 0, r.stderr


def test_launchd_daemon_runs_what_the_readme_installs_with_flags_that_parse() -> None:
    """deploy/macos: a well-formed launchd plist, run as root at boot and kept alive, starting
    the executable the README's macOS section installs, with flags the exporter accepts."""
    import plistlib

    from exporter import cli

    path = os.path.join(ROOT, "deploy", "macos", "io.github.netstat-exporter.plist")
    with open(path, "rb") as f:
        plist = plistlib.load(f)
    assert plist["Label"] == "io.github.netstat-exporter"
    assert plist["UserName"] == "root" and plist["RunAtLoad"] is True and plist["KeepAlive"]
    exe, *args = plist["ProgramArguments"]
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert exe == "/usr/local/netstat-exporter/bin/netstat-exporter"
    assert "python3 -m venv /usr/local/netstat-exporter" in readme
    assert "deploy/macos/io.github.netstat-exporter.plist" in readme
    ctx = cli.cli.make_context("netstat-exporter", list(args))
    config = cli.build_config(ctx.params)
    assert [str(a) for a in config.listen_addresses] == [":9816"]
