"""The admission webhook over real HTTPS, answering AdmissionReview v1 as the API server sends it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from sidecars.injector.inject import Options, inject_template
from sidecars.injector.plugin import Injector
from sidecars.testing import ConformanceSuite, RunningSidecar, free_port, http_get, run_sidecar, start_process
from tests.integration.injector.conftest import Certificates, review, served_serial

VALIDATE = Path(sys.executable).with_name("kubernetes-validate")


@contextlib.asynccontextmanager
async def webhook(certificates: Certificates, **settings: Any) -> AsyncIterator[RunningSidecar]:
    values = {
        "listen_host": "127.0.0.1",
        "listen_port": 0,
        "tls_cert_file": str(certificates.volume.cert),
        "tls_key_file": str(certificates.volume.key),
        "tls_poll_secs": 0.05,
        **settings,
    }
    async with run_sidecar(Injector, **values) as sc:
        yield sc


def patched(request_body: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """The Pod as the API server stores it: the review's object with the answer's JSON Patch applied."""
    ops = json.loads(base64.b64decode(response["response"]["patch"]))
    return jsonpatch.apply_patch(request_body["request"]["object"], ops)  # type: ignore[no-any-return]


def refused(sc: RunningSidecar, reason: str) -> float:
    return sc.sample("injector_refused_reviews_total", {"reason": reason}) or 0.0


def reviews(sc: RunningSidecar, outcome: str, dry_run: str = "false") -> float:
    return sc.sample("injector_reviews_total", {"outcome": outcome, "dry_run": dry_run}) or 0.0


async def test_a_pod_is_injected_by_json_patch(certificates: Certificates, client_factory: Any, tmp_path: Path) -> None:
    async with webhook(certificates) as sc:
        client = client_factory(sc.plugin.listen_port)
        body = review()
        status, answer = await client.post(body)
    assert status == 200
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == body["request"]["uid"] and response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    pod = patched(body, answer)
    # The same injection as `sidecars inject`: the patch turns the object into exactly its output.
    expected = inject_template(body["request"]["object"], Options(), where="x").template
    assert pod == expected
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["tailer", "adapter"]
    assert "sidecars.io/injected" in pod["metadata"]["annotations"]
    # enableServiceLinks is true in this Pod: the user is told, the Pod is not refused.
    assert any("enableServiceLinks" in w for w in response["warnings"])
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump({**pod, "metadata": {**pod["metadata"], "name": "web-7d9f8c6b5d-x2x9q"}}))
    proc = subprocess.run([str(VALIDATE), "--strict", "-k", "1.29.0", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert reviews(sc, "injected") == 1
    assert [e["detail"] for e in sc.events("injected")] == ["tailer, adapter injected into Pod shop/web-7d9f8c6b5d-*"]


async def test_dry_run_gets_the_same_patch_and_is_counted_apart(
    certificates: Certificates, client_factory: Any
) -> None:
    async with webhook(certificates) as sc:
        client = client_factory(sc.plugin.listen_port)
        real, dry = review(), review(dryRun=True)
        _, real_answer = await client.post(real)
        status, dry_answer = await client.post(dry)
    assert status == 200
    assert dry_answer["response"]["uid"] == dry["request"]["uid"]
    assert dry_answer["response"]["patch"] == real_answer["response"]["patch"]
    assert reviews(sc, "injected", "true") == 1 and reviews(sc, "injected", "false") == 1
    assert [e["dry_run"] for e in sc.events("injected")] == [False, True]


async def test_an_already_injected_pod_is_never_mutated_again(certificates: Certificates, client_factory: Any) -> None:
    async with webhook(certificates) as sc:
        client = client_factory(sc.plugin.listen_port)
        first = review()
        _, answer = await client.post(first)
        again = review(object=patched(first, answer))
        status, second = await client.post(again)
    assert status == 200
    assert second["response"] == {"uid": again["request"]["uid"], "allowed": True}
    assert reviews(sc, "unchanged") == 1


async def test_pods_not_asking_and_other_operations_are_skipped(
    certificates: Certificates, client_factory: Any
) -> None:
    plain = review()
    del plain["request"]["object"]["metadata"]["annotations"]
    update = review(operation="UPDATE")
    service = review(kind={"group": "", "version": "v1", "kind": "Service"})
    async with webhook(certificates) as sc:
        client = client_factory(sc.plugin.listen_port)
        for body in (plain, update, service):
            status, answer = await client.post(body)
            assert status == 200
            assert answer["response"] == {"uid": body["request"]["uid"], "allowed": True}
    assert reviews(sc, "skipped") == 3


async def test_malformed_reviews_are_answered_counted_and_survived(
    certificates: Certificates, client_factory: Any
) -> None:
    async with webhook(certificates, max_review_bytes=64 * 1024) as sc:
        client = client_factory(sc.plugin.listen_port)
        # Not JSON, JSON nested past the parser's stack, no uid: no AdmissionReview to answer to.
        for body in (b"{not json", b"[" * 30_000 + b"]" * 30_000, b'{"request": {}}'):
            status, _ = await client.post(body)
            assert status == 400
        # A uid but no Pod, the wrong apiVersion: answered, the Pod admitted, the user warned.
        no_object = review(object="a Pod")
        v1beta1 = {**review(), "apiVersion": "admission.k8s.io/v1beta1"}
        for body in (no_object, v1beta1):
            status, answer = await client.post(body)
            assert status == 200 and answer["response"]["allowed"] is True
            assert "patch" not in answer["response"]
            assert answer["response"]["warnings"][0].startswith("sidecars: not injected:")
        # Annotations the injector cannot handle: admitted unchanged, the problem named.
        bad = review()
        bad["request"]["object"]["metadata"]["annotations"]["sidecars.io/inject"] = "tailer,logger"
        status, answer = await client.post(bad)
        assert status == 200 and answer["response"]["allowed"] is True and "patch" not in answer["response"]
        assert "unknown sidecar 'logger'" in answer["response"]["warnings"][0]
        # Past max_review_bytes: 413, never read whole.
        status, _ = await client.post(b'{"pad": "' + b"x" * (128 * 1024) + b'"}')
        assert status == 413
        # And it still injects.
        status, answer = await client.post(review())
        assert status == 200 and "patch" in answer["response"]
        assert refused(sc, "malformed") == 5
        assert refused(sc, "invalid") == 1
        assert refused(sc, "too_large") == 1
        assert reviews(sc, "refused") == 7
        status, body = await http_get(sc.admin_url + "/livez")
        assert status == 200
    # One log line per distinct problem, not per review.
    warnings = [e for e in sc.logs if e["event"] == "review refused: the Pod is admitted unchanged"]
    assert len(warnings) == len({(e["reason"], e["detail"]) for e in warnings})


async def test_certificate_rotated_while_reviews_arrive(certificates: Certificates, client_factory: Any) -> None:
    async with webhook(certificates) as sc:
        port = sc.plugin.listen_port
        ctx = certificates.client_context()
        first = await served_serial(port, ctx)
        client = client_factory(port, new_connection_each_time=True)  # a handshake per review
        statuses: list[int] = []
        stop = asyncio.Event()

        async def send() -> None:
            while not stop.is_set():
                status, answer = await client.post(review())
                statuses.append(status if "patch" in answer["response"] else -1)

        senders = [asyncio.create_task(send()) for _ in range(3)]
        while len(statuses) < 10:
            await asyncio.sleep(0.01)
        new = certificates.issue()
        certificates.volume.install(new)
        for _ in range(200):  # bounded: polled every 0.05 s
            if await served_serial(port, ctx) != first:
                break
            await asyncio.sleep(0.05)
        rotated_at = len(statuses)
        while len(statuses) < rotated_at + 10:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.gather(*senders)
        assert await served_serial(port, ctx) != first
        assert set(statuses) == {200}, statuses  # every review answered, across the rotation
        assert sc.sample("injector_certificate_reloads_total", {"result": "ok"}) == 1

        # A pair that does not match (the new certificate, an old key) is rejected; the last good one stays.
        serial = await served_serial(port, ctx)
        other = certificates.issue()
        certificates.volume.write(b"".join(b.bytes() for b in other.cert_chain_pems), new.private_key_pem.bytes())
        for _ in range(200):
            if sc.sample("injector_certificate_reloads_total", {"result": "rejected"}):
                break
            await asyncio.sleep(0.05)
        assert sc.sample("injector_certificate_reloads_total", {"result": "rejected"}) == 1
        assert await served_serial(port, ctx) == serial
        status, body = await http_get(sc.admin_url + "/readyz?verbose")
        assert status == 200 and "[+]certificate warn: the new certificate was rejected" in body
        status, answer = await client_factory(port).post(review())
        assert status == 200 and "patch" in answer["response"]


async def test_a_certificate_that_does_not_load_stops_start_up(certificates: Certificates, tmp_path: Path) -> None:
    (tmp_path / "bad.crt").write_text("not a certificate\n")
    with pytest.raises(RuntimeError, match="exited with 1 before it was ready"):
        async with webhook(certificates, tls_cert_file=str(tmp_path / "bad.crt")):
            pass


async def test_the_real_process_serves_https_and_stops_on_sigterm(
    certificates: Certificates, client_factory: Any
) -> None:
    port = free_port()
    settings = {
        "listen_host": "127.0.0.1",
        "listen_port": port,
        "tls_cert_file": str(certificates.volume.cert),
        "tls_key_file": str(certificates.volume.key),
        "tls_poll_secs": 0.1,
    }
    async with start_process("injector", settings) as proc:
        await proc.wait_http("/readyz", 200)
        first = await served_serial(port, certificates.client_context())
        status, answer = await client_factory(port).post(review())
        assert status == 200 and "patch" in answer["response"]
        certificates.volume.install(certificates.issue())  # rotation on uvloop, the process's loop
        for _ in range(100):
            if await served_serial(port, certificates.client_context()) != first:
                break
            await asyncio.sleep(0.1)
        assert await served_serial(port, certificates.client_context()) != first
        proc.proc.send_signal(signal.SIGTERM)
        assert await proc.wait_exit(30) == 0, proc.read_output()


class TestInjectorConformance(ConformanceSuite):
    plugin = Injector

    @pytest.fixture(autouse=True)
    def _certificates(self, certificates: Certificates) -> None:
        self.settings = {
            "listen_host": "127.0.0.1",
            "listen_port": 0,
            "tls_cert_file": str(certificates.volume.cert),
            "tls_key_file": str(certificates.volume.key),
        }
