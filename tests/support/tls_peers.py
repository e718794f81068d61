"""TLS peers for the tests and the benchmarks: certificates made on the spot (trustme), an nginx
serving TLS with them, and Secret-like mounts (the kubelet's `..data` layout) to rotate files in.

The nginx answers every path with what it saw of the connection (`tls <protocol> <session reused>
<client verify>`), and logs each request it served to `access.log`, so a test can tell that nothing
was sent through a refused connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import signal
import ssl
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import trustme

from tests.support.nginx import Nginx, write_config

TLS_SERVER = """
        ssl_certificate {dir}/server.pem;
        ssl_certificate_key {dir}/server.key;
        ssl_protocols {protocols};
        ssl_ciphers {ciphers};
        ssl_session_tickets on;
        {client_auth}
        access_log {dir}/access.log;
        location / {{
            default_type text/plain;
            return 200 "tls $ssl_protocol $ssl_session_reused $ssl_client_verify\\n";
        }}
"""


def write_leaf(cert: trustme.LeafCert, pem: Path, key: Path) -> None:
    """The leaf's chain and key into two files, each replaced by a rename (never half written)."""
    _replace(pem, cert.cert_chain_pems[0].bytes())
    _replace(key, cert.private_key_pem.bytes())


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class TlsNginx:
    """An nginx speaking TLS on 127.0.0.1 with `cert` (made by the caller's CA), optionally requiring
    client certificates from `client_ca`, limited to `protocols`; `http2`: HTTP/2 too (ALPN h2 and
    http/1.1), else HTTP/1.1 only (nginx then refuses a handshake offering h2 alone)."""

    def __init__(
        self,
        directory: Path,
        cert: trustme.LeafCert,
        *,
        client_ca: trustme.CA | None = None,
        protocols: str = "TLSv1.2 TLSv1.3",
        ciphers: str = "HIGH:!aNULL",
        http2: bool = False,
    ) -> None:
        self.dir = directory
        write_leaf(cert, directory / "server.pem", directory / "server.key")
        client_auth = ""
        if client_ca is not None:
            client_ca.cert_pem.write_to_path(str(directory / "clients.pem"))
            client_auth = f"ssl_client_certificate {directory}/clients.pem; ssl_verify_client on;"
        server = TLS_SERVER.replace("{protocols}", protocols).replace("{ciphers}", ciphers)
        server = server.replace("{client_auth}", client_auth)
        self.nginx = Nginx(directory, server)
        write_config(directory, server, self.nginx.port, listen="ssl http2 reuseport" if http2 else "ssl reuseport")
        self.port = self.nginx.port

    async def served(self) -> list[str]:
        """The request lines nginx served so far. nginx logs a request after its response, so a marker
        request is made now and waited for: every request before it has its line by then."""
        ctx = any_server_context()  # the marker only needs to reach the log
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, ssl=ctx, server_hostname="localhost")
        writer.write(b"GET /served-marker HTTP/1.1\r\nHost: marker\r\nConnection: close\r\n\r\n")
        await reader.read()
        writer.close()
        path = self.dir / "access.log"
        await wait_until(lambda: path.exists() and "/served-marker" in path.read_text())
        lines = [line.split('"')[1] for line in path.read_text().splitlines() if line.count('"') >= 2]
        return [line for line in lines if "/served-marker" not in line]

    def rotate(self, cert: trustme.LeafCert) -> None:
        """A new certificate, taken up by nginx's graceful reload (old workers finish their requests)."""
        write_leaf(cert, self.dir / "server.pem", self.dir / "server.key")
        pid = int((self.dir / "nginx.pid").read_text())
        os.kill(pid, signal.SIGHUP)


def any_server_context(cafile: Path | None = None) -> ssl.SSLContext:
    """A client context that speaks to any server, TLS 1.0 included: verifying with `cafile` if given."""
    ctx = ssl.create_default_context(cafile=None if cafile is None else str(cafile))
    if cafile is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0 is deprecated, which is the point
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("DEFAULT@SECLEVEL=0")
    return ctx


@contextlib.asynccontextmanager
async def tls_nginx(
    cert: trustme.LeafCert,
    *,
    client_ca: trustme.CA | None = None,
    protocols: str = "TLSv1.2 TLSv1.3",
    ciphers: str = "HIGH:!aNULL",
    http2: bool = False,
) -> AsyncIterator[TlsNginx]:
    with tempfile.TemporaryDirectory() as tmp:
        server = TlsNginx(Path(tmp), cert, client_ca=client_ca, protocols=protocols, ciphers=ciphers, http2=http2)
        await server.nginx.start()
        try:
            yield server
        finally:
            server.nginx.stop()


class SecretVolume:
    """A directory laid out as the kubelet mounts a Secret: `name -> ..data/name`, `..data` a symlink
    to a timestamped directory; `update()` writes a new one and swaps `..data` in one rename."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._n = 0

    def path(self, name: str) -> Path:
        return self.root / name

    def update(self, files: dict[str, bytes]) -> None:
        self._n += 1
        version = self.root / f"..2026_{self._n:04d}"
        version.mkdir()
        for name, data in files.items():
            (version / name).write_bytes(data)
            link = self.root / name
            if not link.is_symlink():
                link.symlink_to(Path("..data") / name)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(version.name)
        os.replace(tmp, self.root / "..data")


@contextlib.contextmanager
def secret_volume() -> Iterator[SecretVolume]:
    with tempfile.TemporaryDirectory() as tmp:
        yield SecretVolume(Path(tmp))


def expired(ca: trustme.CA, *names: str) -> trustme.LeafCert:
    """A certificate of `ca` for `names` that expired yesterday."""
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    return ca.issue_cert(*names, not_before=now - 30 * day, not_after=now - day)


def expiring(ca: trustme.CA, days: float, *names: str) -> trustme.LeafCert:
    """A certificate of `ca` for `names` valid for `days` more."""
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    return ca.issue_cert(*names, not_before=now - day, not_after=now + days * day)


async def wait_until(predicate: object, timeout_secs: float = 15.0) -> None:
    """Poll `predicate()` until true; a test failure naming it after `timeout_secs`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_secs
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"not true within {timeout_secs}s: {predicate}")
        await asyncio.sleep(0.02)
