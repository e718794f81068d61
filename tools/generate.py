"""Writes the files generated from one source, so that they cannot drift from it.

    python -m tools.generate           write them (from the repository's root)
    python -m tools.generate --check   exit 1 and list the files that differ from what would be written

- `k8s-examples/*/pod.yaml` and `pod-classic.yaml`, from each folder's `template.yaml` (the app and
  its stand-ins, with the annotations) through `sidecars inject`: the examples are the injector's
  output, so what the e2e tests run is what users get.
- `deploy/kustomize/components/<sidecar>[-classic]/`: the same injection as a strategic-merge patch,
  made by injecting into a reference template and keeping what was added.
- `monitoring/prometheusrule.yaml`, the groups of `monitoring/rules/sidecars.rules.yaml` as a
  PrometheusRule; `monitoring/dashboards/<sidecar>.json`, from tools/dashboards.py.

tests/unit/injector/test_generated.py fails when a committed file differs from what this writes.
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from sidecars.injector import yamlio
from sidecars.injector.catalog import CATALOG
from sidecars.injector.inject import Options, inject_template
from sidecars.injector.workloads import inject_documents
from tools import dashboards

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "k8s-examples"
COMPONENTS = ROOT / "deploy" / "kustomize" / "components"
MONITORING = ROOT / "monitoring"
# The kinds whose Pod template is spec.template; a CronJob's is one level deeper.
TEMPLATE_KINDS = "Deployment|StatefulSet|DaemonSet|ReplicaSet|Job"
# The tailer's component mounts this volume (an emptyDir it declares) where the app writes its logs.
LOGS_VOLUME = "app-logs"
GENERATED = "# Generated from template.yaml by `python -m tools.generate`: edit the template, then run that.\n"
CLASSIC = (
    "# Classic form for clusters before 1.29 (`sidecars inject --classic`): the sidecars are ordinary\n"
    "# containers, so nothing orders their start or stop; the app must tolerate a sidecar that is not\n"
    "# ready yet, and lines written in the last moment before shutdown may not be forwarded.\n"
)


def example(template: Path, classic: bool) -> str:
    """One example file: the template's header comment, then its documents injected."""
    text = template.read_text()
    lines = text.splitlines(keepends=True)
    n = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    header, body = "".join(lines[:n]), "".join(lines[n:])
    chunks = yamlio.split(body, str(template))
    docs = yamlio.documents(chunks)
    if classic:
        docs = [_classic(d) for d in docs]
    results = inject_documents(docs, Options(classic=classic))
    replaced = {i: r.document for i, r in enumerate(results) if r.changed or classic}
    return header + (CLASSIC if classic else "") + GENERATED + yamlio.join(chunks, replaced)


