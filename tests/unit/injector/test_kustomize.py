"""The Kustomize components, built by the real `kubectl kustomize`, add what `sidecars inject` adds.

kubectl carries kustomize (v5 here); without it the test fails with the reason, it is not skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecars.injector.inject import Options, plain
from sidecars.injector.workloads import inject_documents
from tests.unit.injector.manifests import VERSIONS, duplicates, templates, validate
from tools import generate

APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      enableServiceLinks: false
      initContainers: [{name: migrate, image: example/migrate:1}]
      volumes: [{name: data, emptyDir: {}}]
      containers:
        - name: web
          image: example/web:1
          volumeMounts: [{name: app-logs, mountPath: /srv/logs}, {name: data, mountPath: /data}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          enableServiceLinks: false
          containers:
            - name: nightly
              image: example/nightly:1
              volumeMounts: [{name: app-logs, mountPath: /srv/logs}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80}]}
"""
NAMES = ("tailer", "ambassador", "adapter")


def kubectl() -> str:
    path = shutil.which("kubectl")
    assert path, "kubectl (which carries kustomize) is needed to build the components"
    return path


def build(tmp_path: Path, classic: bool) -> list[Any]:
    base = tmp_path / "base"
    base.mkdir()
    (base / "app.yaml").write_text(APP)
    suffix = "-classic" if classic else ""
    components = [os.path.relpath(generate.COMPONENTS / f"{n}{suffix}", base) for n in NAMES]
    (base / "kustomization.yaml").write_text(yaml.safe_dump({"resources": ["app.yaml"], "components": components}))
    proc = subprocess.run(
        [kubectl(), "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(base)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "built.yaml").write_text(proc.stdout)
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def injected(classic: bool) -> list[Any]:
    """The same workloads annotated as the components assume, through `sidecars inject`'s logic."""
    docs = [d for d in yaml.safe_load_all(APP) if d]
    annotations = {"sidecars.io/inject": ",".join(NAMES), "sidecars.io/tailer-logs-volume": "app-logs"}
    annotations["sidecars.io/tailer-logs-path"] = "/var/log/app"  # where the component mounts it
    annotations |= {f"sidecars.io/{n}-config": f"{n}-config" for n in NAMES}
    for doc in docs:
        for template, _ in templates(doc):
            template.setdefault("metadata", {})["annotations"] = dict(annotations)  # type: ignore[index]
            template["spec"].setdefault("volumes", []).append(  # type: ignore[union-attr]
                {"name": "app-logs", "emptyDir": {"sizeLimit": "256Mi"}}
            )
    return [r.document for r in inject_documents(docs, Options(classic=classic))]


def by_name(items: list[Any]) -> dict[str, Any]:
    return {i["name"]: plain(i) for i in items}


@pytest.mark.parametrize("classic", [False, True], ids=["native", "classic"])
def test_components_add_what_the_injector_adds(tmp_path: Path, classic: bool) -> None:
    built = {(d["kind"], d["metadata"]["name"]): d for d in build(tmp_path, classic)}
    expected = {(d["kind"], d["metadata"]["name"]): d for d in injected(classic)}
    assert plain(built[("Service", "web")]) == plain(expected[("Service", "web")])
    for key in [("Deployment", "web"), ("CronJob", "nightly")]:
        ((got, _),), ((want, _),) = list(templates(built[key])), list(templates(expected[key]))
        got_spec, want_spec = got["spec"], want["spec"]
        for field in ("initContainers", "containers", "volumes"):
            # Kustomize puts new list items first, the injector appends: the same items either way.
            assert by_name(got_spec.get(field) or []) == by_name(want_spec.get(field) or []), (key, field)
        assert "annotations" not in (got.get("metadata") or {})  # no marker: the webhook stays out of it
        assert duplicates(got) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_built_workloads_validate_strictly(tmp_path: Path, version: str) -> None:
    (tmp_path / "native").mkdir()
    (tmp_path / "classic").mkdir()
    build(tmp_path / "native", classic=False)
    build(tmp_path / "classic", classic=True)
    validate([tmp_path / "native" / "built.yaml", tmp_path / "classic" / "built.yaml"], version)
