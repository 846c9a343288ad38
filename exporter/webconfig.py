"""The web configuration file (``--web.config.file``): TLS, basic auth and response headers.

The code lives in :mod:`exporter.web` (``config``, ``tls``, ``auth``, ``state``, as
exporter-toolkit splits ``web/``); this module keeps the names it always offered.
"""

from __future__ import annotations

from exporter.web.auth import BCRYPT_MAX_PASSWORD, BasicAuth, parse_basic
from exporter.web.config import (
    ALLOWED_HEADERS,
    MAX_FILE_BYTES,
    WebConfig,
    parse_web_config,
    read_web_config,
)
from exporter.web.errors import (
    WebConfigError,
    WebConfigExtraMissingError,
    WebConfigReadError,
    WebConfigSyntaxError,
    WebConfigTLSError,
    WebConfigUnknownKeyError,
    WebConfigUnsupportedError,
    WebConfigValueError,
)
from exporter.web.state import SETTLE_SECONDS, WebSnapshot, WebState, load_snapshot, weakened
from exporter.web.tls import CIPHER_SUITES, CLIENT_AUTH_TYPES, CURVES, TLS_VERSIONS, TLSSettings, ssl_context

__all__ = [
    "ALLOWED_HEADERS", "BCRYPT_MAX_PASSWORD", "BasicAuth", "CIPHER_SUITES", "CLIENT_AUTH_TYPES",
    "CURVES", "MAX_FILE_BYTES", "SETTLE_SECONDS", "TLSSettings", "TLS_VERSIONS", "WebConfig",
    "WebConfigError", "WebConfigExtraMissingError", "WebConfigReadError",
    "WebConfigSyntaxError", "WebConfigTLSError", "WebConfigUnknownKeyError",
    "WebConfigUnsupportedError", "WebConfigValueError", "WebSnapshot", "WebState",
    "load_snapshot", "parse_basic", "parse_web_config", "read_web_config", "ssl_context",
    "weakened",
]
