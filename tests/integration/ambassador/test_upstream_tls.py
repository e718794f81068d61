"""TLS to the upstream cluster, against a real nginx (and a real Redis) with certificates made here.

Verification, SNI and the name checked default to the endpoint's host; mutual TLS; the minimum
version; pinning; failures named `tls_verify` / `tls_handshake` with nothing sent; session
resumption; health checks over TLS; rotation of the mounted files, a corrupt update refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import h2.events
import pytest
import structlog
import trustme

from sidecars.ambassador.cluster.config import HealthCheckConfig
from sidecars.ambassador.cluster.endpoint import Endpoint
from sidecars.ambassador.cluster.health import probe
from sidecars.ambassador.cluster.upstream_tls import UpstreamTls
from sidecars.core.tls import TlsClientSettings
from sidecars.testing import free_port, http_get
from tests.integration.ambassador.conftest import Proxy, _proxy, raw_request
from tests.integration.ambassador.h2_client import RawH2
from tests.support.tls_peers import any_server_context, expired, expiring, secret_volume, tls_nginx, wait_until

GET = b"GET /x HTTP/1.1\r\nHost: app\r\n\r\n"


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pki(tmp_path: Path, ca: trustme.CA) -> dict[str, Path]:
    """The CA bundle, another CA's bundle, and a client certificate of `ca` for mutual TLS."""
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    client = ca.issue_cert("ambassador@cluster.local")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    return {name: tmp_path / f"{name}.pem" for name in ("ca", "other-ca", "client")} | {
        "client-key": tmp_path / "client.key"
    }


def tls_cluster(port: int, host: str = "localhost", **tls: Any) -> dict[str, Any]:
    return {"endpoints": [f"{host}:{port}"], "tls": tls, "health_check": {"kind": "none"}}


async def test_plain_app_reaches_a_tls_server(proxy: Proxy, ca: trustme.CA, pki: dict[str, Path]) -> None:
    async with (
        tls_nginx(ca.issue_cert("localhost")) as server,
        proxy([], cluster=tls_cluster(server.port, ca_file=str(pki["ca"]))) as (_, port),
    ):
        [(status, _, body)] = await raw_request(port, GET)
        assert status == 200
        assert body.startswith(b"tls TLSv1.3 ")  # the name checked and sent as SNI: the endpoint's host
        assert await server.served() == ["GET /x HTTP/1.1"]


async def test_h2c_client_reaches_a_tls_http1_server_over_tls(ca: trustme.CA, pki: dict[str, Path]) -> None:
    """protocol http1, an HTTP/2 client: its stream goes out as an HTTP/1.1 request over the cluster's
    TLS, never in plaintext to the TLS port."""

    def h2c_get(port: int) -> tuple[dict[bytes, bytes], bytes]:
        raw = RawH2(port)
        try:
            raw.request(b"/from-h2")
            events = raw.read_until(lambda e: isinstance(e, h2.events.StreamEnded))
        finally:
            raw.close()
        head = next(dict(e.headers) for e in events if isinstance(e, h2.events.ResponseReceived))
        return head, b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))

    async with (
        tls_nginx(ca.issue_cert("localhost")) as server,
        _proxy("python", [], cluster=tls_cluster(server.port, ca_file=str(pki["ca"]))) as (_, port),
    ):
        head, body = await asyncio.to_thread(h2c_get, port)
        assert head[b":status"] == b"200" and body.startswith(b"tls TLSv1.3 "), (head, body)
        assert await server.served() == ["POST /from-h2 HTTP/1.1"]


async def test_ip_endpoint_needs_server_name(proxy: Proxy, ca: trustme.CA, pki: dict[str, Path]) -> None:
    async with tls_nginx(ca.issue_cert("api.internal")) as server:
        cluster = tls_cluster(server.port, "127.0.0.1", ca_file=str(pki["ca"]), server_name="api.internal")
        async with proxy([], cluster=cluster) as (_, port):
            [(status, _, _)] = await raw_request(port, GET)
            assert status == 200


