"""TLS end to end: a throwaway CA, the real exporter, scrapes with and without client
certificates; wrong CA, expired certificate and a TLS version below min_version refused;
certificate rotation picked up without a restart."""

from __future__ import annotations

import os
import shutil
import ssl
from typing import Iterator

import pytest
from helpers import http_get, parse, poll
from tlshelpers import (
    PKI,
    bcrypt_hash,
    client_context,
    exporter_with,
    https_get,
    make_ca,
    make_leaf,
    tls_web_config,
    write_web_config,
)


def _ok(result: tuple) -> bool:
    status, _, body = result
    return status == 200 and bool(parse(body.decode()))


def _refused(result: tuple) -> bool:
    """Refused at the TLS level: no HTTP status at all."""
    return isinstance(result[0], str)


@pytest.fixture(scope="module")
def mtls(pki: PKI) -> Iterator[int]:
    cfg = tls_web_config(pki, "mtls.yml", [
        "  client_auth_type: RequireAndVerifyClientCert",
        "  client_ca_file: ca.crt",
    ])
    with exporter_with(f"--web.config.file={cfg}") as ex:
        yield ex.port


def test_client_cert_required_and_verified(pki: PKI, mtls: int) -> None:
    assert _ok(https_get(mtls, ctx=client_context(pki, pki.client)))
    no_cert = https_get(mtls, ctx=client_context(pki))
    assert _refused(no_cert), no_cert
    wrong_ca = https_get(mtls, ctx=client_context(pki, pki.other_client))
    assert _refused(wrong_ca), wrong_ca
    expired = https_get(mtls, ctx=client_context(pki, pki.expired_client))
    assert _refused(expired), expired
    # Still serving the good client after all that.
    assert _ok(https_get(mtls, ctx=client_context(pki, pki.client)))


def test_plain_http_to_tls_port_gets_no_metrics(mtls: int) -> None:
    try:
        status = http_get(f"http://127.0.0.1:{mtls}/metrics", timeout=10)[0]
    except OSError:
        status = 0
    assert status != 200


def test_server_certificate_verified_by_client(pki: PKI, mtls: int) -> None:
    # A client trusting only the other CA refuses the exporter's certificate.
    ctx = ssl.create_default_context(cafile=pki.other_ca.cert)
    ctx.load_cert_chain(pki.client.cert, pki.client.key)
    assert https_get(mtls, ctx=ctx)[0] == "SSLCertVerificationError"


def test_verify_if_given(pki: PKI) -> None:
    cfg = tls_web_config(pki, "optional.yml", [
        "  client_auth_type: VerifyClientCertIfGiven",
        "  client_ca_file: ca.crt",
    ])
    with exporter_with(f"--web.config.file={cfg}") as ex:
        assert _ok(https_get(ex.port, ctx=client_context(pki)))
        assert _ok(https_get(ex.port, ctx=client_context(pki, pki.client)))
        assert _refused(https_get(ex.port, ctx=client_context(pki, pki.other_client)))
        assert _refused(https_get(ex.port, ctx=client_context(pki, pki.expired_client)))


def test_min_version(pki: PKI) -> None:
    cfg = tls_web_config(pki, "tls13.yml", [
        "  min_version: TLS13",
    ])
    with exporter_with(f"--web.config.file={cfg}") as ex:
        r = https_get(ex.port, ctx=client_context(pki, max_version=ssl.TLSVersion.TLSv1_2))
        assert _refused(r), r
        ctx = client_context(pki)
        assert _ok(https_get(ex.port, ctx=ctx))


def test_max_version_and_cipher_suites(pki: PKI) -> None:
    cfg = tls_web_config(pki, "tls12.yml", [
        "  max_version: TLS12",
        "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]",
    ])
    with exporter_with(f"--web.config.file={cfg}") as ex:
        ctx = client_context(pki)
        import http.client
        conn = http.client.HTTPSConnection("127.0.0.1", ex.port, context=ctx, timeout=20)
        conn.request("GET", "/-/healthy")
        version, cipher = conn.sock.version(), conn.sock.cipher()[0]
        assert conn.getresponse().status == 200
        conn.close()
        assert (version, cipher) == ("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384")
        # A client offering only other TLS 1.2 suites is refused.
        other = client_context(pki, max_version=ssl.TLSVersion.TLSv1_2)
        other.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
        assert _refused(https_get(ex.port, ctx=other))


def test_tls_with_basic_auth_and_headers(pki: PKI) -> None:
    cfg = tls_web_config(pki, "tls-auth.yml", [
        "http_server_config:",
        "  headers:",
        "    Strict-Transport-Security: max-age=63072000",
        "basic_auth_users:",
        f"  prometheus: '{bcrypt_hash('scrape-me', 5)}'",
    ])
    import base64
    good = "Basic " + base64.b64encode(b"prometheus:scrape-me").decode()
    with exporter_with(f"--web.config.file={cfg}") as ex:
        status, headers, _ = https_get(ex.port, ctx=client_context(pki))
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic ")
        assert headers["Strict-Transport-Security"] == "max-age=63072000"
        r = https_get(ex.port, ctx=client_context(pki), headers={"Authorization": good})
        assert _ok(r)
        assert r[1]["Strict-Transport-Security"] == "max-age=63072000"


def test_certificate_rotation_without_restart(pki: PKI, tmp_path: os.PathLike[str]) -> None:
    d = str(tmp_path)
    ca, ca_key, ca_cert = make_ca(d, "rot-ca")
    first = make_leaf(d, "rot-1", ca_key, ca_cert, server=True)
    second = make_leaf(d, "rot-2", ca_key, ca_cert, server=True)
    shutil.copy(first.cert, os.path.join(d, "live.crt"))
    shutil.copy(first.key, os.path.join(d, "live.key"))
    cfg = write_web_config(os.path.join(d, "web.yml"), [
        "tls_server_config:", "  cert_file: live.crt", "  key_file: live.key"])

    def served_cert(port: int) -> bytes:
        ctx = ssl.create_default_context(cafile=ca.cert)
        import socket
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s, \
                ctx.wrap_socket(s, server_hostname="localhost") as t:
            der = t.getpeercert(binary_form=True)
            assert der is not None
            return der

    def der(path: str) -> bytes:
        with open(path) as f:
            return ssl.PEM_cert_to_DER_cert(f.read())

    with exporter_with(f"--web.config.file={cfg}") as ex:
        assert served_cert(ex.port) == der(first.cert)
        # Replace key first, then the certificate (the usual order of a renewal): in between
        # the pair does not match, the reload fails and the old pair keeps serving.
        shutil.copy(second.key, os.path.join(d, "live.key.tmp"))
        os.replace(os.path.join(d, "live.key.tmp"), os.path.join(d, "live.key"))
        assert served_cert(ex.port) == der(first.cert)
        shutil.copy(second.cert, os.path.join(d, "live.crt.tmp"))
        os.replace(os.path.join(d, "live.crt.tmp"), os.path.join(d, "live.crt"))
        poll(lambda: served_cert(ex.port) == der(second.cert), timeout=10,
             what="rotated certificate served")
