"""The web configuration file (``--web.config.file``): TLS, basic auth and response headers.

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

:class:`WebState` holds the settings in force. It re-reads the file (and the certificate, key and
CA files it names) when any of them changes, checked with ``stat`` when a connection arrives, or
when :meth:`WebState.reload` is called (on SIGHUP). A bad new file keeps the old settings and logs
one line.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import logging
import os
import re
import secrets
import ssl
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

from exporter.config import ConfigError
from exporter.install import WEB, install_command

log = logging.getLogger(__name__)


class WebConfigError(ConfigError):
    """The web configuration file cannot be used. The message is one line naming file and key."""


class WebConfigExtraMissingError(WebConfigError):
    """--web.config.file was given but PyYAML or bcrypt (the ``web`` extra) is not installed."""


class WebConfigReadError(WebConfigError):
    """The web configuration file, or a file it names, cannot be read."""


class WebConfigSyntaxError(WebConfigError):
    """The file is not YAML, not a mapping, or repeats a key."""


class WebConfigUnknownKeyError(WebConfigError):
    """A key that exporter-toolkit does not define (a typo must not switch security off)."""


class WebConfigValueError(WebConfigError):
    """A value of the wrong type or outside the allowed set."""


class WebConfigUnsupportedError(WebConfigError):
    """Valid for exporter-toolkit, but not something Python's ssl module can do."""


class WebConfigTLSError(WebConfigError):
    """The certificate, key or client CA file does not load."""


# exporter-toolkit's TLSVersion names.
TLS_VERSIONS: Dict[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

CLIENT_AUTH_TYPES: Dict[str, Optional[ssl.VerifyMode]] = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
    # OpenSSL can ask for a certificate without checking it only through a verify callback,
    # which Python's ssl module does not expose: refuse rather than be silently stricter.
    "RequestClientCert": None,
    "RequireAnyClientCert": None,
    "RequireClientCert": None,  # exporter-toolkit's old spelling of RequireAnyClientCert
}

# Go's tls.CipherSuites() names (the ones exporter-toolkit accepts) -> OpenSSL names. They
# restrict TLS 1.2 and below only, as in Go; the TLS 1.3 suites are not configurable in Go and
# are accepted and left as they are.
CIPHER_SUITES: Dict[str, Optional[str]] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
}

# exporter-toolkit curve names -> OpenSSL group names.
CURVES: Dict[str, str] = {
    "CurveP256": "prime256v1",
    "CurveP384": "secp384r1",
    "CurveP521": "secp521r1",
    "X25519": "X25519",
}

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
# bcrypt uses at most 72 bytes of a password (OpenBSD bcrypt.c, BCRYPT_MAXKEY... 72).
BCRYPT_MAX_PASSWORD = 72


@dataclass(frozen=True)
class TLSSettings:
    cert_file: str
    key_file: str
    client_auth_type: str = "NoClientCert"
    client_ca_file: Optional[str] = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    ciphers: Tuple[str, ...] = ()  # OpenSSL names; () = OpenSSL's defaults
    curve: Optional[str] = None  # OpenSSL group name
    prefer_server_cipher_suites: bool = True

    def files(self) -> Tuple[str, ...]:
        return (self.cert_file, self.key_file) + (
            (self.client_ca_file,) if self.client_ca_file else ())


@dataclass(frozen=True)
class WebConfig:
    path: str
    tls: Optional[TLSSettings] = None
    users: Tuple[Tuple[str, bytes], ...] = ()  # (user, bcrypt hash)
    headers: Tuple[Tuple[str, str], ...] = ()
    notes: Tuple[str, ...] = ()  # accepted and ignored settings, logged once per load

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


def _import_bcrypt() -> Any:
    try:
        import bcrypt
    except ImportError:
        raise WebConfigExtraMissingError(
            "basic_auth_users in --web.config.file needs bcrypt: install it with: "
            f"{install_command(*WEB)}") from None
    return bcrypt


def _yaml_load(text: str, where: _Path) -> Any:
    """Safe-load YAML, refusing repeated keys as Go's yaml.UnmarshalStrict does."""
    yaml = _import_yaml()

    class StrictLoader(yaml.SafeLoader):  # type: ignore[misc,name-defined]
        pass

    def mapping(loader: Any, node: Any, deep: bool = False) -> Dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
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
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise WebConfigSyntaxError(
            f"web config {where.file}: {line}not valid YAML: {' '.join(str(problem).split())}"
        ) from None


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
    return WebConfig(path=path, tls=tls, users=users, headers=headers, notes=notes)


