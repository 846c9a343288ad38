"""The declaration API: collectors declare their metrics, options and flags in their own module;
register refuses what would make the exposition ambiguous; the layers import in one direction."""

from __future__ import annotations

import ast
import dataclasses
import os
from dataclasses import dataclass

import pytest
from helpers import ROOT, parse, run_cli, value

from exporter.cli import build_config, cli
from exporter.collectors import api
from exporter.collectors.api import Flag, MetricDoc, register, specs
from exporter.config import Config, RegexError
from exporter.scrape import SCRAPE_METRICS, Exporter


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register test collectors in copies of the registry's tables, dropped afterwards."""
    specs()  # every real collector registered first
    monkeypatch.setattr(api, "_SPECS", dict(api._SPECS))
    monkeypatch.setattr(api, "_OWNERS", dict(api._OWNERS))


def test_register_refuses_a_metric_another_collector_declares(clean_registry: None) -> None:
    taken = specs()["sockets"].metrics[0]
    with pytest.raises(RuntimeError, match="'netstat_sockets', which 'sockets' already"):
        register("copycat", default_enabled=False, description="x",
                 metrics=[MetricDoc(taken.name, "gauge", "again")])(lambda c: None)  # type: ignore
    assert "copycat" not in api.specs()
    own = SCRAPE_METRICS[0]
    with pytest.raises(RuntimeError, match="'exporter' already declares"):
        register("thief", default_enabled=False, description="x",
                 metrics=[MetricDoc(own.name, "gauge", "mine")])(lambda c: None)  # type: ignore
    with pytest.raises(RuntimeError, match="registered twice"):
        register("sockets", default_enabled=False, description="x")(lambda c: None)  # type: ignore
    # a new name is accepted
    register("fresh", default_enabled=False, description="x",
             metrics=[MetricDoc("netstat_fresh_things", "gauge", "new")])(lambda c: None)  # type: ignore
    assert "fresh" in api.specs()


def test_every_collector_module_is_placed_in_order_once() -> None:
    """ORDER names every collector module of the package, once, and nothing else."""
    assert len(set(api.ORDER)) == len(api.ORDER)
    modules = {name for name in (f[:-3] if f.endswith(".py") else f
                                 for f in os.listdir(os.path.join(ROOT, "exporter", "collectors")))
               if name not in ("__init__", "__pycache__", "api")}
    assert set(api.ORDER) == modules == set(specs())
    assert tuple(specs()) == api.ORDER


def test_the_output_order_is_order_not_import_order(monkeypatch: pytest.MonkeyPatch) -> None:
    specs()
    monkeypatch.setattr(api, "_SPECS", dict(reversed(list(api._SPECS.items()))))
    assert tuple(specs()) == api.ORDER
    ex = Exporter(Config(procfs=os.path.join(ROOT, "tests", "fixtures", "proc", "new"),
                         collectors=frozenset({"netns", "sockets", "routes"}),
                         disable_exporter_metrics=True))
    assert ex.names == ["sockets", "routes", "netns"]


def test_a_flag_must_name_an_option_field(clean_registry: None) -> None:
    @dataclass(frozen=True)
    class Opts:
        depth: int = 3

    with pytest.raises(RuntimeError, match="unknown option 'width'"):
        register("shapes", default_enabled=False, description="x", options=Opts,
                 flags=[Flag("width", "how wide")])(lambda c: None)  # type: ignore


def test_a_base_collector_reads_its_own_options_and_its_docstring(clean_registry: None) -> None:
    @dataclass(frozen=True)
    class Opts:
        depth: int = 3

    @register("shapes", default_enabled=False, options=Opts, flags=[Flag("depth", "how deep")])
    class Shapes(api.Base[Opts]):
        """shapes of things,
        counted"""

    @register("plain", default_enabled=False)
    class Plain(api.Base[None]):
        """no options"""

    assert specs()["shapes"].description == "shapes of things, counted"
    assert Shapes(Config(procfs="/x")).opts.depth == 3
    given = Shapes(Config(procfs="/x", options={"shapes": Opts(depth=5)}))
    assert given.opts.depth == 5 and given.procfs == "/x"
    assert Plain(Config()).opts is None
    with pytest.raises(TypeError, match="options of 'shapes' must be Opts"):
        Shapes(Config(options={"shapes": 5}))
    with pytest.raises(RuntimeError, match="'bare': no description and no docstring"):
        register("bare", default_enabled=False)(lambda c: None)  # type: ignore


def test_every_declared_flag_is_on_the_command_line_with_its_default() -> None:
    params = {p.name: p for p in cli.params}
    for name, spec in specs().items():
        if spec.options is None:
            continue
        declared = {f.field for f in spec.flags}
        assert declared == {f.name for f in dataclasses.fields(spec.options)}, name
        for f in spec.flags:
            p = params[f"opt__{name}__{f.field}"]
            assert f.flag(name) in p.opts, (name, f.field)
            assert p.default == spec.option_default(f.field)
            assert p.envvar == "NETSTAT_EXPORTER_" + f.flag(name)[2:].replace(".", "_") \
                .replace("-", "_").upper()


def test_flags_build_each_collectors_option_dataclass() -> None:
    ctx = cli.make_context("netstat-exporter", ["--collector.routes.table",
                                                "--collector.listeners.max-ports=7",
                                                "--collector.ports.source=procfs"])
    config = build_config(ctx.params)
    assert config.options["routes"].table is True
    assert config.options["listeners"].max_ports == 7
    assert config.options["ports"].source == "procfs"
    sockets_options = specs()["sockets"].options
    assert sockets_options is not None and config.options["sockets"] == sockets_options()


def test_an_option_value_the_collector_refuses_is_a_one_line_error() -> None:
    with pytest.raises(RegexError, match="--collector.interfaces.device-include"):
        specs()["interfaces"].options(device_include="(")  # type: ignore[misc]
    r = run_cli("--collector.protocols.fields=(", "dump")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("netstat-exporter: error: --collector.protocols.fields '(': "
                           "invalid regular expression: missing )")


def test_a_collector_flag_from_the_environment() -> None:
    env = dict(os.environ, NETSTAT_EXPORTER_COLLECTOR_PORTS_TOP_DESTINATIONS="3",
               NETSTAT_EXPORTER_COLLECTOR_PORTS_SOURCE="procfs")
    r = run_cli("--path.procfs", os.path.join(ROOT, "tests", "fixtures", "proc", "new"),
                "--collector.disable-defaults", "--collector.ports", "dump", env=env)
    assert r.returncode == 0, r.stderr
    s = parse(r.stdout)
    dests = [x for x in s if x[0] == "netstat_ports_ephemeral_destination_used"]
    assert 0 < len(dests) <= 3 * 2  # at most three per protocol
    assert value(s, "netstat_ports_ephemeral_available") == 89


def _imports(path: str) -> set:
    with open(path) as f:
        tree = ast.parse(f.read())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_collectors_and_the_scrape_import_in_one_direction() -> None:
    coll = os.path.join(ROOT, "exporter", "collectors")
    for name in os.listdir(coll):
        if name.endswith(".py"):
            imported = _imports(os.path.join(coll, name))
            assert not imported & {"exporter.registry", "exporter.scrape", "exporter.cli"}, name
    api_imports = _imports(os.path.join(coll, "api.py"))
    assert not {m for m in api_imports if m.startswith("exporter.collectors")}
