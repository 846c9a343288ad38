"""Imports run downward only: the readers never import what is built on them, and the
collectors never import the front ends that show them.

The layers, bottom up: the socket vocabulary (exporter.vocabulary); the readers of files,
netlink dumps and system calls; the socket snapshot; the collectors; the wiring and front ends
(scrape, web, show, cli). Every import in every module is read with ast, those inside functions
included, so a lazy import cannot slip one past.
"""

from __future__ import annotations

import ast
import os
from typing import Dict, Iterator, List, Tuple

import pytest
from helpers import ROOT

PACKAGE = os.path.join(ROOT, "exporter")

VOCABULARY = ("exporter.vocabulary",)
READERS = ("exporter.netlink", "exporter.procfs", "exporter.sysfs", "exporter.windows",
           "exporter.darwin", "exporter.bpf")
COLLECTORS = ("exporter.collectors", "exporter.listeners")
ABOVE_READERS = ("exporter.sockets", "exporter.collectors", "exporter.scrape", "exporter.web",
                 "exporter.show", "exporter.cli")
FRONT_ENDS = ("exporter.web", "exporter.show", "exporter.cli")

# (modules, what they must not import)
RULES: List[Tuple[Tuple[str, ...], Tuple[str, ...]]] = [
    (VOCABULARY, ("exporter",)),
    (READERS, ABOVE_READERS),
    (COLLECTORS, FRONT_ENDS),
]


def within(module: str, prefixes: Tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def modules() -> Dict[str, str]:
    """Every module of the package by dotted name, with its path."""
    out = {}
    for dirpath, _dirs, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return out


def imports(name: str, path: str) -> Iterator[Tuple[int, str]]:
    """(line, dotted name) of every exporter module ``name`` imports."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                # "from exporter import expected" imports the module exporter.expected
                yield node.lineno, f"{base}.{alias.name}" if base == "exporter" else base


def violations() -> List[str]:
    found = []
    for name, path in sorted(modules().items()):
        for lower, forbidden in RULES:
            if not within(name, lower):
                continue
            for line, target in imports(name, path):
                if within(target, forbidden) and not within(target, lower):
                    found.append(f"{os.path.relpath(path, ROOT)}:{line}: {name} imports "
                                 f"{target}")
    return found


def test_no_import_runs_upward() -> None:
    assert violations() == []


def test_every_layer_is_found() -> None:
    """The walk sees the packages the rules name, so an empty rule cannot pass by itself."""
    names = modules()
    for prefixes in (VOCABULARY, ("exporter.netlink", "exporter.procfs"), COLLECTORS):
        assert any(within(n, prefixes) for n in names), prefixes
    got = dict(imports("exporter.sockets.snapshot", names["exporter.sockets.snapshot"]))
    assert "exporter.vocabulary.names" in got.values()


@pytest.mark.parametrize("source, module, bad", [
    ("from exporter.sockets.snapshot import Snapshot\n", "exporter.procfs.x", True),
    ("from exporter import show\n", "exporter.collectors.x", True),
    ("def f():\n    from ..web import server\n", "exporter.collectors.x", True),
    ("import exporter.cli\n", "exporter.netlink.x", True),
    ("from exporter.vocabulary.names import TCP_LISTEN\n", "exporter.netlink.x", False),
    ("from . import snmp\n", "exporter.procfs.x", False),
])
def test_an_upward_import_is_caught(tmp_path: object, source: str, module: str,
                                    bad: bool) -> None:
    path = os.path.join(str(tmp_path), "x.py")
    with open(path, "w") as f:
        f.write(source)
    targets = [t for _, t in imports(module, path)]
    lower, forbidden = next((low, fb) for low, fb in RULES if within(module, low))
    assert any(within(t, forbidden) for t in targets) == bad, targets
