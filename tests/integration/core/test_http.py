"""The core's HTTP and TLS helpers against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
import trustme
from aiohttp import web

from sidecars.core.health import Result, respond
from sidecars.core.http import client_session, read_answer, start_server
from sidecars.core.redact import refuse_url_credentials
from sidecars.core.tls import TlsClientSettings, TlsError, tls_client


class Peer:
    """A server whose handlers the test sets, recording what reached it."""

    def __init__(self) -> None:
        self.seen: list[web.Request] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)
        self.handler: Callable[[web.Request], web.StreamResponse] = lambda r: web.Response(text="ok")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request)
        return self.handler(request)


@pytest.fixture
async def peer() -> AsyncIterator[tuple[Peer, str]]:
    p = Peer()
    server = await start_server(p.app, "127.0.0.1", 0)
    yield p, f"http://127.0.0.1:{server.port}"
    await server.close()


async def test_start_server_reads_the_bound_port_and_a_taken_port_releases_everything() -> None:
    server = await start_server(web.Application(), "127.0.0.1", 0)
    try:
        assert server.port > 0
        with socket.create_connection(("127.0.0.1", server.port), timeout=5):
            pass
        app = web.Application()
        with pytest.raises(OSError):
            await start_server(app, "127.0.0.1", server.port)
        assert app.frozen  # it was set up, then released: the app was not left running
    finally:
        await server.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()


async def test_the_client_never_follows_a_redirect(peer: tuple[Peer, str]) -> None:
    p, url = peer
    p.handler = lambda r: web.Response(status=302, headers={"Location": "/elsewhere"})
    async with client_session() as client:
        async with client.post(url + "/push", data=b"x") as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/elsewhere"
        with pytest.raises(ValueError, match="redirects are the client's policy"):
            client.get(url, allow_redirects=True)
    assert [r.path for r in p.seen] == ["/push"]


async def test_a_client_told_to_follow_redirects_keeps_its_credentials_home_and_stops(peer: tuple[Peer, str]) -> None:
    p, url = peer
    other = Peer()
    other_server = await start_server(other.app, "127.0.0.1", 0)
    elsewhere = f"http://127.0.0.1:{other_server.port}"
    try:
        p.handler = lambda r: web.Response(status=302, headers={"Location": elsewhere + "/metrics"})
        async with client_session(follow_redirects=True) as client:
            async with client.get(url + "/metrics", headers={"Authorization": "Bearer tk"}) as resp:
                assert resp.status == 200 and str(resp.url) == elsewhere + "/metrics"
            other.handler = lambda r: web.Response(status=302, headers={"Location": "/again"})
            with pytest.raises(aiohttp.TooManyRedirects):
                async with client.get(elsewhere + "/loop"):
                    pass
    finally:
        await other_server.close()
    assert p.seen[0].headers["Authorization"] == "Bearer tk"
    assert "Authorization" not in other.seen[0].headers
    assert len(other.seen) == 1 + 10


async def test_the_client_ignores_proxies_from_the_environment_and_keeps_no_cookies(
    peer: tuple[Peer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    p, url = peer
    with socket.create_server(("127.0.0.1", 0)) as trap:
        trap.setblocking(False)
        proxy = f"http://127.0.0.1:{trap.getsockname()[1]}"
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        p.handler = lambda r: web.Response(text="ok", headers={"Set-Cookie": "session=abc; Path=/"})
        async with client_session() as client:
            for _ in range(2):
                async with client.get(url + "/metrics") as resp:
                    assert resp.status == 200
        with pytest.raises(BlockingIOError):
            trap.accept()  # nothing went to the proxy
    assert len(p.seen) == 2 and "Cookie" not in p.seen[1].headers


async def test_answers_are_not_inflated_by_the_session_and_read_answer_is_bounded(peer: tuple[Peer, str]) -> None:
    p, url = peer
    bomb = gzip.compress(b"\0" * 50_000_000)

    def gzipped(r: web.Request) -> web.Response:
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip"})

    p.handler = gzipped
    async with client_session() as client:
        async with client.get(url) as resp:
            assert await resp.read() == bomb  # raw: the session inflates nothing by itself
        async with client.get(url) as resp:
            body, complete = await read_answer(resp, 4096)
    assert body == b"\0" * 4096 and not complete


async def test_health_responses_negotiate_text_or_health_json(peer: tuple[Peer, str]) -> None:
    p, url = peer
    results = [Result("a", None), Result("b", "down")]
    p.handler = lambda r: respond(r, "readyz", results, excluded=["c"], failure_status=500)
    async with client_session() as client:
        async with client.get(url + "/readyz") as resp:
            text = await resp.text()
            assert resp.status == 500 and resp.headers["Cache-Control"] == "no-store"
            assert text == "[+]a ok\n[-]b failed: down\n[+]c excluded: ok\nreadyz check failed\n"
        async with client.get(url + "/readyz", headers={"Accept": "application/health+json"}) as resp:
            assert resp.status == 500 and resp.content_type == "application/health+json"
            assert (await resp.json(content_type=None))["status"] == "fail"


def test_credentials_in_a_url_are_refused_without_quoting_them() -> None:
    with pytest.raises(ValueError) as err:
        refuse_url_credentials("https://ingest:pa55word@logs.example/x", "url", "use basic_auth_password")
    assert str(err.value) == "url must not hold credentials (user:password@); use basic_auth_password"
    with pytest.raises(ValueError, match="must not hold credentials"):
        refuse_url_credentials("http://token-only@h/", "target_url", "use a token option")
    refuse_url_credentials("http://h/?q=1", "url", "")
    refuse_url_credentials("http://[::1", "url", "")  # not a URL: its own validation says so


# ------------------------------------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def tls_peer(
    ca: trustme.CA, tmp: Path, *, client_ca: trustme.CA | None = None, max_version: ssl.TLSVersion | None = None
) -> tuple[asyncio.Server, int, list[str]]:
    """A TLS server for `localhost` on 127.0.0.1; the list collects the peers' certificate subjects."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(ctx)
    if max_version is not None:
        ctx.maximum_version = max_version
    if client_ca is not None:
        client_ca.configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED
    subjects: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cert = writer.get_extra_info("peercert")
        subjects.append(str(cert.get("subjectAltName")) if cert else "")
        writer.write(b"hello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    return server, server.sockets[0].getsockname()[1], subjects


async def hello(settings: TlsClientSettings, port: int, host: str = "localhost") -> bytes:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=settings.context(), server_hostname=settings.server_hostname(host)
    )
    try:
        return await reader.read()
    finally:
        writer.close()


