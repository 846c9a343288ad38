"""The README's install command, run as written on a copy of the clone, and what follows from it:
the systemd unit as shipped verifies against the path it creates, every documented feature's
libraries are there, and the install command an error message prints really installs them.

The package is on no index, so ``pip install 'netstat-exporter[web]'`` (what the README, the
deploy docs and the error messages used to print) cannot work; the README installed without
PyYAML and bcrypt; and the unit ran /usr/local/bin/netstat-exporter, which the README's command
does not create. The command writes /opt/netstat-exporter: it runs in a private mount namespace
with a tmpfs over /opt (the host's /opt entries bound back in, since pip's local index may live
there), so nothing of the host changes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Dict, List

import pytest
from helpers import ROOT

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("systemd-analyze"),
    reason="needs root, unshare and systemd-analyze (scripts/test-all installs them)")

VENV = "/opt/netstat-exporter"


def readme_install_command() -> List[str]:
    """The README's install-and-start command for Linux, split at ``&&``."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        lines = [line for line in f
                 if f"python3 -m venv {VENV}" in line and not line.startswith("#")]
    assert len(lines) == 1, lines
    return [part.strip() for part in lines[0].split("&&")]


def test_readme_command_is_the_one_tested() -> None:
    parts = readme_install_command()
    assert parts[0].startswith("apt-get install -y python3-venv")
    assert parts[1:] == [f"python3 -m venv {VENV}", f"{VENV}/bin/pip install '.[web]'",
                         f"{VENV}/bin/netstat-exporter"]


def clone(dst: Path) -> Path:
    """The files a clone has (what git tracks), without this work tree's build products."""
    out = dst / "netstat-exporter"
    shutil.copytree(ROOT, out, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", "build", ".*_cache"))
    return out


SCRIPT = textwrap.dedent("""
    set -u
    step() { name=$1; shift; "$@" > "$OUT/$name.out" 2>&1; echo "$name $?"; }
    # /opt as a tmpfs of this mount namespace, the host's entries bound back in.
    mkdir -p "$WORK/opt-host" && mount --bind /opt "$WORK/opt-host" && mount -t tmpfs tmpfs /opt
    for d in "$WORK"/opt-host/*; do
      [ -d "$d" ] || continue
      n=$(basename "$d"); [ "$n" = netstat-exporter ] && continue
      mkdir "/opt/$n" && mount --bind "$d" "/opt/$n"
    done
    cd "$CLONE"
    # The README's command without apt-get (python3-venv is there) and with --version for the
    # start, so that it ends.
    step venv bash -c "$VENV_CMD"
    step install bash -c "$PIP_CMD"
    step version bash -c "$RUN_CMD --version"
    step unit systemd-analyze verify deploy/systemd/netstat-exporter.service
    step web /opt/netstat-exporter/bin/python -c 'import yaml, bcrypt'
    step yaml /opt/netstat-exporter/bin/netstat-exporter --collector.disable-defaults \\
        --collector.listeners --collector.listeners.expected-file=deploy/listeners-expected.example.yaml dump
    # Without PyYAML the error prints a command; that command must install it.
    step uninstall /opt/netstat-exporter/bin/pip uninstall -y PyYAML
    step missing /opt/netstat-exporter/bin/netstat-exporter --collector.disable-defaults \\
        --collector.listeners --collector.listeners.expected-file=deploy/listeners-expected.example.yaml dump
    hint=$(sed -n 's/.*install it with: \\([^;]*\\);.*/\\1/p' "$OUT/missing.out")
    echo "$hint" > "$OUT/hint.txt"
    step hinted bash -c "$hint"
    step again /opt/netstat-exporter/bin/netstat-exporter --collector.disable-defaults \\
        --collector.listeners --collector.listeners.expected-file=deploy/listeners-expected.example.yaml dump
""")


def test_readme_install_command_unit_and_install_hints(tmp_path: Path) -> None:
    parts = readme_install_command()
    src = clone(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, WORK=str(tmp_path), CLONE=str(src), OUT=str(out),
               VENV_CMD=parts[1], PIP_CMD=parts[2], RUN_CMD=parts[3])
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", SCRIPT],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    rc: Dict[str, int] = {}
    for line in r.stdout.splitlines():
        name, code = line.split()
        rc[name] = int(code)

    def output(name: str) -> str:
        return (out / f"{name}.out").read_text()

    for name in ("venv", "install", "version", "unit", "web", "yaml", "uninstall"):
        assert rc[name] == 0, (name, output(name)[-3000:])
    assert output("version").strip() == "netstat-exporter 0.1.0"
    # The unit as shipped verifies: its ExecStart is what the README's command created.
    assert output("unit").strip() == ""
    # Without PyYAML: one line, exit 2, and a command for this installation.
    missing = output("missing")
    assert rc["missing"] == 2 and len(missing.splitlines()) == 1, missing
    hint = (out / "hint.txt").read_text().strip()
    assert re.fullmatch(rf"{VENV}/bin/python3?(\.\d+)? -m pip install PyYAML bcrypt", hint), hint
    assert "netstat-exporter[web]" not in missing
    # ... which installs it, after which the same command works.
    assert rc["hinted"] == 0, output("hinted")[-3000:]
    assert rc["again"] == 0, output("again")[-3000:]
    assert "netstat_listener_info" in output("again")