def _parse_tls(sec: Dict[str, Any], base: str, where: _Path) -> Optional[TLSSettings]:
    p = "tls_server_config."
    _check_keys(sec, p, TLS_KEYS, UNSUPPORTED_TLS_KEYS, where)
    # exporter-toolkit turns TLS on when any of these is set (TLSConfig.IsEnabled).
    if not any(sec.get(k) not in (None, "") for k in
               ("cert_file", "key_file", "client_ca_file", "client_auth_type")):
        for k in sec:
            if sec[k] is not None:
                raise where.err(WebConfigValueError, p + k,
                                "set without cert_file and key_file, so TLS is off")
        return None

    def file(key: str, required: bool) -> Optional[str]:
        v = sec.get(key)
        if v in (None, ""):
            if required:
                raise where.err(WebConfigValueError, p + key, "missing (TLS needs both "
                                "cert_file and key_file)")
            return None
        return os.path.join(base, _string(v, p + key, where))

    cert, key = file("cert_file", True), file("key_file", True)
    ca = file("client_ca_file", False)
    auth = _string(sec.get("client_auth_type") or "NoClientCert", p + "client_auth_type", where)
    if auth not in CLIENT_AUTH_TYPES:
        raise where.err(WebConfigValueError, p + "client_auth_type",
                        f"unknown value {auth!r} (known: {', '.join(CLIENT_AUTH_TYPES)})")
    if CLIENT_AUTH_TYPES[auth] is None:
        raise where.err(WebConfigUnsupportedError, p + "client_auth_type",
                        f"{auth} is not supported: Python's ssl module cannot request a client "
                        "certificate without verifying it; use VerifyClientCertIfGiven or "
                        "RequireAndVerifyClientCert with client_ca_file")
    if ca and auth == "NoClientCert":
        raise where.err(WebConfigValueError, p + "client_ca_file",
                        "client CA configured but client_auth_type is NoClientCert")
    if auth != "NoClientCert" and not ca:
        raise where.err(WebConfigValueError, p + "client_ca_file",
                        f"missing: client_auth_type {auth} verifies client certificates "
                        "against it")
    versions = {}
    for k, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        v = _string(sec.get(k) or default, p + k, where)
        if v not in TLS_VERSIONS:
            raise where.err(WebConfigValueError, p + k,
                            f"unknown TLS version {v!r} (known: {', '.join(TLS_VERSIONS)})")
        versions[k] = v
    if TLS_VERSIONS[versions["min_version"]] > TLS_VERSIONS[versions["max_version"]]:
        raise where.err(WebConfigValueError, p + "min_version",
                        f"{versions['min_version']} is above max_version "
                        f"{versions['max_version']}")
    ciphers: List[str] = []
    suites = sec.get("cipher_suites") or []
    if not isinstance(suites, list):
        raise where.err(WebConfigValueError, p + "cipher_suites",
                        f"expected a list, got {_kind(suites)}")
    for s in suites:
        s = _string(s, p + "cipher_suites", where)
        if s not in CIPHER_SUITES:
            raise where.err(WebConfigValueError, p + "cipher_suites", f"unknown cipher {s!r}")
        name = CIPHER_SUITES[s]
        if name is not None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(name)
            except ssl.SSLError:
                raise where.err(WebConfigUnsupportedError, p + "cipher_suites",
                                f"{s} ({name}) is not available in this OpenSSL "
                                f"({ssl.OPENSSL_VERSION})") from None
            ciphers.append(name)
    if suites and not ciphers and TLS_VERSIONS[versions["min_version"]] < ssl.TLSVersion.TLSv1_3:
        raise where.err(WebConfigValueError, p + "cipher_suites",
                        "only TLS 1.3 suites listed, which cannot restrict TLS 1.2; set "
                        "min_version: TLS13 instead")
    curve = None
    curves = sec.get("curve_preferences") or []
    if not isinstance(curves, list):
        raise where.err(WebConfigValueError, p + "curve_preferences",
                        f"expected a list, got {_kind(curves)}")
    for c in curves:
        c = _string(c, p + "curve_preferences", where)
        if c not in CURVES:
            raise where.err(WebConfigValueError, p + "curve_preferences",
                            f"unknown curve {c!r} (known: {', '.join(CURVES)})")
    if len(curves) > 1:
        raise where.err(WebConfigUnsupportedError, p + "curve_preferences",
                        "Python's ssl module can restrict key exchange to one curve only; "
                        "list one curve or none")
    if curves:
        curve = CURVES[curves[0]]
    prefer = sec.get("prefer_server_cipher_suites", True)
    if prefer is None:
        prefer = True
    if not isinstance(prefer, bool):
        raise where.err(WebConfigValueError, p + "prefer_server_cipher_suites",
                        f"expected true or false, got {_kind(prefer)}")
    assert cert is not None and key is not None
    return TLSSettings(cert_file=cert, key_file=key, client_auth_type=auth, client_ca_file=ca,
                       min_version=versions["min_version"], max_version=versions["max_version"],
                       ciphers=tuple(ciphers), curve=curve, prefer_server_cipher_suites=prefer)


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
        users.append((user, hashed.encode("ascii")))
    if users:
        _import_bcrypt()
    return tuple(users)


