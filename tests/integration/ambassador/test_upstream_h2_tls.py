"""HTTP/2 to TLS clusters (ALPN h2): a real nginx (`listen ... ssl http2`) and real grpcio servers with
TLS credentials, certificates made here; the app speaks h2c or HTTP/1.1 to the ambassador.

A server that does not select h2 is refused (`tls_alpn`) with nothing sent, never spoken to in
HTTP/1.1 or plaintext; gRPC calls see the TLS reason in an UNAVAILABLE answer; gRPC health checks run
over the cluster's TLS; rotation retires the HTTP/2 connections; sessions resume across them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import h2.events
import pytest
import structlog
import trustme

from sidecars.ambassador.cluster import grpc_health
from sidecars.ambassador.cluster.config import HealthCheckConfig
from sidecars.ambassador.cluster.endpoint import Endpoint
from sidecars.ambassador.cluster.upstream_tls import H2, UpstreamTls
from sidecars.ambassador.plugin import Ambassador
from sidecars.core.tls import TlsClientSettings
from sidecars.testing import RunningSidecar, run_sidecar
from tests.integration.ambassador.conftest import listener, raw_request
from tests.integration.ambassador.grpc_service import EchoClient, GrpcServer, grpc_server
from tests.integration.ambassador.h2_client import RawH2
from tests.support.tls_peers import any_server_context, secret_volume, tls_nginx, wait_until

pytestmark = pytest.mark.timeout(120)

GET = b"GET /x HTTP/1.1\r\nHost: app\r\n\r\n"


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pki(tmp_path: Path, ca: trustme.CA) -> dict[str, Path]:
    """CA bundles (ours and another), a server certificate for grpc.internal, a client certificate."""
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    for name, cert in (("server", ca.issue_cert("grpc.internal")), ("client", ca.issue_cert("ambassador@cluster"))):
        cert.cert_chain_pems[0].write_to_path(str(tmp_path / f"{name}.pem"))
        cert.private_key_pem.write_to_path(str(tmp_path / f"{name}.key"))
    return {p.stem if p.suffix == ".pem" else f"{p.stem}-key": p for p in tmp_path.iterdir()}


@contextlib.asynccontextmanager
async def ambassador(
    endpoints: list[str], protocol: str = "http2", tls: dict[str, Any] | None = None, **options: Any
) -> AsyncIterator[tuple[RunningSidecar, int]]:
    cluster = {"protocol": protocol, "tls": tls or {}, **options.pop("cluster", {})}
    config = listener(endpoints, cluster=cluster, **options)
    async with run_sidecar(Ambassador, listeners=[config]) as sc:
        yield sc, sc.plugin.listeners[0].port


def h2_get(port: int, path: bytes = b"/x", extra: list[tuple[bytes, bytes]] = ()) -> tuple[dict[bytes, bytes], bytes]:  # type: ignore[assignment]
    """One request from an h2c client (prior knowledge): the response head and body."""
    raw = RawH2(port)
    try:
        stream_id = raw.request(path, list(extra))
        events = raw.read_until(lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == stream_id)
    finally:
        raw.close()
    head = next(dict(e.headers) for e in events if isinstance(e, h2.events.ResponseReceived))
    body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    return head, body


def failures(sc: RunningSidecar, endpoint: str, reason: str) -> float:
    sample = sc.sample(
        "ambassador_upstream_tls_failures_total", {"cluster": "web", "endpoint": endpoint, "reason": reason}
    )
    return sample or 0.0


# -- nginx: h2 over TLS, from an h2c client and from an HTTP/1.1 client --------------------------------------


async def test_h2c_and_http1_clients_reach_an_h2_tls_nginx(ca: trustme.CA, pki: dict[str, Path]) -> None:
    async with (
        tls_nginx(ca.issue_cert("localhost"), http2=True) as server,
        ambassador([f"localhost:{server.port}"], tls={"ca_file": str(pki["ca"])}) as (sc, port),
    ):
        head, body = await asyncio.to_thread(h2_get, port)
        assert head[b":status"] == b"200" and body.startswith(b"tls TLSv1.3 ")
        [(status, _, body1)] = await raw_request(port, GET)  # HTTP/1.1 from the app, one stream upstream
        assert status == 200 and body1.startswith(b"tls TLSv1.3 ")
        proc = await asyncio.create_subprocess_exec(
            "h2load", "-n", "200", "-c", "2", "-m", "10", f"http://127.0.0.1:{port}/load",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert "200 succeeded, 0 failed" in out.decode() and "200 2xx" in out.decode(), out.decode()
        served = await server.served()
        # Every request reached nginx as HTTP/2 over TLS: none as HTTP/1.1, none in plaintext.
        assert served[:2] == ["POST /x HTTP/2.0", "GET /x HTTP/2.0"]
        assert served[2:] == ["GET /load HTTP/2.0"] * 200
        tls = sc.plugin.listeners[0].tls
        conn = next(up for ups in sc.plugin.listeners[0].http2.pool.by_endpoint.values() for up in ups)
        assert conn.transport.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        assert conn.transport.get_extra_info("ssl_object").context is tls.context(H2)


async def test_auto_sends_h2_streams_as_h2_and_http1_requests_as_http1(ca: trustme.CA, pki: dict[str, Path]) -> None:
    async with (
        tls_nginx(ca.issue_cert("localhost"), http2=True) as server,
        ambassador([f"localhost:{server.port}"], protocol="auto", tls={"ca_file": str(pki["ca"])}) as (_, port),
    ):
        head, _ = await asyncio.to_thread(h2_get, port, b"/from-h2")
        [(status, _, _)] = await raw_request(port, b"GET /from-http1 HTTP/1.1\r\nHost: app\r\n\r\n")
        assert (head[b":status"], status) == (b"200", 200)
        assert await server.served() == ["POST /from-h2 HTTP/2.0", "GET /from-http1 HTTP/1.1"]


# -- a server that does not speak h2: refused, nothing sent -------------------------------------------------


class AlpnIgnoringServer:
    """A TLS server that selects no ALPN protocol (an HTTP/1.1 server that never heard of ALPN) and
    keeps what each connection sent after its handshake."""

    MARKER = b"served-marker"

    def __init__(self) -> None:
        self.received: list[bytearray] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = bytearray()
        self.received.append(got)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while (data := await reader.read(65536)) and len(got) < 65536:
                got += data
        writer.close()

    async def served(self, port: int) -> list[bytes]:
        """What the connections before now sent: a marker connection is made and waited for, as
        TlsNginx.served does, so every earlier connection has been taken in by then."""
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=any_server_context(), server_hostname="x")
        writer.write(self.MARKER)
        writer.close()
        await wait_until(lambda: any(bytes(r) == self.MARKER for r in self.received))
        return [bytes(r) for r in self.received if bytes(r) != self.MARKER]


@contextlib.asynccontextmanager
async def alpn_ignoring_server(cert: trustme.LeafCert) -> AsyncIterator[tuple[int, AlpnIgnoringServer]]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    peer = AlpnIgnoringServer()
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0, ssl=ctx)
    try:
        yield server.sockets[0].getsockname()[1], peer
    finally:
        server.close()


@pytest.mark.parametrize("peer", ["nginx_http1_only", "no_alpn_at_all"])
async def test_a_server_not_selecting_h2_is_refused_with_tls_alpn(
    ca: trustme.CA, pki: dict[str, Path], peer: str
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        if peer == "nginx_http1_only":
            server = await stack.enter_async_context(tls_nginx(ca.issue_cert("localhost")))
            port_up, received = server.port, None
        else:
            port_up, received = await stack.enter_async_context(alpn_ignoring_server(ca.issue_cert("localhost")))
        sc, port = await stack.enter_async_context(
            ambassador([f"localhost:{port_up}"], tls={"ca_file": str(pki["ca"])}, retries=1)
        )
        head, body = await asyncio.to_thread(h2_get, port)
        assert (head[b":status"], head[b"x-ambassador-reason"], body) == (b"502", b"tls_alpn", b"tls_alpn\n")
        [(status, headers, _)] = await raw_request(port, GET)
        assert (status, headers["x-ambassador-reason"]) == (502, "tls_alpn")
        key = f"localhost:{port_up}"
        assert failures(sc, key, "tls_alpn") >= 4  # two requests, each retried once: counted per endpoint
        assert sc.plugin.listeners[0].stats.retries.get("tls_alpn", 0) >= 2  # retried as a connect failure
        [logged] = sc.events("upstream tls handshake failed")  # once per endpoint and reason
        assert logged["reason"] == "tls_alpn" and logged["endpoint"] == key
        expected = "speaks none of the protocols offered" if peer == "nginx_http1_only" else "selected no protocol"
        assert expected in logged["error"], logged
        # Nothing was sent: no request in HTTP/1.1, none in plaintext, no HTTP/2 preface.
        if received is None:
            assert await server.served() == []
        else:
            assert await received.served(port_up) == []


async def test_a_tls_alpn_endpoint_is_skipped_and_ejected(ca: trustme.CA, pki: dict[str, Path]) -> None:
    async with (
        tls_nginx(ca.issue_cert("localhost")) as http1_only,
        tls_nginx(ca.issue_cert("localhost"), http2=True) as good,
    ):
        endpoints = [f"localhost:{http1_only.port}", f"localhost:{good.port}"]
        async with ambassador(endpoints, tls={"ca_file": str(pki["ca"])}, cluster={"balancer": "round_robin"}) as (
            sc,
            port,
        ):
            for _ in range(4):
                head, _ = await asyncio.to_thread(h2_get, port)
                assert head[b":status"] == b"200"  # retried elsewhere: nothing was sent to the first
            assert await http1_only.served() == []
            bad = next(ep for ep in sc.plugin.listeners[0].cluster.endpoints if ep.port == http1_only.port)
            assert bad.ejections_total >= 1  # outlier ejection saw the ALPN failures


@pytest.mark.parametrize("case", ["wrong_ca", "wrong_pin"])
async def test_an_unverified_h2_server_gets_nothing(ca: trustme.CA, pki: dict[str, Path], case: str) -> None:
    tls: dict[str, Any] = {"ca_file": str(pki["other-ca" if case == "wrong_ca" else "ca"])}
    if case == "wrong_pin":
        tls["pinned_sha256"] = ["ab" * 32]  # with ALPN required too: both checks on one handshake
    async with (
        tls_nginx(ca.issue_cert("localhost"), http2=True) as server,
        ambassador([f"localhost:{server.port}"], tls=tls) as (sc, port),
    ):
        head, _ = await asyncio.to_thread(h2_get, port)
        assert (head[b":status"], head[b"x-ambassador-reason"]) == (b"502", b"tls_verify")
        assert await server.served() == []
        assert failures(sc, f"localhost:{server.port}", "tls_verify") >= 1


# -- gRPC over TLS -----------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def tls_grpc(pki: dict[str, Path], *names: str, mtls: bool = False) -> AsyncIterator[list[GrpcServer]]:
    async with contextlib.AsyncExitStack() as stack:
        tls = (pki["server"], pki["server-key"])
        client_ca = pki["ca"] if mtls else None
        yield [await stack.enter_async_context(grpc_server(n, tls=tls, client_ca=client_ca)) for n in names]


def grpc_tls(pki: dict[str, Path], **more: Any) -> dict[str, Any]:
    return {"ca_file": str(pki["ca"]), "server_name": "grpc.internal", **more}


async def test_every_grpc_method_through_tls_h2_with_mutual_tls(pki: dict[str, Path]) -> None:
    mtls = grpc_tls(pki, cert_file=str(pki["client"]), key_file=str(pki["client-key"]))
    async with tls_grpc(pki, "s1", mtls=True) as ups, ambassador([ups[0].address], tls=mtls) as (sc, port):
        client = EchoClient(f"127.0.0.1:{port}")  # h2c to the ambassador, TLS h2 with a client cert beyond
        try:
            assert await asyncio.to_thread(client.unary, b"hello", timeout=10) == b"s1:hello"
            got = await asyncio.to_thread(lambda: list(client.server_stream(b"5", timeout=10)))
            assert got == [b"s1:%d" % i for i in range(5)]
            assert await asyncio.to_thread(client.client_stream, iter([b"a", b"b", b"c"]), timeout=10) == b"s1:abc"
            echoed = await asyncio.to_thread(lambda: list(client.bidi(iter([b"x", b"y"]), timeout=10)))
            assert echoed == [b"s1:x", b"s1:y"]
        finally:
            client.close()
        conn = next(up for ups_ in sc.plugin.listeners[0].http2.pool.by_endpoint.values() for up in ups_)
        obj = conn.transport.get_extra_info("ssl_object")
        assert obj.selected_alpn_protocol() == "h2" and obj.server_hostname == "grpc.internal"


async def test_a_wrong_ca_is_answered_unavailable_with_the_tls_reason(pki: dict[str, Path]) -> None:
    async with (
        tls_grpc(pki, "s1") as ups,
        ambassador([ups[0].address], tls=grpc_tls(pki, ca_file=str(pki["other-ca"]))) as (sc, port),
    ):
        client = EchoClient(f"127.0.0.1:{port}")
        try:
            with pytest.raises(grpc.RpcError) as caught:
                await asyncio.to_thread(client.unary, b"x", timeout=10)
        finally:
            client.close()
        assert failures(sc, ups[0].address, "tls_verify") >= 1
    err = caught.value
    assert err.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert "TLS verification failed" in err.details()  # type: ignore[attr-defined]
    assert dict(err.trailing_metadata())["x-ambassador-reason"] == "tls_verify"  # type: ignore[attr-defined]


async def until(predicate: Any, within_secs: float = 15.0) -> None:
    await wait_until(predicate, within_secs)


async def test_grpc_health_over_tls_takes_a_not_serving_server_out(pki: dict[str, Path]) -> None:
    checks = {"kind": "grpc", "interval_secs": 0.5, "timeout_secs": 0.5, "unhealthy_threshold": 1}
    cluster = {"health_check": checks, "balancer": "round_robin", "panic_threshold_percent": 0}
    async with (
        tls_grpc(pki, "s1", "s2") as ups,
        ambassador([u.address for u in ups], tls=grpc_tls(pki), cluster=cluster) as (sc, port),
    ):
        lst = sc.plugin.listeners[0]
        assert len(lst.cluster.candidates) == 2  # both answered SERVING over TLS to the first checks
        direct = EchoClient(ups[1].address, ca=pki["ca"].read_bytes(), server_name="grpc.internal")
        try:
            await asyncio.to_thread(direct.set_serving, b"0", timeout=5)
        finally:
            direct.close()
        await until(lambda: [ep.key for ep in lst.cluster.candidates] == [ups[0].address])
        client = EchoClient(f"127.0.0.1:{port}")
        try:
            got = await asyncio.to_thread(lambda: {client.unary(b"x", timeout=10) for _ in range(20)})
        finally:
            client.close()
        assert got == {b"s1:x"}
        assert lst.tls.handshakes["full"] + lst.tls.handshakes["resumed"] >= 3  # the checks were TLS too


async def test_the_grpc_probe_names_tls_failures(ca: trustme.CA, pki: dict[str, Path]) -> None:
    log = structlog.get_logger("test")
    config = HealthCheckConfig(kind="grpc", timeout_secs=5.0)

    def h2_tls(**settings: Any) -> UpstreamTls:
        tls = UpstreamTls("web", TlsClientSettings(**settings), log, profiles=[H2])
        tls.load()
        return tls

    async with tls_grpc(pki, "s1") as ups, tls_nginx(ca.issue_cert("localhost")) as http1_only:
        endpoint = Endpoint("127.0.0.1", ups[0].port, SimpleNamespace())
        assert await grpc_health.probe(config, endpoint, h2_tls(ca_file=pki["ca"], server_name="grpc.internal")) is None
        wrong = await grpc_health.probe(config, endpoint, h2_tls(ca_file=pki["other-ca"], server_name="grpc.internal"))
        assert wrong is not None and wrong.startswith("tls_verify: ")
        plain = await grpc_health.probe(config, endpoint)  # h2c to a TLS port is no pass
        assert plain is not None
        nginx = Endpoint("localhost", http1_only.port, SimpleNamespace())
        refused = await grpc_health.probe(config, nginx, h2_tls(ca_file=pki["ca"]))
        assert refused is not None and refused.startswith("tls_alpn: ")
        assert await http1_only.served() == []


# -- rotation and sessions on the HTTP/2 connections --------------------------------------------------------


async def test_rotation_retires_the_http2_connections(ca: trustme.CA) -> None:
    new_ca = trustme.CA()
    with secret_volume() as volume:
        volume.update({"ca.crt": ca.cert_pem.bytes()})
        async with tls_nginx(ca.issue_cert("localhost"), http2=True) as server:
            tls = {"ca_file": str(volume.path("ca.crt"))}
            async with ambassador([f"localhost:{server.port}"], tls=tls, cluster={"tls_poll_secs": 0.2}) as (sc, port):
                lst = sc.plugin.listeners[0]
                assert (await asyncio.to_thread(h2_get, port))[0][b":status"] == b"200"
                [old] = [up for ups in lst.http2.pool.by_endpoint.values() for up in ups]
                volume.update({"ca.crt": ca.cert_pem.bytes() + new_ca.cert_pem.bytes()})
                await wait_until(lambda: lst.tls.rotations == 1)
                await wait_until(lambda: old.closed)  # idle: closed at once (a busy one after its streams)
                assert (await asyncio.to_thread(h2_get, port))[0][b":status"] == b"200"
                [new] = [up for ups in lst.http2.pool.by_endpoint.values() for up in ups]
                assert new is not old
                assert new.transport.get_extra_info("ssl_object").context is lst.tls.context(H2)


async def test_http2_connections_resume_sessions(ca: trustme.CA, pki: dict[str, Path]) -> None:
    async with (
        tls_nginx(ca.issue_cert("localhost"), http2=True) as server,
        ambassador([f"localhost:{server.port}"], tls={"ca_file": str(pki["ca"])}) as (sc, port),
    ):
        lst = sc.plugin.listeners[0]
        reused = []
        for _ in range(2):
            _, body = await asyncio.to_thread(h2_get, port)
            reused.append(body.split()[2])  # nginx's $ssl_session_reused
            for ups in list(lst.http2.pool.by_endpoint.values()):
                for up in list(ups):
                    up.abort()
            await wait_until(lambda: not lst.http2.pool.by_endpoint)
        assert reused == [b".", b"r"]
        assert lst.tls.handshakes == {"full": 1, "resumed": 1}


async def test_http_checks_of_an_http2_cluster_offer_http1(ca: trustme.CA, pki: dict[str, Path]) -> None:
    """An HTTP check is an HTTP/1.1 GET: its handshake offers http/1.1, though the data plane's offer h2."""
    checks = {"kind": "http", "path": "/healthz", "interval_secs": 0.5, "timeout_secs": 0.5}
    async with (
        tls_nginx(ca.issue_cert("localhost"), http2=True) as server,
        ambassador([f"localhost:{server.port}"], tls={"ca_file": str(pki["ca"])}, cluster={"health_check": checks}) as (
            sc,
            port,
        ),
    ):
        assert [ep.port for ep in sc.plugin.listeners[0].cluster.candidates] == [server.port]
        head, _ = await asyncio.to_thread(h2_get, port)
        assert head[b":status"] == b"200"
        served = await server.served()
        assert served[0] == "GET /healthz HTTP/1.1" and "POST /x HTTP/2.0" in served
