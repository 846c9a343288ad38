"""The web configuration file (``--web.config.file``): reading and validating it.

The file has the format of prometheus/exporter-toolkit (``web/tls_config.go``, ``web/handler.go``),
so one file serves node_exporter and this exporter alike::

    tls_server_config:
      cert_file: server.crt          # relative paths are relative to the file's directory
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: ca.crt
      min_version: TLS12
    http_server_config:
      headers:
        X-Content-Type-Options: nosniff
    basic_auth_users:
      prometheus: $2y$10$...         # bcrypt hash

What exporter-toolkit accepts but Python's ``ssl`` module cannot do (a client certificate
requested but not verified, several curves in order, inline PEM) is refused at start with a
message naming the key, as are unknown keys: a security setting must never be silently ignored.
The file is capped in size and nesting depth (:mod:`exporter.yamlsafe`), and every way it can be
wrong is a :class:`~exporter.web.errors.WebConfigError` with a one-line message.
"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

from exporter import yamlsafe
from exporter.install import WEB, install_command
from exporter.web.auth import import_bcrypt
from exporter.web.errors import (
    WebConfigError,
    WebConfigExtraMissingError,
    WebConfigReadError,
    WebConfigSyntaxError,
    WebConfigUnknownKeyError,
    WebConfigUnsupportedError,
    WebConfigValueError,
)
from exporter.web.tls import CIPHER_SUITES, CLIENT_AUTH_TYPES, CURVES, TLS_VERSIONS, TLSSettings

# A web config is a few lines; this leaves room for thousands of users and refuses a runaway
# file before the YAML scanner spends minutes and gigabytes on it.
MAX_FILE_BYTES = 1 << 20
# bcrypt cost 16 is a few seconds per check on a current CPU, already far beyond what basic
# auth needs (exporter-toolkit's own dummy hash is cost 10).
MAX_BCRYPT_COST = 16

# exporter-toolkit's extraHTTPHeaders: the headers that may be set, and the allowed values
# where the header is an enumeration (empty tuple: any value).
ALLOWED_HEADERS: Dict[str, Tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}

TLS_KEYS = {
    "cert_file", "key_file", "client_auth_type", "client_ca_file", "cipher_suites",
    "curve_preferences", "min_version", "max_version", "prefer_server_cipher_suites",
}
# exporter-toolkit keys this exporter does not implement.
UNSUPPORTED_TLS_KEYS = {
    "cert": "inline certificates are not supported; use cert_file",
    "key": "inline keys are not supported; use key_file",
    "client_ca": "inline client CAs are not supported; use client_ca_file",
    "client_allowed_sans": "client SAN filtering is not supported",
}
TOP_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users"}
UNSUPPORTED_TOP_KEYS = {"rate_limit": "rate limiting is not supported"}
HTTP_KEYS = {"http2", "headers"}

_BCRYPT_RE = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")


@dataclass(frozen=True)
class WebConfig:
    path: str
    tls: Optional[TLSSettings] = None
    users: Tuple[Tuple[str, bytes], ...] = ()  # (user, bcrypt hash)
    headers: Tuple[Tuple[str, str], ...] = ()
    notes: Tuple[str, ...] = ()  # accepted and ignored settings, logged once per load
    empty: bool = False  # the file holds no setting at all (nothing, or comments only)

    def files(self) -> Tuple[str, ...]:
        """Every file whose change means a reload: the config itself and what it names."""
        return (self.path,) + (self.tls.files() if self.tls else ())


class _Path:
    """Where in the file a value sits, for messages: ``tls_server_config.min_version``."""

    def __init__(self, file: str) -> None:
        self.file = file

    def err(self, cls: type, key: str, message: str) -> WebConfigError:
        return cls(f"web config {self.file}: {key}: {message}")  # type: ignore[no-any-return]


def _import_yaml() -> Any:
    try:
        import yaml
    except ImportError:
        raise WebConfigExtraMissingError(
            f"--web.config.file needs PyYAML: install it with: {install_command(*WEB)}"
        ) from None
    return yaml


def _yaml_load(text: str, where: _Path) -> Any:
    """Safe-load YAML, refusing repeated keys as Go's yaml.UnmarshalStrict does, keys that are
    not plain values, and nesting deeper than any web config needs."""
    yaml = _import_yaml()

    def syntax(line: Optional[int], problem: str) -> WebConfigSyntaxError:
        at = f"line {line}: " if line else ""
        return WebConfigSyntaxError(
            f"web config {where.file}: {at}not valid YAML: {' '.join(problem.split())}")

    deep = yamlsafe.nesting_error(yaml, text)
    if deep is not None:
        raise syntax(*deep)

    class StrictLoader(yaml.SafeLoader):  # type: ignore[misc,name-defined]
        pass

    def mapping(loader: Any, node: Any, deep: bool = False) -> Dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                # "? [a, b]": a list or mapping as a key, which no key of ours is.
                raise syntax(key_node.start_mark.line + 1, "a key must be a plain value")
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise where.err(WebConfigSyntaxError, str(key),
                                f"repeated key (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return loader.construct_mapping(node, deep)  # type: ignore[no-any-return]

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise syntax(mark.line + 1 if mark is not None else None, str(problem)) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
        # The constructors' own errors: a date such as 2024-13-45, a key that cannot be hashed.
        raise syntax(None, f"{type(e).__name__}: {e}") from None


def _mapping(value: Any, key: str, where: _Path) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise where.err(WebConfigValueError, key, f"expected a mapping, got {_kind(value)}")
    for k in value:
        if not isinstance(k, str):
            raise where.err(WebConfigValueError, key, f"key {k!r} is not a string")
    return value


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _string(value: Any, key: str, where: _Path) -> str:
    if not isinstance(value, str):
        raise where.err(WebConfigValueError, key, f"expected a string, got {_kind(value)}")
    return value


def _strings(section: Mapping[str, Any], key: str, where: _Path) -> List[str]:
    """A list of strings at ``key`` (absent or null: empty), or a one-line error naming it."""
    values = section.get(key.rsplit(".", 1)[-1]) or []
    if not isinstance(values, list):
        raise where.err(WebConfigValueError, key, f"expected a list, got {_kind(values)}")
    return [_string(v, key, where) for v in values]


def _check_keys(section: Mapping[str, Any], prefix: str, known: Set[str],
                unsupported: Mapping[str, str], where: _Path) -> None:
    for k in section:
        name = f"{prefix}{k}"
        if k in unsupported:
            raise where.err(WebConfigUnsupportedError, name, unsupported[k])
        if k not in known:
            raise where.err(WebConfigUnknownKeyError, name,
                            f"unknown key (known: {', '.join(sorted(known))})")


def parse_web_config(text: str, path: str) -> WebConfig:
    """Parse and validate the file's text. Relative file names are resolved against ``path``'s
    directory, as exporter-toolkit does. Does not open the files it names (see load)."""
    where = _Path(path)
    doc = _yaml_load(text, where)
    empty = doc is None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise WebConfigSyntaxError(
            f"web config {path}: expected a mapping at the top level, got {_kind(doc)}")
    top = _mapping(doc, "(top level)", where)
    _check_keys(top, "", TOP_KEYS, UNSUPPORTED_TOP_KEYS, where)
    base = os.path.dirname(os.path.abspath(path))
    tls = _parse_tls(_mapping(top.get("tls_server_config"), "tls_server_config", where),
                     base, where)
    headers, notes = _parse_http(
        _mapping(top.get("http_server_config"), "http_server_config", where), where)
    users = _parse_users(_mapping(top.get("basic_auth_users"), "basic_auth_users", where), where)
    return WebConfig(path=path, tls=tls, users=users, headers=headers, notes=notes, empty=empty)


_TLS = "tls_server_config."


def _parse_tls(section: Dict[str, Any], base: str, where: _Path) -> Optional[TLSSettings]:
    """tls_server_config: None when TLS is off; every setting checked as exporter-toolkit
    checks it, or refused where Python's ssl module cannot do what it asks."""
    _check_keys(section, _TLS, TLS_KEYS, UNSUPPORTED_TLS_KEYS, where)
    if not _tls_enabled(section, where):
        return None
    cert = _tls_file(section, "cert_file", base, where, required=True)
    key = _tls_file(section, "key_file", base, where, required=True)
    client_ca = _tls_file(section, "client_ca_file", base, where, required=False)
    client_auth = _client_auth_type(section, client_ca, where)
    min_version, max_version = _tls_versions(section, where)
    assert cert is not None and key is not None
    return TLSSettings(cert_file=cert, key_file=key, client_auth_type=client_auth,
                       client_ca_file=client_ca, min_version=min_version,
                       max_version=max_version,
                       ciphers=_cipher_suites(section, min_version, where),
                       curve=_curve(section, where),
                       prefer_server_cipher_suites=_prefer_server_ciphers(section, where))