def _no_passphrase() -> str:
    raise WebConfigTLSError("encrypted keys are not supported")


def ssl_context(tls: TLSSettings, where: str) -> ssl.SSLContext:
    """Build the server SSLContext. Raises WebConfigTLSError naming the file that fails."""
    p = "tls_server_config."
    for key, path in (("cert_file", tls.cert_file), ("key_file", tls.key_file),
                      ("client_ca_file", tls.client_ca_file)):
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise WebConfigReadError(
                f"web config {where}: {p}{key}: cannot read {path}: {e.strerror or e}") from None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[tls.min_version]
    ctx.maximum_version = TLS_VERSIONS[tls.max_version]
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file, password=_no_passphrase)
    except WebConfigTLSError as e:
        raise WebConfigTLSError(f"web config {where}: {p}key_file: {tls.key_file}: {e}") from None
    except ssl.SSLError as e:
        raise WebConfigTLSError(
            f"web config {where}: {p}cert_file/key_file: cannot load certificate "
            f"{tls.cert_file} with key {tls.key_file}: {e.reason or e}") from None
    if tls.ciphers:
        ctx.set_ciphers(":".join(tls.ciphers))
    if tls.curve:
        try:
            ctx.set_ecdh_curve(tls.curve)
        except (ssl.SSLError, ValueError) as e:
            # Before Python 3.10 set_ecdh_curve takes EC curves only, not X25519/X448.
            raise WebConfigUnsupportedError(
                f"web config {where}: {p}curve_preferences: this Python's ssl module cannot "
                f"use {tls.curve}: {getattr(e, 'reason', None) or e}") from None
    if tls.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    mode = CLIENT_AUTH_TYPES[tls.client_auth_type]
    assert mode is not None
    if tls.client_ca_file:
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        except ssl.SSLError as e:
            raise WebConfigTLSError(
                f"web config {where}: {p}client_ca_file: no usable CA certificate in "
                f"{tls.client_ca_file}: {e.reason or e}") from None
        if not ctx.get_ca_certs():
            raise WebConfigTLSError(
                f"web config {where}: {p}client_ca_file: no CA certificate in "
                f"{tls.client_ca_file}")
    ctx.verify_mode = mode
    return ctx


_dummy_lock = threading.Lock()
_dummy_hashes: Dict[int, bytes] = {}


