"""End to end: a Deployment injected by `sidecars inject`, its Pod template run with the real images.

The Deployment is the all-three example's template turned into a Deployment (the app, its
stand-ins and the annotations; no sidecar written by hand). `sidecars inject` runs as a real
process; the Pod runner then runs the injected Pod template as a ReplicaSet's Pod would run, and
every sidecar is checked as in test_all_three_pod.py.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e.patterns import (
    assert_clean_ordered_exit,
    assert_every_line_delivered,
    healthy_endpoints,
    healthz,
    received_lines,
    toggle_bad,
    upstream_counts,
    wait_until,
)
from tests.e2e.podrunner import EXAMPLES, Manifest, Pod

pytestmark = pytest.mark.e2e


def deployment_from_the_example(path: Path) -> str:
    """The example's ConfigMaps and its Pod as the template of a Deployment, as a team would write it."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    (pod,) = [d for d in docs if d["kind"] == "Pod"]
    labels = {"app.kubernetes.io/name": "shop"}
    template = {"metadata": {"labels": labels, "annotations": pod["metadata"]["annotations"]}, "spec": pod["spec"]}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "shop", "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template},
    }
    return yaml.safe_dump_all([d for d in docs if d["kind"] == "ConfigMap"] + [deployment], sort_keys=False)


def test_a_deployment_injected_by_sidecars_inject_runs_every_sidecar(
    images: None, no_leftovers: None, tmp_path: Path
) -> None:
    source = tmp_path / "shop.yaml"
    source.write_text(deployment_from_the_example(EXAMPLES / "06-all-three" / "template.yaml"))
    proc = subprocess.run(
        [sys.executable, "-m", "sidecars", "inject", "-f", str(source)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "document 4 (Deployment shop): tailer, ambassador, adapter injected (native)" in proc.stderr
    injected = tmp_path / "shop.injected.yaml"
    injected.write_text(proc.stdout)
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    template = copy.deepcopy(deployment["spec"]["template"])
    template["metadata"]["name"] = "shop-7d9f8c6b5d-x2x9q"  # what the ReplicaSet would name it
    configmaps = {d["metadata"]["name"]: dict(d["data"]) for d in docs if d["kind"] == "ConfigMap"}
    pod = Pod(Manifest(injected, {"apiVersion": "v1", "kind": "Pod", **template}, configmaps))
    try:
        pod.start()
        assert pod.started[:5] == ["log-receiver", "tailer", "ambassador", "adapter", "app"]
        wait_until(lambda: healthy_endpoints(pod) == 2, "both upstreams to be checked healthy")
        for _ in range(30):
            assert pod.request(8080, "/")[0] == 200
        counts = upstream_counts(pod, 60)
        assert min(counts.values()) >= 12, counts
        toggle_bad(pod, True)
        wait_until(lambda: healthz(pod)[0] == 503, "the adapter's /healthz to answer 503")
        toggle_bad(pod, False)
        wait_until(lambda: healthz(pod)[0] == 200, "the adapter's /healthz to answer 200 again")
        wait_until(lambda: received_lines(pod) >= 30, "the tailer to forward the app's lines")
        assert all(reason is None for reason in pod.check_liveness().values())
        states = pod.stop()
        assert_clean_ordered_exit(states, ["app", "adapter", "ambassador", "tailer", "log-receiver"])
        assert assert_every_line_delivered(pod) >= 30
    finally:
        pod.remove()
