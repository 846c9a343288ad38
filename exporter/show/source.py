"""Where a view's exposition comes from: this host's collectors (as ``dump`` collects), or a
running exporter over HTTP(S) with an optional CA file, client certificate and basic auth.

Every failure a user can cause (no route, refused, wrong CA, wrong password, an answer that is
not an exposition) becomes a :class:`~exporter.show.reading.ShowError` of one line.
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from typing import Callable, Optional

from exporter import __version__
from exporter.show.reading import Reading, ShowError, parse

# Bodies beyond this are refused: a scrape of 100,000 sockets is well under 1 MiB; what is
# bigger is not an exporter of ours.
MAX_BODY = 64 << 20


@dataclass(frozen=True)
class Remote:
    """How to read a running exporter."""

    url: str
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    insecure: bool = False
    username: str = ""
    password: str = ""
    timeout: float = 10.0


def normalise_url(url: str) -> str:
    """``host:port`` -> ``http://host:port/metrics``; a URL without a path gets ``/metrics``.
    Raises ValueError with a one-line reason."""
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r}: only http and https URLs are supported")
    if not parts.hostname:
        raise ValueError(f"{url!r} names no host")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise ValueError(f"{url!r}: bad port") from None
    path = parts.path if parts.path not in ("", "/") else "/metrics"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _context(r: Remote) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=r.ca_file or None)
        if r.cert_file:
            ctx.load_cert_chain(r.cert_file, r.key_file or None)
    except (OSError, ssl.SSLError) as e:
        what = getattr(e, "strerror", None) or getattr(e, "reason", None) or str(e)
        raise ShowError(f"cannot load the TLS files ({r.ca_file or r.cert_file}): {what}") from None
    if r.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _HTTPS(http.client.HTTPSConnection):
    """An HTTPS connection that checks the certificate against another name than the host it
    connects to (``kubectl port-forward`` to localhost, a certificate for the service)."""

    def __init__(self, host: str, port: Optional[int], ctx: ssl.SSLContext, server_name: str,
                 timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ctx)
        self._ctx = ctx
        self._server_name = server_name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._ctx.wrap_socket(self.sock, server_hostname=self._server_name)


def fetch(r: Remote) -> str:
    """GET the exposition; its text, or ShowError."""
    url = r.url
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = _HTTPS(host, parts.port, _context(r), r.server_name or host, r.timeout)
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=r.timeout)
    headers = {"Accept": "text/plain;version=0.0.4", "User-Agent": f"netstat-exporter/{__version__}"}
    if r.username or r.password:
        token = base64.b64encode(f"{r.username}:{r.password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read(MAX_BODY + 1)
    except ssl.SSLCertVerificationError as e:
        raise ShowError(f"{url}: TLS certificate not trusted ({e.verify_message}); "
                        "give the CA with --tls.ca-file") from None
    except ssl.SSLError as e:
        raise ShowError(f"{url}: TLS handshake failed ({e.reason or e})") from None
    except socket.gaierror as e:
        raise ShowError(f"{url}: cannot resolve {host} ({e.strerror})") from None
    except (socket.timeout, TimeoutError):
        raise ShowError(f"{url}: no answer within {r.timeout:g} s") from None
    except ConnectionRefusedError:
        raise ShowError(f"{url}: connection refused (is the exporter running there?)") from None
    except (http.client.HTTPException, ConnectionResetError) as e:
        # A TLS server answers a plain HTTP request by closing, or with bytes that are not HTTP.
        hint = "; https:// for an exporter with TLS?" if parts.scheme == "http" else ""
        what = "closed the connection" if isinstance(
            e, (ConnectionResetError, http.client.RemoteDisconnected)) else "not an HTTP answer"
        raise ShowError(f"{url}: {what} ({type(e).__name__}){hint}") from None
    except OSError as e:
        raise ShowError(f"{url}: {e.strerror or e}") from None
    finally:
        conn.close()
    if resp.status == 400 and parts.scheme == "http" and b"HTTPS server" in body:
        # What the exporter (and Go's net/http) answers to plain HTTP on its TLS port.
        raise ShowError(f"{url}: HTTP 400, the exporter expects TLS there; "
                        "https:// for an exporter with TLS?")
    if resp.status == 401:
        raise ShowError(f"{url}: 401 Unauthorized: wrong or missing credentials "
                        "(--auth.username, --auth.password-file)")
    if resp.status != 200:
        where = resp.getheader("Location")
        raise ShowError(f"{url}: HTTP {resp.status} {resp.reason}"
                        + (f" (redirected to {where})" if where else ""))
    if len(body) > MAX_BODY:
        raise ShowError(f"{url}: answer larger than {MAX_BODY >> 20} MiB")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise ShowError(f"{url}: answer is not UTF-8 text") from None


def remote_reader(r: Remote) -> Callable[[], Reading]:
    def read() -> Reading:
        text = fetch(r)
        return parse(text, source=r.url, monotonic=time.monotonic(), wall=time.time())

    return read


def local_reader(collect: Callable[[], bytes], label: str = "this host") -> Callable[[], Reading]:
    """``collect`` is one scrape of this host's collectors (generate_text of a target)."""

    def read() -> Reading:
        mono, wall = time.monotonic(), time.time()
        return parse(collect().decode("utf-8"), source=label, monotonic=mono, wall=wall)

    return read
