"""Hostile or broken input that is not HTTP: the expected-listeners file nested deeply, with
complex keys, impossible dates or runaway size; log records carrying newlines or megabytes. Each
ends in one line."""

from __future__ import annotations

import logging
import os
from typing import Callable

import pytest
from helpers import run_cli

from exporter import logs
from exporter.listeners import expected


@pytest.mark.parametrize("name,text,part", [
    ("deep-block.yaml", "listeners:\n" + "".join(f"{'  ' * (i + 1)}- k{i}:\n"
                                                 for i in range(400)), "nested deeper than 32"),
    ("deep-flow.yaml", "listeners: " + "[" * 500 + "]" * 500 + "\n", "nested deeper than 32"),
    ("complex-key.yaml", "listeners:\n  - ? [a, b]\n    : 1\n", "expected a single value"),
    ("bad-date.yaml", "listeners:\n  - port: 22\n    protocol: tcp\n    user: 2024-13-45\n",
     "invalid value"),
    ("deep.toml", "x = " + "[" * 2000 + "]" * 2000 + "\n", "invalid TOML"),
])
def test_hostile_expected_file_is_one_line(tmp_path: os.PathLike[str], name: str, text: str,
                                           part: str) -> None:
    path = os.path.join(str(tmp_path), name)
    with open(path, "w") as f:
        f.write(text)
    with pytest.raises(expected.ExpectedFileError, match=part):
        expected.load(path)
    r = run_cli("--collector.disable-defaults", "--collector.listeners",
                f"--collector.listeners.expected-file={path}", "dump", timeout=30)
    assert r.returncode == 2 and r.stdout == "", r.stderr[:2000]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and part in lines[0], r.stderr[:2000]


def test_oversized_expected_file_refused_unread(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(str(tmp_path), "huge.yaml")
    with open(path, "w") as f:
        f.write("listeners:\n" + "# filler\n" * (expected.MAX_FILE_BYTES // 9 + 1))
    with pytest.raises(expected.ExpectedFileError, match="larger than 4096 KiB, refused unread"):
        expected.load(path)


@pytest.mark.parametrize("formatter", [logs.LogfmtFormatter, logs.JSONFormatter])
def test_log_records_stay_one_short_line(formatter: Callable[[], logging.Formatter]) -> None:
    rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed\r\nagain", (), None)
    rec.err = "line one\nline two\r" + "x" * 1_000_000  # type: ignore[attr-defined]
    out = formatter().format(rec)
    assert "\n" not in out and "\r" not in out
    assert len(out) < 3 * logs.MAX_FIELD_CHARS
    assert "more characters" in out
