"""TLS for the web endpoint: exporter-toolkit's names for versions, suites, curves and client
authentication (``web/tls_config.go``), and the server ``SSLContext`` built from them."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from exporter.web.errors import WebConfigReadError, WebConfigTLSError, WebConfigUnsupportedError

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



def _no_passphrase() -> str:
    raise WebConfigTLSError("encrypted keys are not supported")


def _pem_labels(path: str) -> List[str]:
    """The kinds of the PEM blocks in ``path`` (CERTIFICATE, PRIVATE KEY, EC PRIVATE KEY...)."""
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 20).decode("ascii", "replace")
    except OSError:
        return []
    return re.findall(r"-----BEGIN ([A-Z0-9 ]+)-----", text)


def _pair_problem(tls: TLSSettings, e: ssl.SSLError) -> str:
    """Which of cert_file and key_file is wrong, where OpenSSL says only "PEM lib"."""
    p = "tls_server_config."
    cert = _pem_labels(tls.cert_file)
    key = _pem_labels(tls.key_file)
    cert_ok = "CERTIFICATE" in cert
    key_ok = any(k.endswith("PRIVATE KEY") for k in key)
    if not cert_ok and any(k.endswith("PRIVATE KEY") for k in cert) and "CERTIFICATE" in key:
        return (f"{p}cert_file {tls.cert_file} holds a private key and key_file "
                f"{tls.key_file} a certificate: are the two swapped?")
    if not cert_ok:
        return f"{p}cert_file {tls.cert_file} holds no PEM certificate"
    if not key_ok:
        return f"{p}key_file {tls.key_file} holds no PEM private key"
    return (f"{p}cert_file/key_file: cannot load certificate {tls.cert_file} with key "
            f"{tls.key_file}: {e.reason or e}")


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
        raise WebConfigTLSError(f"web config {where}: {_pair_problem(tls, e)}") from None
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