def _tls_enabled(section: Dict[str, Any], where: _Path) -> bool:
    """Whether TLS is on: exporter-toolkit turns it on when any of these is set
    (TLSConfig.IsEnabled). Off, any other setting is refused, since it would do nothing."""
    if any(section.get(k) not in (None, "") for k in
           ("cert_file", "key_file", "client_ca_file", "client_auth_type")):
        return True
    for k in section:
        if section[k] is not None:
            raise where.err(WebConfigValueError, _TLS + k,
                            "set without cert_file and key_file, so TLS is off")
    return False


def _tls_file(section: Dict[str, Any], key: str, base: str, where: _Path, *,
              required: bool) -> Optional[str]:
    """The file named at ``key``, resolved against ``base``; None when not set."""
    value = section.get(key)
    if value in (None, ""):
        if required:
            raise where.err(WebConfigValueError, _TLS + key, "missing (TLS needs both "
                            "cert_file and key_file)")
        return None
    return os.path.join(base, _string(value, _TLS + key, where))


def _client_auth_type(section: Dict[str, Any], client_ca: Optional[str], where: _Path) -> str:
    """client_auth_type, known, supported and consistent with client_ca_file."""
    auth = _string(section.get("client_auth_type") or "NoClientCert", _TLS + "client_auth_type",
                   where)
    if auth not in CLIENT_AUTH_TYPES:
        raise where.err(WebConfigValueError, _TLS + "client_auth_type",
                        f"unknown value {auth!r} (known: {', '.join(CLIENT_AUTH_TYPES)})")
    if CLIENT_AUTH_TYPES[auth] is None:
        raise where.err(WebConfigUnsupportedError, _TLS + "client_auth_type",
                        f"{auth} is not supported: Python's ssl module cannot request a client "
                        "certificate without verifying it; use VerifyClientCertIfGiven or "
                        "RequireAndVerifyClientCert with client_ca_file")
    if client_ca and auth == "NoClientCert":
        raise where.err(WebConfigValueError, _TLS + "client_ca_file",
                        "client CA configured but client_auth_type is NoClientCert")
    if auth != "NoClientCert" and not client_ca:
        raise where.err(WebConfigValueError, _TLS + "client_ca_file",
                        f"missing: client_auth_type {auth} verifies client certificates "
                        "against it")
    return auth