async def test_sessions_resume_across_the_pools_connections(ca: trustme.CA, pki: dict[str, Path]) -> None:
    async with tls_nginx(ca.issue_cert("localhost")) as server:
        cluster = tls_cluster(server.port, ca_file=str(pki["ca"]))
        # No idle connection kept: every request opens a new connection to the same endpoint.
        from tests.integration.ambassador.conftest import _proxy

        async with _proxy("compiled", [], cluster=cluster, max_idle_per_endpoint=0) as (sc, port):
            bodies = [(await raw_request(port, GET))[0][2] for _ in range(3)]
            tls = sc.plugin.listeners[0].tls
            assert [b.split()[2] for b in bodies] == [b".", b"r", b"r"]  # nginx's $ssl_session_reused
            assert tls.handshakes == {"full": 1, "resumed": 2}
            assert sc.sample("ambassador_upstream_tls_handshakes_total", {"cluster": "web", "kind": "resumed"}) == 2


async def test_mutual_tls_accepted_and_refused_without_a_certificate(
    proxy: Proxy, ca: trustme.CA, pki: dict[str, Path]
) -> None:
    async with tls_nginx(ca.issue_cert("localhost"), client_ca=ca) as server:
        mtls = tls_cluster(
            server.port, ca_file=str(pki["ca"]), cert_file=str(pki["client"]), key_file=str(pki["client-key"])
        )
        async with proxy([], cluster=mtls) as (_, port):
            [(status, _, body)] = await raw_request(port, GET)
            assert (status, body.split()[-1]) == (200, b"SUCCESS")
        async with proxy([], cluster=tls_cluster(server.port, ca_file=str(pki["ca"]))) as (_, port):
            [(status, _, body)] = await raw_request(port, GET)
            assert status == 400 and b"No required SSL certificate was sent" in body  # nginx's refusal


@pytest.mark.parametrize("case", ["wrong_ca", "wrong_name", "expired", "wrong_pin"])
async def test_unverified_server_gets_nothing(proxy: Proxy, ca: trustme.CA, pki: dict[str, Path], case: str) -> None:
    cert = {"wrong_name": ca.issue_cert("other.example"), "expired": expired(ca, "localhost")}.get(
        case, ca.issue_cert("localhost")
    )
    tls: dict[str, Any] = {"ca_file": str(pki["other-ca" if case == "wrong_ca" else "ca"])}
    if case == "wrong_pin":
        tls["pinned_sha256"] = ["ab" * 32]
    async with tls_nginx(cert) as server, proxy([], cluster=tls_cluster(server.port, **tls)) as (sc, port):
        results = await raw_request(port, GET + GET, count=2)
        assert [(s, h["x-ambassador-reason"]) for s, h, _ in results] == [(502, "tls_verify")] * 2
        assert await server.served() == []
        key = f"localhost:{server.port}"
        failures = sc.sample(
            "ambassador_upstream_tls_failures_total", {"cluster": "web", "endpoint": key, "reason": "tls_verify"}
        )
        assert failures is not None and failures >= 2
        logged = sc.events("upstream tls handshake failed")
        assert len(logged) == 1  # once per endpoint and reason
        expected = {
            "wrong_ca": "unable to get local issuer certificate",
            "wrong_name": "Hostname mismatch",
            "expired": "certificate has expired",
            "wrong_pin": "not among pinned_sha256",
        }[case]
        assert expected in logged[0]["error"] and logged[0]["endpoint"] == key


async def test_right_pin_passes(proxy: Proxy, ca: trustme.CA, pki: dict[str, Path]) -> None:
    cert = ca.issue_cert("localhost")
    der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
    pin = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())  # as openssl x509 -fingerprint prints it
    async with (
        tls_nginx(cert) as server,
        proxy([], cluster=tls_cluster(server.port, ca_file=str(pki["ca"]), pinned_sha256=[pin])) as (_, port),
    ):
        [(status, _, _)] = await raw_request(port, GET)
        assert status == 200


async def test_tls10_only_server_refused(proxy: Proxy, ca: trustme.CA, pki: dict[str, Path]) -> None:
    async with tls_nginx(ca.issue_cert("localhost"), protocols="TLSv1", ciphers="DEFAULT@SECLEVEL=0") as server:
        # The server does speak TLS 1.0 to a client that allows it ...
        old = any_server_context(pki["ca"])
        _, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=old, server_hostname="localhost")
        assert writer.get_extra_info("ssl_object").version() == "TLSv1"
        writer.close()
        # ... and the ambassador (TLS 1.2 at least) refuses it.
        async with proxy([], cluster=tls_cluster(server.port, ca_file=str(pki["ca"]))) as (_, port):
            [(status, headers, _)] = await raw_request(port, GET)
            assert (status, headers["x-ambassador-reason"]) == (502, "tls_handshake")
            assert await server.served() == []


