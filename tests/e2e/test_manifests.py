"""Every example manifest is valid Kubernetes 1.29 and follows the rules a careful operator sets.

Offline: the schemas come with kubernetes-validate; no Docker and no cluster needed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import sidecars

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "k8s-examples").glob("*/*.yaml"))
VALIDATE = Path(sys.executable).with_name("kubernetes-validate")


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod["spec"].get("initContainers") or []) + list(pod["spec"]["containers"])


def the_pod(path: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    (pod,) = [d for d in docs if d["kind"] == "Pod"]
    return pod  # type: ignore[no-any-return]


def test_there_are_examples_with_a_readme_each() -> None:
    folders = sorted({p.parent for p in MANIFESTS})
    assert len(folders) >= 6
    for folder in folders:
        assert (folder / "README.md").is_file(), folder


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_manifest_validates_strictly_against_kubernetes_1_29(path: Path) -> None:
    proc = subprocess.run(
        [str(VALIDATE), "--strict", "-k", "1.29.0", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed" in proc.stdout + proc.stderr


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_container_is_restricted_and_bounded(path: Path) -> None:
    pod = the_pod(path)
    psc = pod["spec"]["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    for c in containers(pod):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"], c["name"]
        assert c["image"].endswith(f":{sidecars.__version__}"), f"{c['name']}: image tag is not the version"


@pytest.mark.parametrize("path", [p for p in MANIFESTS if p.name == "pod.yaml"], ids=lambda p: p.parent.name)
def test_sidecars_are_native_with_probes_and_pod_metadata(path: Path) -> None:
    pod = the_pod(path)
    ours = [
        c
        for c in containers(pod)
        if c["image"].split(":")[0] in {"sidecars/tailer", "sidecars/ambassador", "sidecars/adapter"}
    ]
    for c in ours:
        assert c in (pod["spec"].get("initContainers") or []), f"{c['name']} is not a native sidecar"
        assert c["restartPolicy"] == "Always"
        assert {"startupProbe", "readinessProbe", "livenessProbe"} <= c.keys(), c["name"]
        refs = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"] if "valueFrom" in e}
        assert refs == {
            "POD_NAME": "metadata.name",
            "POD_NAMESPACE": "metadata.namespace",
            "NODE_NAME": "spec.nodeName",
        }


@pytest.mark.parametrize("path", [p for p in MANIFESTS if p.name == "pod-classic.yaml"], ids=lambda p: p.parent.name)
def test_classic_form_has_the_same_containers_without_init_sidecars(path: Path) -> None:
    classic, native = the_pod(path), the_pod(path.with_name("pod.yaml"))
    assert not classic["spec"].get("initContainers")
    assert sorted(c["name"] for c in containers(classic)) == sorted(c["name"] for c in containers(native))
    assert all("restartPolicy" not in c for c in containers(classic))