def _classic(doc: Any) -> Any:
    """The classic variant of an example Pod: its own name, and its stand-in sidecars as ordinary containers."""
    if doc.get("kind") != "Pod":
        return doc
    doc = copy.deepcopy(doc)
    name = f"{doc['metadata']['name']}-classic"
    doc["metadata"]["name"] = name
    doc["metadata"]["labels"]["app.kubernetes.io/name"] = name
    spec = doc["spec"]
    natives = [c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
    if natives:
        spec["initContainers"][:] = [c for c in spec["initContainers"] if c not in natives]
        if not spec["initContainers"]:
            del spec["initContainers"]
        for c in natives:
            del c["restartPolicy"]
            spec["containers"].append(c)
    return doc


def component_patch(name: str, classic: bool) -> dict[str, Any]:
    """What injecting `name` adds to a Pod spec: its container and volumes, as a strategic-merge patch.

    No annotations: the marker belongs to `sidecars inject` and the webhook, which then leave the Pod alone
    (a Pod that asks the webhook for a sidecar a component already added is admitted unchanged, with a warning).
    """
    annotations = {"sidecars.io/inject": name, f"sidecars.io/{name}-config": f"{name}-config"}
    app: dict[str, Any] = {"name": "app", "image": "app"}
    spec: dict[str, Any] = {"containers": [app]}
    if CATALOG[name].reads_logs:
        annotations["sidecars.io/tailer-logs-volume"] = LOGS_VOLUME
        spec["volumes"] = [{"name": LOGS_VOLUME, "emptyDir": {"sizeLimit": "256Mi"}}]
        app["volumeMounts"] = [{"name": LOGS_VOLUME, "mountPath": "/var/log/app"}]
    template = {"metadata": {"annotations": annotations}, "spec": spec}
    injected = inject_template(template, Options(classic=classic), where=f"the {name} component").template["spec"]
    key = "containers" if classic else "initContainers"
    return {
        "volumes": injected["volumes"],
        key: [c for c in injected[key] if c["name"] == name],
    }


def component(name: str, classic: bool) -> dict[str, str]:
    """The files of one Kustomize component."""
    patch = component_patch(name, classic)
    mode = "ordinary containers (clusters before 1.29)" if classic else "a native sidecar (Kubernetes 1.29+)"
    head = (
        f"# The {name} as {mode}, added to every workload of a kustomization that\n"
        "# includes this component. Generated by `python -m tools.generate` from the injector; see docs/rollout.md.\n"
    )
    if CATALOG[name].reads_logs:
        head += (
            f"# The app mounts the emptyDir `{LOGS_VOLUME}` where it writes its *.log files; the tailer reads it\n"
            "# at /var/log/app. Its config comes from the ConfigMap tailer-config (key tailer.yaml).\n"
        )
    else:
        head += f"# Its config comes from the ConfigMap {name}-config (key {name}.yaml).\n"
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1alpha1",
        "kind": "Component",
        "patches": [
            {"path": "pod-template.yaml", "target": {"kind": TEMPLATE_KINDS}},
            {"path": "cronjob.yaml", "target": {"kind": "CronJob"}},
        ],
    }
    template = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "any"},
                "spec": {"template": {"spec": patch}}}  # fmt: skip
    cronjob = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "any"},
               "spec": {"jobTemplate": {"spec": {"template": {"spec": patch}}}}}  # fmt: skip
    note = "# A strategic-merge patch: kind and name are placeholders, the component's targets choose the workloads.\n"
    return {
        "kustomization.yaml": head + yamlio.dump(kustomization),
        "pod-template.yaml": head + note + yamlio.dump(template),
        "cronjob.yaml": head + note + yamlio.dump(cronjob),
    }


def prometheus_rule() -> str:
    rules = yaml.safe_load((MONITORING / "rules" / "sidecars.rules.yaml").read_text())
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "sidecars", "labels": {"app.kubernetes.io/part-of": "sidecars", "role": "alert-rules"}},
        "spec": {"groups": rules["groups"]},
    }
    head = (
        "# The sidecars' alerts for the Prometheus Operator: the groups of rules/sidecars.rules.yaml,\n"
        "# generated by `python -m tools.generate` (edit that file, then run it).\n"
    )
    return head + yaml.safe_dump(doc, sort_keys=False, width=120, allow_unicode=True)


def outputs() -> dict[Path, Callable[[], str]]:
    """Every generated file and how to make it."""
    made: dict[Path, Callable[[], str]] = {}
    for template in sorted(EXAMPLES.glob("*/template.yaml")):
        made[template.with_name("pod.yaml")] = lambda t=template: example(t, classic=False)  # type: ignore[misc]
        made[template.with_name("pod-classic.yaml")] = lambda t=template: example(t, classic=True)  # type: ignore[misc]
    for name in CATALOG:
        for classic in (False, True):
            folder = COMPONENTS / (f"{name}-classic" if classic else name)
            for filename in ("kustomization.yaml", "pod-template.yaml", "cronjob.yaml"):
                made[folder / filename] = lambda n=name, c=classic, f=filename: component(n, c)[f]  # type: ignore[misc]
    made[MONITORING / "prometheusrule.yaml"] = prometheus_rule
    for name in dashboards.SIDECARS:
        made[MONITORING / "dashboards" / f"{name}.json"] = (
            lambda n=name: json.dumps(dashboards.dashboard(n), indent=2) + "\n"  # type: ignore[misc]
        )
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a file differs")
    args = parser.parse_args(argv)
    stale = []
    for path, make in outputs().items():
        text = make()
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"{'differs' if args.check else 'wrote'}: {path.relative_to(ROOT)}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