async def test_tls_failure_moves_to_another_endpoint(proxy: Proxy, ca: trustme.CA, pki: dict[str, Path]) -> None:
    async with tls_nginx(ca.issue_cert("other.example")) as bad, tls_nginx(ca.issue_cert("localhost")) as good:
        cluster = {
            "endpoints": [f"localhost:{bad.port}", f"localhost:{good.port}"],
            "balancer": "round_robin",
            "tls": {"ca_file": str(pki["ca"])},
            "health_check": {"kind": "none"},
        }
        async with proxy([], cluster=cluster) as (sc, port):
            for _ in range(4):
                [(status, _, _)] = await raw_request(port, GET)
                assert status == 200  # retried as a connect failure: nothing was sent to the bad one
            assert await bad.served() == []
            bad_ep = next(ep for ep in sc.plugin.listeners[0].cluster.endpoints if ep.port == bad.port)
            assert bad_ep.ejections_total >= 1  # outlier ejection saw it


async def test_health_checks_run_over_tls(ca: trustme.CA, pki: dict[str, Path]) -> None:
    log = structlog.get_logger("test")
    async with tls_nginx(ca.issue_cert("localhost")) as server:
        endpoint = Endpoint("localhost", server.port, SimpleNamespace())
        for kind in ("tcp", "http"):
            config = HealthCheckConfig(kind=kind, path="/healthz")
            good = UpstreamTls("web", TlsClientSettings(ca_file=pki["ca"]), log)
            good.load()
            assert await probe(config, endpoint, tls=good) is None
            wrong = UpstreamTls("web", TlsClientSettings(ca_file=pki["other-ca"]), log)
            wrong.load()
            reason = await probe(config, endpoint, tls=wrong)
            assert reason is not None and reason.startswith("tls_verify: ")
            if kind == "http":
                assert await probe(config, endpoint) is not None  # plain HTTP to a TLS port is no pass
        # The one good http check, and nginx's answer to plain HTTP on its TLS port.
        assert await server.served() == ["GET /healthz HTTP/1.1", "GET /healthz HTTP/1.1"]


async def test_insecure_skip_verify_warns(proxy: Proxy, ca: trustme.CA) -> None:
    async with (
        tls_nginx(trustme.CA().issue_cert("localhost")) as server,
        proxy([], cluster=tls_cluster(server.port, insecure_skip_verify=True)) as (sc, port),
    ):
        [(status, _, _)] = await raw_request(port, GET)
        assert status == 200
        assert sc.events("upstream tls verification off: insecure_skip_verify accepts any server certificate")
        status, text = await http_get(sc.admin_url + "/readyz?verbose")
        assert status == 200 and "[+]upstream_tls warn: web: insecure_skip_verify" in text


async def test_expiring_client_certificate_is_a_warn_check_and_a_metric(
    proxy: Proxy, ca: trustme.CA, pki: dict[str, Path], tmp_path: Path
) -> None:
    client = expiring(ca, 3, "ambassador@cluster.local")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "soon.pem"))
    async with tls_nginx(ca.issue_cert("localhost"), client_ca=ca) as server:
        cluster = tls_cluster(
            server.port, ca_file=str(pki["ca"]), cert_file=str(tmp_path / "soon.pem"), key_file=str(pki["client-key"])
        )
        client.private_key_pem.write_to_path(str(pki["client-key"]))
        async with proxy([], cluster=cluster) as (sc, port):
            [(status, _, _)] = await raw_request(port, GET)
            assert status == 200
            left = sc.sample("ambassador_tls_cert_expiry_seconds", {"cluster": "web"})
            assert left is not None and 2.9 * 86400 < left < 3.1 * 86400
            _, text = await http_get(sc.admin_url + "/readyz?verbose")
            assert "expires in 3.0 days" in text


