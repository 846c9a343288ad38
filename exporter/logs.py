"""Logging in logfmt or JSON, one line per record, as Prometheus exporters log."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Dict

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}

# A field longer than this is cut (an error quoting a whole file must not make a line of
# megabytes); the mark says how much was left out.
MAX_FIELD_CHARS = 2048

# Attributes every LogRecord has; anything else was passed in ``extra=`` and is a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> Dict[str, Any]:
    out: Dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": {"WARNING": "warn"}.get(record.levelname, record.levelname.lower()),
        "caller": f"{record.module}:{record.lineno}",
        "msg": record.getMessage(),
    }
    for k, v in vars(record).items():
        if k not in _STANDARD and not k.startswith("_"):
            out[k] = v
    if record.exc_info:
        out["exc"] = logging.Formatter().formatException(record.exc_info)
    for k, v in out.items():
        if isinstance(v, str) and len(v) > MAX_FIELD_CHARS:
            out[k] = f"{v[:MAX_FIELD_CHARS]}... ({len(v) - MAX_FIELD_CHARS} more characters)"
    return out


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = []
        for k, v in _fields(record).items():
            s = ("true" if v else "false") if isinstance(v, bool) else str(v)  # as JSON spells them
            if s == "" or any(c in s for c in ' "=\n\r\t'):
                s = '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace(
                    "\n", "\\n").replace("\r", "\\r") + '"'
            parts.append(f"{k}={s}")
        return " ".join(parts)


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


def setup(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