def _dummy_hash(cost: int) -> bytes:
    """A hash of a random password at ``cost``, checked for unknown users so that they cost
    the same bcrypt work as a wrong password (exporter-toolkit uses a fixed cost-10 hash,
    which is faster than users' hashes of higher cost: a timing oracle we avoid)."""
    with _dummy_lock:
        if cost not in _dummy_hashes:
            bcrypt = _import_bcrypt()
            _dummy_hashes[cost] = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(cost))
        return _dummy_hashes[cost]


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes.

    Results (success and failure) are cached by (user, hash, sha256(password)) in a bounded
    LRU, like exporter-toolkit's cache, so a scrape every few seconds does not pay bcrypt's
    deliberate cost each time. bcrypt runs under a lock, one check at a time, so a flood of
    guesses costs one core at most.
    """

    CACHE_SIZE = 100

    def __init__(self, users: Tuple[Tuple[str, bytes], ...]) -> None:
        self._users = [(u.encode("utf-8"), h) for u, h in users]
        costs = collections.Counter(int(h[4:6]) for _, h in users)
        # The cost most users have (ties: the higher) for the dummy hash.
        self._dummy = _dummy_hash(max(costs, key=lambda c: (costs[c], c))) if users else b""
        self._cache: collections.OrderedDict[Tuple[bytes, bytes, bytes], bool] = (
            collections.OrderedDict())
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._users)

    def _lookup(self, user: bytes) -> Optional[bytes]:
        # Compare against every user without stopping early, in constant time per name.
        found = None
        for name, hashed in self._users:
            if hmac.compare_digest(name, user):
                found = hashed
        return found

    def check(self, header: Optional[str]) -> bool:
        """True if ``header`` (the Authorization value) names a user and its password."""
        creds = parse_basic(header)
        if creds is None:
            return False
        user, password = creds
        hashed = self._lookup(user)
        valid_user = hashed is not None
        target = hashed if hashed is not None else self._dummy
        key = (user, target, hashlib.sha256(password).digest())
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached and valid_user
        bcrypt = _import_bcrypt()
        with self._bcrypt_lock:
            # bcrypt reads at most 72 bytes; the library refuses longer input. Do the same
            # work on the first 72 bytes, and refuse the longer password afterwards.
            ok = bool(bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], target))
        ok = ok and valid_user and len(password) <= BCRYPT_MAX_PASSWORD
        with self._cache_lock:
            self._cache[key] = ok
            self._cache.move_to_end(key)
            while len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        return ok


def parse_basic(header: Optional[str]) -> Optional[Tuple[bytes, bytes]]:
    """``Basic base64(user:password)`` -> (user, password) as bytes, or None if malformed."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = raw.partition(b":")
    if not sep:
        return None
    return user, password


@dataclass(frozen=True)
class WebSnapshot:
    """The settings one connection is served with."""

    config: WebConfig
    ssl_context: Optional[ssl.SSLContext]
    auth: BasicAuth

    @property
    def headers(self) -> Tuple[Tuple[str, str], ...]:
        return self.config.headers


def read_web_config(path: str) -> WebConfig:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise WebConfigReadError(f"web config {path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise WebConfigSyntaxError(f"web config {path}: not UTF-8 text") from None
    return parse_web_config(text, path)


def load_snapshot(path: str) -> WebSnapshot:
    """Read, validate and build everything: the file, certificates, key, CA, auth."""
    cfg = read_web_config(path)
    ctx = ssl_context(cfg.tls, path) if cfg.tls else None
    return WebSnapshot(config=cfg, ssl_context=ctx, auth=BasicAuth(cfg.users))


Signature = Tuple[Tuple[str, Optional[Tuple[int, int, int, int]]], ...]


def _signature(files: Tuple[str, ...]) -> Signature:
    out: List[Tuple[str, Optional[Tuple[int, int, int, int]]]] = []
    for f in files:
        try:
            st = os.stat(f)
            out.append((f, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)))
        except OSError:
            out.append((f, None))
    return tuple(out)


class WebState:
    """The web settings in force, reloaded when the file or a file it names changes."""

    def __init__(self, path: str, loader: Callable[[str], WebSnapshot] = load_snapshot) -> None:
        self.path = path
        self._loader = loader
        self._lock = threading.Lock()
        self._snapshot = loader(path)  # errors at start are fatal: raise
        self._seen = _signature(self._snapshot.config.files())
        self._log_loaded("loaded")

    def _log_loaded(self, what: str) -> None:
        s = self._snapshot
        log.info(f"web config {what}", extra={
            "file": self.path, "tls": s.ssl_context is not None,
            "basic_auth_users": len(s.config.users)})
        for note in s.config.notes:
            log.info(note, extra={"file": self.path})

    def current(self) -> WebSnapshot:
        """The settings for a new connection; reloads first if a watched file changed."""
        sig = _signature(self._snapshot.config.files())
        if sig != self._seen:
            self._reload(sig, "changed")
        return self._snapshot

    def reload(self, reason: str = "SIGHUP") -> bool:
        """Re-read unconditionally. True if the new settings are in force."""
        return self._reload(_signature(self._snapshot.config.files()), reason)

    def _reload(self, sig: Signature, reason: str) -> bool:
        with self._lock:
            if reason == "changed" and sig == self._seen:
                return True  # another connection's thread reloaded meanwhile
            self._seen = sig
            try:
                snap = self._loader(self.path)
            except WebConfigError as e:
                log.error("web config reload failed, keeping the previous settings",
                          extra={"reason": reason, "err": str(e)})
                return False
            self._snapshot = snap
            # Watch the files the new config names, with their state as loaded.
            self._seen = _signature(snap.config.files())
            self._log_loaded(f"reloaded ({reason})")
            return True