async def test_corrupt_update_keeps_the_last_good_material(proxy: Proxy, ca: trustme.CA) -> None:
    with secret_volume() as volume:
        volume.update({"ca.crt": ca.cert_pem.bytes()})
        async with tls_nginx(ca.issue_cert("localhost")) as server:
            cluster = tls_cluster(server.port, ca_file=str(volume.path("ca.crt"))) | {"tls_poll_secs": 0.2}
            async with proxy([], cluster=cluster) as (sc, port):
                tls = sc.plugin.listeners[0].tls
                volume.update({"ca.crt": b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n"})
                await wait_until(lambda: tls.status() is not None)
                assert "last update refused" in tls.status()
                [(status, _, _)] = await raw_request(port, GET)
                assert status == 200  # the old CA still verifies
                assert sc.events("upstream tls update refused, the previous material stays in force")
                _, text = await http_get(sc.admin_url + "/readyz?verbose")
                assert "[+]upstream_tls warn: web: last update refused" in text


async def test_rotation_under_load_fails_no_request(ca: trustme.CA) -> None:
    """CA bundle (old + new), then the server's certificate, then the bundle (new only), all while wrk
    runs through the ambassador: not one request fails, and pooled connections move to new material."""
    new_ca = trustme.CA()
    from tests.integration.ambassador.conftest import _proxy

    with secret_volume() as volume:
        volume.update({"ca.crt": ca.cert_pem.bytes()})
        async with tls_nginx(ca.issue_cert("localhost")) as server:
            cluster = tls_cluster(server.port, ca_file=str(volume.path("ca.crt"))) | {"tls_poll_secs": 0.5}
            async with _proxy("compiled", [], cluster=cluster) as (sc, port):
                tls = sc.plugin.listeners[0].tls
                wrk = await asyncio.create_subprocess_exec(
                    "wrk", "-t1", "-c8", "-d6s", f"http://127.0.0.1:{port}/x", stdout=asyncio.subprocess.PIPE
                )
                await asyncio.sleep(1.0)
                volume.update({"ca.crt": ca.cert_pem.bytes() + new_ca.cert_pem.bytes()})
                await wait_until(lambda: tls.rotations == 1)
                await asyncio.sleep(0.5)
                server.rotate(new_ca.issue_cert("localhost"))
                await asyncio.sleep(1.0)
                volume.update({"ca.crt": new_ca.cert_pem.bytes()})
                await wait_until(lambda: tls.rotations == 2)
                out, _ = await wrk.communicate()
                text = out.decode()
                assert wrk.returncode == 0, text
                assert "requests in" in text and "Socket errors" not in text and "Non-2xx" not in text, text
                assert not tls.failures, tls.failures
                # The pooled connections left were all opened with the material in force: the older
                # ones drained out of the pool.
                pool = sc.plugin.listeners[0].proxy.pool
                idle = [c for stack in pool._idle.values() for c in stack]
                assert idle and all(c.transport.get_extra_info("ssl_object").context is tls.context() for c in idle)
                [(status, _, _)] = await raw_request(port, GET)
                assert status == 200


async def test_tcp_listener_to_a_tls_redis(proxy: Proxy, ca: trustme.CA, pki: dict[str, Path]) -> None:
    server_cert = ca.issue_cert("redis.internal")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        server_cert.cert_chain_pems[0].write_to_path(str(d / "redis.pem"))
        server_cert.private_key_pem.write_to_path(str(d / "redis.key"))
        redis_port = free_port()
        redis = subprocess.Popen(
            [
                "redis-server", "--port", "0", "--tls-port", str(redis_port), "--bind", "127.0.0.1",
                "--tls-cert-file", str(d / "redis.pem"), "--tls-key-file", str(d / "redis.key"),
                "--tls-ca-cert-file", str(pki["ca"]), "--tls-auth-clients", "yes",
                "--save", "", "--appendonly", "no", "--dir", tmp,
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            cluster = {
                "endpoints": [f"127.0.0.1:{redis_port}"],
                "health_check": {"kind": "tcp"},
                "tls": {
                    "ca_file": str(pki["ca"]),
                    "server_name": "redis.internal",
                    "cert_file": str(pki["client"]),
                    "key_file": str(pki["client-key"]),
                },
            }
            for _ in range(200):
                if subprocess.run(["redis-cli", "-p", str(redis_port), "--tls", "--cacert", str(pki["ca"]),
                                   "--cert", str(pki["client"]), "--key", str(pki["client-key"]), "--sni",
                                   "redis.internal", "ping"], capture_output=True).stdout == b"PONG\n":  # fmt: skip
                    break
                await asyncio.sleep(0.05)
            async with proxy([], mode="tcp", cluster=cluster) as (_, port):

                def cli(*args: str) -> str:
                    done = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, timeout=10)
                    return done.stdout.decode().strip()

                assert await asyncio.to_thread(cli, "set", "k", "through tls") == "OK"
                assert await asyncio.to_thread(cli, "get", "k") == "through tls"
                assert await asyncio.to_thread(cli, "info", "server") != ""
        finally:
            redis.terminate()
            redis.wait(10)
