"""Every generated file is what its generator writes today: scripts/regenerate --check runs
each generator's check (docs/metrics.md, dashboards, rule files, the PrometheusRule, the
README's screens) and names what is stale. The golden files are left to their own tests
(tests/test_golden.py, tests/test_show.py), which the suite runs anyway."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import ROOT


def test_no_generated_file_is_stale() -> None:
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "regenerate"), "--check",
                        "--skip-goldens"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr


def test_an_unknown_argument_is_refused() -> None:
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "regenerate"), "--chek"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "unknown argument '--chek'" in r.stderr
