"""Test support for the rule files in alerts/: load alerts/generate.py, write its rule files,
ask the Prometheus that loaded them, and pull metric names out of PromQL expressions and the
queries of annotation templates."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import urllib.parse
from types import ModuleType
from typing import Any, Callable, Dict, Iterable, List, Mapping, Set, Tuple

from helpers import http_get

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALERTS_DIR = os.path.join(ROOT, "alerts")
RULE_TESTS_DIR = os.path.join(ROOT, "tests", "rules")


def load_generator() -> ModuleType:
    """alerts/generate.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("netstat_alerts_generate",
                                                  os.path.join(ALERTS_DIR, "generate.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_rule_files(directory: str, files: Mapping[str, str]) -> List[str]:
    """Write the rule files alerts/generate.py rendered (``render(settings)``: name -> text) to
    ``directory``; their paths, for Prometheus's rule_files."""
    paths = []
    for name, text in files.items():
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        paths.append(path)
    return paths


Getter = Callable[[str, float], Tuple[int, Dict[str, str], bytes]]


class PrometheusAPI:
    """The HTTP API of a Prometheus at ``base`` (``http://host:port``), read with ``get(url,
    timeout)``: :func:`helpers.http_get`, or that called inside a network namespace."""

    def __init__(self, base: str, get: Getter = http_get) -> None:
        self.base, self._get = base, get

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.base}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}"
                                              if params else "")
        status, _, body = self._get(url, 10)
        data = json.loads(body)
        assert status == 200 and data["status"] == "success", (path, params, body[:300])
        return data["data"]

    def query(self, expr: str) -> List[Dict[str, Any]]:
        return self.api("query", query=expr)["result"]  # type: ignore[no-any-return]

    def alerts(self, name: str) -> List[Dict[str, Any]]:
        """The alerts ``name`` has pending or firing."""
        return [a for a in self.api("alerts")["alerts"]
                if a["labels"]["alertname"] == name and a["state"] in ("pending", "firing")]


def rules(groups: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [r for g in groups for r in g["rules"]]


_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
             "unless", "bool", "offset", "inf", "nan"}
# An identifier not glued to a number (so 1e3 or 5m outside brackets yield nothing).
_IDENT = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def selected_names(expr: str) -> Set[str]:
    """Metric (and recording rule) names a PromQL expression selects.

    Crude but sufficient for our rules: drop string literals, label matchers, ranges and the
    label lists of by/without/on/ignoring/group_*; what is left that is followed by '(' is a
    function or aggregation, the keywords are keywords, and every other identifier is a
    series name.
    """
    text = _STRING.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    names = set()
    for m in _IDENT.finditer(text):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


_TEMPLATE_QUERY = re.compile(r'printf\s+"((?:\\.|[^"\\])*)"')


def template_queries(annotation: str) -> List[str]:
    """The PromQL format strings an annotation passes to ``query`` through printf."""
    return [m.group(1).replace('\\"', '"') for m in _TEMPLATE_QUERY.finditer(annotation)
            if "query" in annotation[m.end():m.end() + 120]]
