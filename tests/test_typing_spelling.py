"""One spelling of type hints throughout, the one pyproject.toml's ruff settings choose:
``typing.List``, ``Dict``, ``Optional``, ``Union`` (the package supports Python 3.9), never
``list[...]``, ``X | None`` or ``collections.abc`` beside them. Ruff can ask for the newer
spelling but not forbid it, so this walks every annotation, alias and cast of the Python files
of the repository with ast."""

from __future__ import annotations

import ast
import os
from typing import Iterator, List, Tuple

from helpers import ROOT

DIRS = ("exporter", "tests", "bench", "alerts", "dashboards")
SCRIPTS = ("scripts/regenerate", "scripts/gen-prometheusrule", "scripts/readme-show")
BUILTINS = {"list": "List", "dict": "Dict", "tuple": "Tuple", "set": "Set",
            "frozenset": "FrozenSet", "type": "Type"}


def python_files() -> List[str]:
    out = [os.path.join(ROOT, s) for s in SCRIPTS]
    for top in DIRS:
        for dirpath, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if d not in ("fixtures", "__pycache__")]
            out += [os.path.join(dirpath, f) for f in files if f.endswith(".py")]
    return out


def hints(tree: ast.AST) -> Iterator[ast.expr]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
                if arg is not None and arg.annotation is not None:
                    yield arg.annotation
            if node.returns is not None:
                yield node.returns
        elif isinstance(node, ast.AnnAssign):
            yield node.annotation
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "cast" and node.args:
            yield node.args[0]
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Subscript):
            yield node.value  # an alias such as Json = Dict[str, Any]


def other_spellings(path: str) -> Iterator[Tuple[int, str]]:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "collections.abc":
            yield node.lineno, "collections.abc (typing's names are used)"
    for hint in hints(tree):
        for n in ast.walk(hint):
            if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) \
                    and n.value.id in BUILTINS:
                yield n.lineno, f"{n.value.id}[...] (typing.{BUILTINS[n.value.id]})"
            elif isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr):
                yield n.lineno, "X | Y (Optional or Union)"


def test_one_typing_spelling() -> None:
    found = [f"{os.path.relpath(p, ROOT)}:{line}: {what}"
             for p in python_files() for line, what in other_spellings(p)]
    assert found == []


def test_the_other_spellings_are_seen(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "x.py")
    with open(path, "w") as f:
        f.write("from collections.abc import Iterator\n"
                "def f(a: list[int], b: int | None) -> dict[str, int]: ...\n")
    assert [w.split(" ")[0] for _, w in other_spellings(path)] == [
        "collections.abc", "list[...]", "X", "dict[...]"]
