"""The dependencies install from wheels on Windows and on both Macs: a Windows or macOS user's
``pip install`` cannot stop on a missing wheel and a compiler that is not there.

``pip download --only-binary=:all:`` resolves pyproject's runtime dependencies and the ``web``
extra (prometheus-client, psutil, click, PyYAML, bcrypt), and for Windows the ``windows`` extra
(pywin32), for each platform as that platform's pip would, from the package index (PyPI:
reachable in CI).

The macOS floors are real ones: arm64 Macs start at macOS 11. On Intel, bcrypt has no wheel of
a version this project accepts (>=4) for a macOS before 10.12 (at macosx_10_9_x86_64 pip finds
none and would have to build it from source, with Rust), and python.org's installers of current
Pythons need 10.13: macosx_10_13_x86_64 is the oldest Intel Mac both run on.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import List

import pytest
from helpers import ROOT

PYTHON = "3.11"
PLATFORMS = ["win_amd64", "macosx_11_0_arm64", "macosx_10_13_x86_64"]


def requirements(platform: str = "") -> List[str]:
    """pyproject's runtime dependencies and the web extra; for Windows the windows extra too,
    its environment marker dropped (pip evaluates markers for the machine it runs on, not for
    --platform)."""
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    reqs = list(project["dependencies"]) + list(project["optional-dependencies"]["web"])
    if platform.startswith("win"):
        reqs += [r.split(";")[0].strip() for r in project["optional-dependencies"]["windows"]]
    return reqs


def project_name(requirement: str) -> str:
    m = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert m, requirement
    return re.sub(r"[-_.]+", "_", m.group(0)).lower()


def test_requirements_are_the_ones_named() -> None:
    assert sorted(project_name(r) for r in requirements()) == [
        "bcrypt", "click", "prometheus_client", "psutil", "pyyaml"]
    assert [project_name(r) for r in requirements("win_amd64")][-1] == "pywin32"


@pytest.mark.parametrize("platform", PLATFORMS)
def test_dependencies_resolve_to_wheels(platform: str, tmp_path: os.PathLike) -> None:
    reqs = requirements(platform)
    abi = "cp" + PYTHON.replace(".", "")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q",
         "--only-binary=:all:", "--platform", platform, "--python-version", PYTHON,
         "--implementation", "cp", "--abi", abi, "--abi", "abi3", "--abi", "none",
         "-d", str(tmp_path), *reqs],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-3000:]
    files = os.listdir(tmp_path)
    assert all(f.endswith(".whl") for f in files), files
    got = {project_name(f.split("-")[0]) for f in files}
    assert {project_name(q) for q in reqs} <= got, files
    # The compiled ones are built for that platform (or are universal2 Mac wheels).
    arch = "win_amd64" if platform == "win_amd64" else platform.rsplit("_", 1)[-1]
    for f in files:
        tag = f[:-len(".whl")].split("-")[-1]
        if tag != "any":
            assert tag.endswith((arch, "universal2")) and tag.startswith(platform[:6]), f