def _tls_versions(section: Dict[str, Any], where: _Path) -> Tuple[str, str]:
    """(min_version, max_version), known and in order."""
    versions = {}
    for k, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        version = _string(section.get(k) or default, _TLS + k, where)
        if version not in TLS_VERSIONS:
            raise where.err(WebConfigValueError, _TLS + k,
                            f"unknown TLS version {version!r} (known: "
                            f"{', '.join(TLS_VERSIONS)})")
        versions[k] = version
    low, high = versions["min_version"], versions["max_version"]
    if TLS_VERSIONS[low] > TLS_VERSIONS[high]:
        raise where.err(WebConfigValueError, _TLS + "min_version",
                        f"{low} is above max_version {high}")
    return low, high


def _cipher_suites(section: Dict[str, Any], min_version: str, where: _Path
                   ) -> Tuple[str, ...]:
    """OpenSSL's names of the listed cipher suites that restrict TLS 1.2 (TLS 1.3 suites
    cannot be restricted here), each one this OpenSSL has."""
    ciphers: List[str] = []
    suites = _strings(section, _TLS + "cipher_suites", where)
    for suite in suites:
        if suite not in CIPHER_SUITES:
            raise where.err(WebConfigValueError, _TLS + "cipher_suites",
                            f"unknown cipher {suite!r}")
        name = CIPHER_SUITES[suite]
        if name is not None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(name)
            except ssl.SSLError:
                raise where.err(WebConfigUnsupportedError, _TLS + "cipher_suites",
                                f"{suite} ({name}) is not available in this OpenSSL "
                                f"({ssl.OPENSSL_VERSION})") from None
            ciphers.append(name)
    if suites and not ciphers and TLS_VERSIONS[min_version] < ssl.TLSVersion.TLSv1_3:
        raise where.err(WebConfigValueError, _TLS + "cipher_suites",
                        "only TLS 1.3 suites listed, which cannot restrict TLS 1.2; set "
                        "min_version: TLS13 instead")
    return tuple(ciphers)


