"""Golden tests: every workload kind and shape in tests/data/injector/, injected native and classic.

Each input's output is compared with tests/data/injector/golden/ (SIDECARS_UPDATE_GOLDEN=1 rewrites
them; read the diff before committing), validated with `kubernetes-validate --strict` for 1.29 and
the newest schema it knows, checked for the duplicate names the API server only warns about, and
injected once more to show that twice equals once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from sidecars.injector import yamlio
from sidecars.injector.inject import Options, plain
from sidecars.injector.workloads import inject_documents
from tests.unit.injector.manifests import VERSIONS, duplicates, templates, validate

DATA = Path(__file__).resolve().parents[2] / "data" / "injector"
GOLDEN = DATA / "golden"
INPUTS = sorted(DATA.glob("*.yaml"))
CASES = [(path, classic) for path in INPUTS for classic in (False, True)]


def golden_path(path: Path, classic: bool) -> Path:
    return GOLDEN / (path.stem + (".classic" if classic else "") + ".yaml")


def inject_text(text: str, classic: bool, source: str = "input") -> str:
    chunks = yamlio.split(text, source)
    results = inject_documents(yamlio.documents(chunks), Options(classic=classic))
    return yamlio.join(chunks, {i: r.document for i, r in enumerate(results) if r.changed})


def test_every_kind_and_shape_is_covered() -> None:
    kinds = {d["kind"] for p in INPUTS for d in yaml.safe_load_all(p.read_text()) if d}
    kinds |= {i["kind"] for p in INPUTS for d in yaml.safe_load_all(p.read_text()) if d for i in d.get("items", [])}
    assert {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "List"} <= kinds


@pytest.mark.parametrize(("path", "classic"), CASES, ids=lambda v: v.stem if isinstance(v, Path) else str(v))
def test_output_matches_golden(path: Path, classic: bool) -> None:
    out = inject_text(path.read_text(), classic, path.name)
    target = golden_path(path, classic)
    if os.environ.get("SIDECARS_UPDATE_GOLDEN") == "1":
        target.parent.mkdir(exist_ok=True)
        target.write_text(out)
    assert target.exists(), f"no golden file {target.name}; run with SIDECARS_UPDATE_GOLDEN=1"
    assert out == target.read_text()


@pytest.mark.parametrize(("path", "classic"), CASES, ids=lambda v: v.stem if isinstance(v, Path) else str(v))
def test_injecting_twice_equals_once(path: Path, classic: bool) -> None:
    once = inject_text(path.read_text(), classic)
    assert inject_text(once, classic) == once


@pytest.mark.parametrize(("path", "classic"), CASES, ids=lambda v: v.stem if isinstance(v, Path) else str(v))
def test_no_duplicate_names_ports_or_env(path: Path, classic: bool) -> None:
    docs = [d for d in yaml.safe_load_all(golden_path(path, classic).read_text()) if d]
    found = [(t, claims) for d in docs for t, claims in templates(d)]
    assert found
    for template, claims in found:
        assert duplicates(template, claims) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_golden_outputs_validate_strictly(version: str) -> None:
    outputs = sorted(GOLDEN.glob("*.yaml"))
    assert len(outputs) == len(CASES)
    validate(outputs, version)


def test_comments_key_order_and_untouched_documents_are_kept() -> None:
    text = (DATA / "several-documents.yaml").read_text()
    out = inject_text(text, classic=False)
    # The ConfigMap and the Service are byte for byte what they were, their comments included.
    head = text[: text.index("apiVersion: apps/v1")]
    assert out.startswith(head)
    assert "name: web   # keeps its comment" in out
    assert "- name: worker     # a second app container: it gets the log volume too" in out
    deployment = [d for d in yaml.safe_load_all(out) if d][2]
    assert list(deployment) == ["apiVersion", "kind", "metadata", "spec"]
    spec = deployment["spec"]["template"]["spec"]
    assert list(spec) == ["volumes", "initContainers", "containers"]


def test_removing_the_annotation_removes_the_sidecars() -> None:
    original = (DATA / "deployment-all-three.yaml").read_text()
    injected = inject_text(original, classic=False)
    doc = yaml.safe_load(injected)
    del doc["spec"]["template"]["metadata"]["annotations"]["sidecars.io/inject"]
    for key in ("tailer-config", "ambassador-config", "adapter-config", "tailer-logs-volume"):
        del doc["spec"]["template"]["metadata"]["annotations"][f"sidecars.io/{key}"]
    removed = yaml.safe_load(inject_text(yaml.safe_dump(doc), classic=False))
    expected = yaml.safe_load(original)
    for key in ("tailer-config", "ambassador-config", "adapter-config", "tailer-logs-volume"):
        del expected["spec"]["template"]["metadata"]["annotations"][f"sidecars.io/{key}"]
    del expected["spec"]["template"]["metadata"]["annotations"]["sidecars.io/inject"]
    assert plain(removed) == plain(expected)


def test_switching_to_classic_moves_the_sidecars() -> None:
    native = inject_text((DATA / "job-ambassador.yaml").read_text(), classic=False)
    classic = yaml.safe_load(inject_text(native, classic=True))
    spec = classic["spec"]["template"]["spec"]
    assert "initContainers" not in spec
    assert [c["name"] for c in spec["containers"]] == ["report", "ambassador"]
    assert "restartPolicy" not in spec["containers"][1]
