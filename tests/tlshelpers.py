"""Throwaway PKI and a TLS-aware exporter runner for the web config tests.

Certificates are made with the ``cryptography`` package (test extra) in a temporary directory;
nothing secret is checked in.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import os
import socket
import ssl
import subprocess
import urllib.error
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from helpers import ROOT, exporter_cmd, free_port, poll

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


@dataclass
class Pair:
    cert: str  # PEM file path
    key: str


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(directory: str, name: str) -> Tuple[Pair, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - DAY).not_valid_after(NOW + 30 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    pair = _save(directory, name, key, cert)
    return pair, key, cert


def make_leaf(directory: str, name: str, ca_key: ec.EllipticCurvePrivateKey,
              ca_cert: x509.Certificate, server: bool, expired: bool = False) -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    before, after = (NOW - 10 * DAY, NOW - DAY) if expired else (NOW - DAY, NOW + 30 * DAY)
    b = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca_cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(before).not_valid_after(after)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage(
             [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
             critical=False))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    return _save(directory, name, key, cert)


def _save(directory: str, name: str, key: ec.EllipticCurvePrivateKey,
          cert: x509.Certificate) -> Pair:
    return Pair(
        cert=_write(os.path.join(directory, f"{name}.crt"),
                    cert.public_bytes(serialization.Encoding.PEM)),
        key=_write(os.path.join(directory, f"{name}.key"), key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())))


@dataclass
class PKI:
    dir: str
    ca: Pair
    server: Pair
    client: Pair
    other_ca: Pair
    other_client: Pair  # signed by other_ca
    expired_client: Pair  # signed by ca, validity over


def make_pki(directory: str) -> PKI:
    ca, ca_key, ca_cert = make_ca(directory, "ca")
    other_ca, o_key, o_cert = make_ca(directory, "other-ca")
    return PKI(
        dir=directory, ca=ca,
        server=make_leaf(directory, "server", ca_key, ca_cert, server=True),
        client=make_leaf(directory, "client", ca_key, ca_cert, server=False),
        other_ca=other_ca,
        other_client=make_leaf(directory, "other-client", o_key, o_cert, server=False),
        expired_client=make_leaf(directory, "expired-client", ca_key, ca_cert, server=False,
                                 expired=True))


def bcrypt_hash(password: str, cost: int = 10) -> str:
    return str(bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode())


def client_context(pki: PKI, client: Optional[Pair] = None,
                   max_version: Optional[ssl.TLSVersion] = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.ca.cert)
    if client is not None:
        ctx.load_cert_chain(client.cert, client.key)
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


Result = Union[int, str]


def https_get(port: int, path: str = "/metrics", ctx: Optional[ssl.SSLContext] = None,
              headers: Optional[Dict[str, str]] = None, timeout: float = 20
              ) -> Tuple[Result, Dict[str, str], bytes]:
    """GET over TLS. Returns (status, headers, body), or (error class name, {}, b"") when the
    connection is refused at the TLS level."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    except (ssl.SSLError, ConnectionError, http.client.HTTPException, urllib.error.URLError,
            OSError) as e:
        return type(e).__name__, {}, b""
    finally:
        conn.close()


class Proc:
    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc, self.port = proc, port
        self.stderr = ""

    def stop(self) -> str:
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self.stderr = err or ""
        return self.stderr


@contextmanager
def exporter_with(*args: str) -> Iterator[Proc]:
    """Start the real exporter on a free loopback port; ready once the port accepts TCP
    connections (TLS or not, so /-/healthy over http cannot be used)."""
    port = free_port()
    cmd = exporter_cmd(f"--web.listen-address=127.0.0.1:{port}", *args)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    p = Proc(proc, port)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"exporter exited: {proc.stderr.read() if proc.stderr else ''}")
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True

    try:
        poll(up, timeout=20, what="exporter to accept connections")
        yield p
    finally:
        if proc.returncode is None:
            p.stop()


def write_web_config(path: str, lines: List[str]) -> str:
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def tls_web_config(pki: PKI, name: str, lines: Sequence[str] = ()) -> str:
    """A web config file ``name`` in the PKI's directory that serves the PKI's server
    certificate, ``lines`` following: more of tls_server_config when indented, else further
    sections."""
    return write_web_config(os.path.join(pki.dir, name), [
        "tls_server_config:", "  cert_file: server.crt", "  key_file: server.key", *lines])