def _curve(section: Dict[str, Any], where: _Path) -> Optional[str]:
    """The one key-exchange curve of curve_preferences (Python's ssl sets one at most)."""
    curves = _strings(section, _TLS + "curve_preferences", where)
    for curve in curves:
        if curve not in CURVES:
            raise where.err(WebConfigValueError, _TLS + "curve_preferences",
                            f"unknown curve {curve!r} (known: {', '.join(CURVES)})")
    if len(curves) > 1:
        raise where.err(WebConfigUnsupportedError, _TLS + "curve_preferences",
                        "Python's ssl module can restrict key exchange to one curve only; "
                        "list one curve or none")
    return CURVES[curves[0]] if curves else None


def _prefer_server_ciphers(section: Dict[str, Any], where: _Path) -> bool:
    prefer = section.get("prefer_server_cipher_suites", True)
    if prefer is None:
        return True
    if not isinstance(prefer, bool):
        raise where.err(WebConfigValueError, _TLS + "prefer_server_cipher_suites",
                        f"expected true or false, got {_kind(prefer)}")
    return prefer


def _parse_http(sec: Dict[str, Any], where: _Path
                ) -> Tuple[Tuple[Tuple[str, str], ...], Tuple[str, ...]]:
    p = "http_server_config."
    _check_keys(sec, p, HTTP_KEYS, {}, where)
    notes: List[str] = []
    if "http2" in sec:
        if not isinstance(sec["http2"], bool):
            raise where.err(WebConfigValueError, p + "http2",
                            f"expected true or false, got {_kind(sec['http2'])}")
        if sec["http2"]:
            notes.append("http_server_config.http2 is accepted and ignored: the exporter "
                         "speaks HTTP/1.x only")
    headers = []
    for name, value in _mapping(sec.get("headers"), p + "headers", where).items():
        key = f"{p}headers.{name}"
        if name not in ALLOWED_HEADERS:
            raise where.err(WebConfigValueError, key,
                            f"header cannot be configured (allowed: {', '.join(ALLOWED_HEADERS)})")
        value = _string(value, key, where)
        allowed = ALLOWED_HEADERS[name]
        if allowed and value not in allowed:
            raise where.err(WebConfigValueError, key,
                            f"invalid value {value!r} (expected one of: {', '.join(allowed)})")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
            raise where.err(WebConfigValueError, key, "control characters are not allowed")
        headers.append((name, value))
    return tuple(headers), tuple(notes)


def _parse_users(sec: Dict[str, Any], where: _Path) -> Tuple[Tuple[str, bytes], ...]:
    users = []
    for user, hashed in sec.items():
        # Never quote the hash in a message: it is a secret too.
        key = f"basic_auth_users.{user}"
        if ":" in user:
            raise where.err(WebConfigValueError, key,
                            "a user name with ':' can never log in with basic auth")
        if not isinstance(hashed, str) or not _BCRYPT_RE.match(hashed):
            raise where.err(WebConfigValueError, key,
                            "not a bcrypt hash ($2a$, $2b$ or $2y$, cost, 53 characters)")
        cost = int(hashed[4:6])
        if not 4 <= cost <= 31:
            raise where.err(WebConfigValueError, key, f"bcrypt cost {cost} is outside 4..31")
        if cost > MAX_BCRYPT_COST:
            # Each step doubles the work: cost 31 is days per check, and loading the file
            # hashes a dummy password at the same cost, so the file would never load.
            raise where.err(WebConfigValueError, key,
                            f"bcrypt cost {cost} is above {MAX_BCRYPT_COST}: every check would "
                            "take minutes or more; hash the password again with a lower cost")
        users.append((user, hashed.encode("ascii")))
    if users:
        import_bcrypt()
    return tuple(users)


def read_web_config(path: str) -> WebConfig:
    try:
        text = yamlsafe.read_capped(path, MAX_FILE_BYTES)
    except OSError as e:
        raise WebConfigReadError(f"web config {path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise WebConfigSyntaxError(f"web config {path}: not UTF-8 text") from None
    except yamlsafe.TooLarge as e:
        raise WebConfigReadError(f"web config {path}: {e}, refused unread") from None
    return parse_web_config(text, path)
