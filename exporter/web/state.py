"""The web settings in force, and the rules for changing them while the server runs.

:class:`WebState` re-reads the web config (and the certificate, key and CA files it names) when
any of them changes, checked with ``stat`` when a connection arrives, or when
:meth:`WebState.reload` is called (on SIGHUP). A bad new file keeps the old settings and logs one
line.

A reload must never weaken security by accident. An editor that truncates the file and writes it
again leaves, for a moment, an empty file (plain HTTP, no auth) or half of one (TLS without
``basic_auth_users``), and a reload that happens to look then would apply it. So a reload noticed
by ``stat``:

* waits until the files have been quiet for :data:`SETTLE_SECONDS` and applies nothing if they
  change meanwhile or while being read (the next connection looks again);
* does not apply a change that turns TLS, client-certificate verification or basic auth off, or
  lowers the minimum TLS version: it logs a warning saying so, and the old settings stay in
  force until SIGHUP or a restart, which are deliberate acts of the operator and apply it (with
  a warning that security was lowered).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from exporter.web.auth import BasicAuth
from exporter.web.config import WebConfig, read_web_config
from exporter.web.errors import WebConfigError
from exporter.web.tls import CLIENT_AUTH_TYPES, TLS_VERSIONS, ssl_context

log = logging.getLogger(__name__)

# How long the watched files must be unchanged before a change noticed by stat is applied: well
# above the time any editor or configuration tool takes to write a file of a few lines.
SETTLE_SECONDS = 0.5


@dataclass(frozen=True)
class WebSettings:
    """The settings one connection is served with."""

    config: WebConfig
    ssl_context: Optional[ssl.SSLContext]
    auth: BasicAuth

    @property
    def headers(self) -> Tuple[Tuple[str, str], ...]:
        return self.config.headers


def load_settings(path: str) -> WebSettings:
    """Read, validate and build everything: the file, certificates, key, CA, auth."""
    cfg = read_web_config(path)
    ctx = ssl_context(cfg.tls, path) if cfg.tls else None
    return WebSettings(config=cfg, ssl_context=ctx, auth=BasicAuth(cfg.users))


def weakened(old: WebConfig, new: WebConfig) -> List[str]:
    """What ``new`` turns off or lowers compared with ``old`` (empty if nothing)."""
    out = []
    if old.tls is not None and new.tls is None:
        out.append("TLS")
    elif old.tls is not None and new.tls is not None:
        before = CLIENT_AUTH_TYPES[old.tls.client_auth_type]
        after = CLIENT_AUTH_TYPES[new.tls.client_auth_type]
        if before is not None and after is not None and after < before:
            out.append("client certificate verification")
        if TLS_VERSIONS[new.tls.min_version] < TLS_VERSIONS[old.tls.min_version]:
            out.append("minimum TLS version")
    if old.users and not new.users:
        out.append("basic auth")
    return out


Stamp = Optional[Tuple[int, int, int, int]]  # st_dev, st_ino, st_size, st_mtime_ns
Signature = Tuple[Tuple[str, Stamp], ...]


def _signature(files: Tuple[str, ...]) -> Signature:
    out: List[Tuple[str, Stamp]] = []
    for f in files:
        try:
            st = os.stat(f)
            out.append((f, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)))
        except OSError:
            out.append((f, None))
    return tuple(out)


def _age(sig: Signature) -> float:
    """Seconds since the most recent change of any of the files."""
    newest = max((s[3] for _, s in sig if s is not None), default=0)
    return time.time() - newest / 1e9


class WebState:
    """The web settings in force, reloaded when the file or a file it names changes."""

    def __init__(self, path: str, loader: Callable[[str], WebSettings] = load_settings,
                 settle: float = SETTLE_SECONDS) -> None:
        self.path = path
        self._loader = loader
        self._settle = settle
        self._lock = threading.Lock()
        self._settings = loader(path)  # errors at start are fatal: raise
        self._seen = _signature(self._settings.config.files())
        self._log_loaded("loaded")

    def _log_loaded(self, what: str) -> None:
        s = self._settings
        log.info(f"web config {what}", extra={
            "file": self.path, "tls": s.ssl_context is not None,
            "basic_auth_users": len(s.config.users)})
        for note in s.config.notes:
            log.info(note, extra={"file": self.path})
        if s.ssl_context is None and not s.config.users:
            # A file given is meant to secure the endpoint; one that secures nothing (empty, or
            # headers only) is most likely a mistake, and info would be missed.
            what = "is empty" if s.config.empty else \
                "sets neither tls_server_config nor basic_auth_users"
            log.warning(f"web config file {what}: serving plain HTTP without authentication",
                        extra={"file": self.path})

    def current(self) -> WebSettings:
        """The settings for a new connection; reloads first if a watched file changed."""
        if _signature(self._settings.config.files()) != self._seen:
            self._changed()
        return self._settings

    def reload(self, reason: str = "SIGHUP") -> bool:
        """Re-read unconditionally, applying even a change that lowers security (with a
        warning). True if the new settings are in force."""
        with self._lock:
            before = _signature(self._settings.config.files())
            snap = self._load(reason)
            if snap is None:
                self._seen = before
                return False
            if _signature(self._settings.config.files()) != before:
                log.error("web config reload failed, keeping the previous settings",
                          extra={"reason": reason, "err": f"web config {self.path}: changed "
                                 "while being read; send SIGHUP again once it is written"})
                return False
            lowered = weakened(self._settings.config, snap.config)
            self._apply(snap, reason)
            if lowered:
                log.warning("web config reloaded with security turned off or lowered",
                            extra={"file": self.path, "reason": reason,
                                   "lowered": ",".join(lowered)})
            return True

    def _changed(self) -> None:
        with self._lock:
            sig = _signature(self._settings.config.files())
            if sig == self._seen:
                return  # another connection's thread dealt with it meanwhile
            wait = self._settle - _age(sig)
            if wait > 0:
                time.sleep(min(wait, self._settle))
                if _signature(self._settings.config.files()) != sig:
                    return  # still being written: the next connection looks again
            snap = self._load("changed")
            after = _signature(self._settings.config.files())
            if after != sig:
                return  # changed while it was read: not applied, looked at again
            self._seen = sig
            if snap is None:
                return
            lowered = weakened(self._settings.config, snap.config)
            if lowered:
                log.warning("web config change not applied: it turns off or lowers "
                            f"{', '.join(lowered)}; send SIGHUP or restart to apply it",
                            extra={"file": self.path, "lowered": ",".join(lowered)})
                return
            self._apply(snap, "changed")

    def _load(self, reason: str) -> Optional[WebSettings]:
        try:
            return self._loader(self.path)
        except WebConfigError as e:
            err = str(e)
        except Exception as e:  # noqa: BLE001 - never a traceback from a file's content
            err = f"web config {self.path}: {type(e).__name__}: {e}"
        log.error("web config reload failed, keeping the previous settings",
                  extra={"reason": reason, "err": " ".join(err.split())})
        return None

    def _apply(self, snap: WebSettings, reason: str) -> None:
        self._settings = snap
        # Watch the files the new config names, with their state as loaded.
        self._seen = _signature(snap.config.files())
        self._log_loaded(f"reloaded ({reason})")
