"""The webhook's manifests build, validate and agree with the injector; the manual certificate path works."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecars.injector.plugin import PATH, Injector
from sidecars.injector.settings import InjectorSettings
from sidecars.testing import run_sidecar
from tests.integration.injector.conftest import SERVICE, review, served_serial
from tests.unit.injector.manifests import VERSIONS, validate

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy" / "injector"
CORE_KINDS = {"Namespace", "Deployment", "Service", "PodDisruptionBudget", "MutatingWebhookConfiguration"}


def kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (which carries kustomize) is needed to build the manifests"
    proc = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


@pytest.mark.parametrize("variant", ["base", "cert-manager"])
def test_manifests_build_and_validate_strictly(variant: str, tmp_path: Path) -> None:
    docs = kustomize(DEPLOY / variant)
    core = [d for d in docs if d["kind"] in CORE_KINDS]
    assert {d["kind"] for d in core} == CORE_KINDS
    path = tmp_path / "core.yaml"
    path.write_text(yaml.safe_dump_all(core))
    for version in VERSIONS:
        validate([path], version)


def test_manifests_agree_with_each_other_and_with_the_injector() -> None:
    kinds = by_kind(kustomize(DEPLOY / "cert-manager"))
    (deployment,) = kinds["Deployment"]
    (service,) = kinds["Service"]
    (config,) = kinds["MutatingWebhookConfiguration"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    defaults = InjectorSettings()
    assert ports == {"webhook": defaults.listen_port, "injector-admin": defaults.admin_port}
    assert container["image"].startswith("sidecars/injector:")
    assert "FROM base AS injector" in (ROOT / "images" / "Dockerfile").read_text()
    (mount,) = container["volumeMounts"]
    assert Path(mount["mountPath"]) == defaults.tls_cert_file.parent == defaults.tls_key_file.parent
    secret = next(v["secret"]["secretName"] for v in pod["volumes"] if v["name"] == mount["name"])
    certificate = next(c for c in kinds["Certificate"] if c["spec"]["secretName"] == secret)
    assert SERVICE in certificate["spec"]["dnsNames"]
    assert service["spec"]["ports"][0]["targetPort"] in ports
    (hook,) = config["webhooks"]
    ref = hook["clientConfig"]["service"]
    assert f"{ref['name']}.{ref['namespace']}.svc" == SERVICE == f"{service['metadata']['name']}.sidecars-system.svc"
    assert ref["path"] == PATH and ref["port"] == service["spec"]["ports"][0]["port"]
    assert hook["failurePolicy"] == "Ignore" and hook["sideEffects"] == "None"
    assert hook["reinvocationPolicy"] == "Never" and hook["admissionReviewVersions"] == ["v1"]
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{certificate['metadata']['namespace']}/{certificate['metadata']['name']}"
    )
    assert pod["automountServiceAccountToken"] is False  # it never calls the API server


async def test_manual_certificates_are_served_and_rotated(tmp_path: Path, client_factory: Any) -> None:
    """make-certs.sh's certificate (real openssl) is served for the Service's name; a second run rotates it."""
    out = tmp_path / "certs"
    script = DEPLOY / "make-certs.sh"
    first = subprocess.run(["bash", str(script), "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "kubectl -n sidecars-system create secret tls sidecars-injector-tls" in first.stdout
    assert "caBundle" in first.stdout
    ctx = ssl.create_default_context(cafile=str(out / "ca.crt"))
    async with run_sidecar(
        Injector, listen_host="127.0.0.1", listen_port=0, tls_poll_secs=0.05,
        tls_cert_file=str(out / "tls.crt"), tls_key_file=str(out / "tls.key"),
    ) as sc:  # fmt: skip
        port = sc.plugin.listen_port
        serial = await served_serial(port, ctx)
        client = client_factory(port, trust=ctx)  # the script's CA, not the fixture's
        status, answer = await client.post(review())
        assert status == 200 and "patch" in answer["response"]
        ca_before = (out / "ca.crt").read_bytes()
        again = subprocess.run(["bash", str(script), "--out", str(out)], capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr
        assert (out / "ca.crt").read_bytes() == ca_before  # the CA is kept: the caBundle stays valid
        for _ in range(100):
            if await served_serial(port, ctx) != serial:
                break
            await asyncio.sleep(0.05)
        assert await served_serial(port, ctx) != serial
