"""The README says what is true: the HTTP paths the server answers, the packages scripts/test-all
installs, the collectors and dashboards there are, and the first steps of a new user (clone,
then cd into the clone)."""

from __future__ import annotations

import glob
import json
import os
import re

from helpers import ROOT, running_exporter


def read(path: str) -> str:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def test_endpoints_section_lists_every_path_that_answers() -> None:
    text = read("README.md")
    section = text.split("## HTTP endpoints", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`(/[^`?]*)`", section))
    with running_exporter("--collector.disable-defaults", "--collector.protocols") as ex:
        for path in ("/", "/metrics", "/-/healthy", "/-/ready", "/nonexistent", "/-/reload"):
            status = ex.get(path)[0]
            assert (status == 200) == (path in listed), (path, status, listed)


def test_test_all_comment_names_every_package_it_installs() -> None:
    script = read("scripts/test-all")
    packages = set(re.findall(r"need_apt\+=\(([\w.-]+)\)", script))
    assert len(packages) >= 6, packages
    text = read("README.md")
    comment = text.split("bash scripts/test-all", 1)[0].rsplit("```sh", 1)[1]
    for p in packages:
        assert p in comment, f"README's test command comment does not name {p}"


def test_first_command_clones_and_enters_the_clone() -> None:
    text = read("README.md")
    first_block = text.split("```sh", 1)[1].split("```", 1)[0]
    assert re.search(r"git clone \S+ && cd netstat-exporter\b", first_block), first_block
    assert "pip install 'netstat-exporter[web]'" not in text


def test_block_that_starts_the_exporter_ends_there() -> None:
    """Pasted whole, a block runs the server in the foreground last: what follows it would
    never run."""
    text = read("README.md")
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    serve = re.compile(r"bin/netstat-exporter(\s+--\S+)*\s*$")
    found = 0
    for block in blocks:
        commands = [ln for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]
        for i, cmd in enumerate(commands):
            if serve.search(cmd):
                found += 1
                assert i == len(commands) - 1, f"runs the server, then more commands:\n{block}"
    assert found >= 1


def test_collector_table_is_the_registered_collectors() -> None:
    from exporter.collectors.api import specs

    section = read("README.md").split("## What it exports", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| (on|off) \|", section, re.M))
    assert rows == {n: "on" if s.default_enabled else "off" for n, s in specs().items()}


NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def dashboards() -> dict:
    """file name -> title, of every dashboard shipped."""
    out = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "dashboards", "*.json"))):
        with open(path, encoding="utf-8") as f:
            out[os.path.basename(path)] = json.load(f)["title"]
    return out


def test_readme_names_every_dashboard() -> None:
    m = re.search(r"holds (\w+) Grafana dashboards \(([^)]*)\)", read("README.md"))
    assert m, "README no longer says which dashboards there are"
    names = {t.split(" / ", 1)[1] for t in dashboards().values()}
    assert m.group(1) == NUMBERS[len(names)], m.group(0)
    assert set(re.split(r",\s*(?:and\s+)?", m.group(2))) == names, m.group(0)


def test_dashboards_readme_names_every_dashboard() -> None:
    text = read("dashboards/README.md")
    shipped = dashboards()
    word = NUMBERS[len(shipped)]
    assert text.split("\n\n", 2)[1].startswith(f"{word.capitalize()} dashboards"), text[:200]
    assert f"All {word} have" in text
    rows = dict(re.findall(r"^\| `([\w.-]+\.json)` \| `[\w-]+` \| ([^|]+?) \|", text, re.M))
    assert rows == shipped
