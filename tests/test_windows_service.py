"""The Windows service: refused off Windows in one line; the command it registers runs; its
install and remove go through pywin32 as they should (here a stand-in pywin32 records the
calls: the real one exists only on Windows)."""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import re
import subprocess
import sys
import types
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from helpers import run_cli

from exporter import __version__, cli, system
from exporter.windows import service


@pytest.mark.parametrize("action", ["install", "remove"])
def test_refused_off_windows_in_one_line(action: str) -> None:
    r = run_cli("service", action, *(["--web.listen-address=:9816"] if action == "install"
                                     else []))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [
        f"netstat-exporter: error: service {action}: Windows services exist only on Windows; "
        "on linux run the exporter from a systemd unit (deploy/systemd/netstat-exporter.service)"]


def test_the_registered_command_runs_the_exporter() -> None:
    """What the service starts, in the Python that installed it, with the flags given."""
    params = service.parameters(sys.executable, ["--version"])
    argv = service.command(params["Python"], json.loads(params["Flags"]))
    assert argv == [sys.executable, "-m", "exporter", "--version"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout.strip()) == (0, f"netstat-exporter {__version__}"), r.stderr


def test_parameters() -> None:
    p = service.parameters("/venv/bin/python", ["--web.listen-address=:9816",
                                                "--collector.routes.table"])
    assert p == {"Python": "/venv/bin/python",
                 "Flags": '["--web.listen-address=:9816", "--collector.routes.table"]',
                 "Log": "/venv/bin/netstat-exporter.log"}


class PywinError(Exception):
    pass


@pytest.fixture
def pywin32(monkeypatch: pytest.MonkeyPatch) -> Iterator[List[Tuple[str, Any]]]:
    """Stand-ins for pywin32's modules, recording every call."""
    calls: List[Tuple[str, Any]] = []
    options: Dict[Tuple[str, str], str] = {}

    def module(name: str, **attrs: Any) -> types.ModuleType:
        m = types.ModuleType(name)
        m.__spec__ = importlib.machinery.ModuleSpec(name, None)
        m.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, m)
        return m

    class ServiceFramework:
        def __init__(self, args: Any) -> None:
            self.args = args

    def stop(name: str) -> None:
        calls.append(("StopService", name))
        raise PywinError("not started")

    module("pywintypes", error=PywinError)
    module("win32service", SERVICE_AUTO_START=2, SERVICE_STOP_PENDING=3)
    module("win32event")
    module("servicemanager")
    module("win32serviceutil", ServiceFramework=ServiceFramework,
           InstallService=lambda *a, **kw: calls.append(("InstallService", (a, kw))),
           SetServiceCustomOption=lambda svc, k, v: options.__setitem__((svc, k), v),
           GetServiceCustomOption=lambda svc, k: options[(svc, k)],
           StopService=stop,
           RemoveService=lambda name: calls.append(("RemoveService", name)))
    calls.append(("options", options))
    yield calls


def test_install_and_remove_through_pywin32(pywin32: List[Tuple[str, Any]]) -> None:
    options = pywin32.pop(0)[1]
    service.install(["--web.listen-address=:9816"], python=r"C:\ne\Scripts\python.exe")
    assert pywin32 == [("InstallService", (
        (service.CLASS, "netstat-exporter", "Prometheus netstat exporter"),
        {"startType": 2, "description": service.DESCRIPTION}))]
    assert options[("netstat-exporter", "Python")] == r"C:\ne\Scripts\python.exe"
    assert json.loads(options[("netstat-exporter", "Flags")]) == ["--web.listen-address=:9816"]
    pywin32.clear()
    service.remove()  # not running: stopping it fails, removing goes on
    assert pywin32 == [("StopService", "netstat-exporter"),
                       ("RemoveService", "netstat-exporter")]
    # The class the service names exists where pywin32 does.
    module = importlib.reload(service)
    try:
        cls = getattr(module, service.CLASS.rsplit(".", 1)[1])
        assert cls._svc_name_ == "netstat-exporter"
    finally:
        sys.modules["win32serviceutil"] = None  # type: ignore[assignment]
        importlib.reload(service)
        del sys.modules["win32serviceutil"]


def run_main(*argv: str) -> Tuple[int, str, str]:
    import io
    from contextlib import redirect_stderr, redirect_stdout

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            cli.main(list(argv))
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_on_windows_without_pywin32_says_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system, "native", lambda: "windows")
    monkeypatch.setitem(sys.modules, "win32serviceutil", None)  # not importable
    code, out, err = run_main("service", "install")
    assert code == 2 and out == ""
    assert err == ("netstat-exporter: error: service install needs pywin32 (the windows extra): "
                   f"install it with: {sys.executable} -m pip install pywin32\n")


def test_on_windows_install_checks_the_flags_first(pywin32: List[Tuple[str, Any]],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system, "native", lambda: "windows")
    pywin32.pop(0)
    code, _, err = run_main("service", "install", "--path.procfs=/host/proc")
    assert code == 2 and "--path.procfs means nothing on windows" in err
    assert pywin32 == []  # nothing registered
    code, _, err = run_main("service", "install", "--no-such-flag")
    assert code == 2 and "--no-such-flag" in err and pywin32 == []
    code, out, err = run_main("service", "install", "--web.listen-address=:9816",
                              "--collector.routes.table")
    assert code == 0, err
    assert out == ("netstat-exporter: service netstat-exporter installed; start it with: "
                   "sc start netstat-exporter\n")
    assert [c[0] for c in pywin32] == ["InstallService"]


def test_deploy_windows_readme_installs_extras_that_exist_and_commands_the_cli_has() -> None:
    """deploy/windows/README.md's pip extras are pyproject's, and every netstat-exporter
    command it types is one the command line knows (checked through --help, as a user would)."""
    import tomllib
    from helpers import ROOT

    with open(os.path.join(ROOT, "deploy", "windows", "README.md"), encoding="utf-8") as f:
        text = f.read()
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        extras = set(tomllib.load(f)["project"]["optional-dependencies"])
    asked = {e for group in re.findall(r'pip install "\.\[([a-z,]+)\]"', text)
             for e in group.split(",")}
    assert asked == {"web", "windows"} and asked <= extras
    typed = re.findall(r"netstat-exporter\.exe (service \w+)", text)
    assert sorted(set(typed)) == ["service install", "service remove"]
    for words in set(typed):
        r = run_cli(*words.split(), "--help")
        assert r.returncode == 0, r.stderr