async def test_tls_verifies_by_default_and_only_with_the_right_ca_and_name(ca: trustme.CA, tmp_path: Path) -> None:
    server, port, _ = await tls_peer(ca, tmp_path)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with server:
        assert await hello(TlsClientSettings(ca_file=ca_file), port) == b"hello"
        # The system store does not know the test's CA; a wrong name fails even with the right CA.
        with pytest.raises(ssl.SSLCertVerificationError):
            await hello(TlsClientSettings(), port)
        with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
            await hello(TlsClientSettings(ca_file=ca_file), port, host="other.example")
        # An IP endpoint: the name to verify is given explicitly.
        named = TlsClientSettings(ca_file=ca_file, server_name="localhost")
        assert await hello(named, port, host="127.0.0.1") == b"hello"
        assert await hello(TlsClientSettings(insecure_skip_verify=True), port, host="other.example") == b"hello"


async def test_tls_client_certificate_from_files_with_an_encrypted_key(ca: trustme.CA, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    client_ca = trustme.CA()
    server, port, subjects = await tls_peer(ca, tmp_path, client_ca=client_ca)
    leaf = client_ca.issue_cert("app.example")
    ca_file, cert_file, key_file, password_file = (tmp_path / n for n in ("ca.pem", "c.pem", "k.pem", "pw"))
    ca.cert_pem.write_to_path(str(ca_file))
    leaf.cert_chain_pems[0].write_to_path(str(cert_file))
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret-passphrase"),
        )
    )
    password_file.write_text("s3cret-passphrase\n")
    settings = TlsClientSettings(
        ca_file=ca_file, cert_file=cert_file, key_file=key_file, key_password_file=password_file
    )
    async with server:
        assert await hello(settings, port) == b"hello"
        try:  # without a client certificate: refused (in TLS 1.3, after the client's side of the handshake)
            got = await asyncio.wait_for(hello(TlsClientSettings(ca_file=ca_file), port), 10)
        except (ssl.SSLError, ConnectionResetError):
            got = b""
        assert got == b""
    assert len(subjects) == 1 and "app.example" in subjects[0]


async def test_tls_minimum_version_refuses_an_older_server(ca: trustme.CA, tmp_path: Path) -> None:
    server, port, _ = await tls_peer(ca, tmp_path, max_version=ssl.TLSVersion.TLSv1_2)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with server:
        assert await hello(TlsClientSettings(ca_file=ca_file), port) == b"hello"
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await hello(TlsClientSettings(ca_file=ca_file, min_version="1.3"), port)


def test_tls_material_problems_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(TlsError, match=rf"ca_file {missing}: cannot be loaded: FileNotFoundError"):
        TlsClientSettings(ca_file=missing).context()
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    with pytest.raises(TlsError, match=r"cert_file .* with key_file .*: cannot be loaded: SSLError"):
        TlsClientSettings(cert_file=bad, key_file=bad).context()
    with pytest.raises(ValueError, match="cert_file and key_file go together"):
        TlsClientSettings(cert_file=bad)
    with pytest.raises(ValueError, match=r"^tls_cert_file and tls_key_file go together$"):
        tls_client(SimpleNamespace(tls_cert_file=bad, tls_verify=True))
    flat = tls_client(SimpleNamespace(tls_ca_file=bad, tls_verify=False))
    assert flat.ca_file == bad and flat.insecure_skip_verify


async def test_https_through_the_session_with_the_tls_settings_context(ca: trustme.CA, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    app = web.Application()

    async def secure(_: web.Request) -> web.Response:
        return web.Response(text="secure")

    app.router.add_get("/", secure)
    server = await start_server(app, "127.0.0.1", 0, ssl_context=server_ctx)
    url = f"https://localhost:{server.port}/"
    try:
        tls = TlsClientSettings(ca_file=ca_file).context()
        async with client_session(tls=tls) as client, client.get(url) as resp:
            assert (resp.status, await resp.text()) == (200, "secure")
        async with client_session() as client:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with client.get(url):
                    pass
    finally:
        await server.close()
