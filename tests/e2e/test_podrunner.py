"""The Pod runner's translation of a Pod spec into docker arguments (no Docker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.podrunner import (
    MIN_GRACE_SECS,
    Container,
    Manifest,
    Pod,
    PodError,
    TerminationBudget,
    quantity_bytes,
    quantity_cpus,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "k8s-examples"


def test_quantities() -> None:
    assert quantity_bytes("96Mi") == 96 * 2**20
    assert quantity_bytes("1G") == 10**9
    assert quantity_bytes(512) == 512
    assert quantity_cpus("250m") == 0.25
    assert quantity_cpus("2") == 2.0
    with pytest.raises(PodError):
        quantity_bytes("12 parsecs")


def test_manifest_holds_the_pod_and_its_configmaps() -> None:
    m = Manifest.load(EXAMPLES / "06-all-three" / "pod.yaml")
    assert m.pod["metadata"]["name"] == "all-three"
    assert set(m.configmaps) == {"tailer-config", "ambassador-config", "adapter-config"}
    assert "rules.yaml" in m.configmaps["adapter-config"]


def test_sidecar_container_becomes_restricted_docker_arguments() -> None:
    pod = Pod(Manifest.load(EXAMPLES / "06-all-three" / "pod.yaml"), suffix="x")
    pod.infra = "infra-x"
    pod.volumes = {"tailer-config": "/tmp/cm-tailer", "app-logs": "vol-logs", "tailer-state": "vol-state"}
    spec = next(c for c in pod.spec["initContainers"] if c["name"] == "tailer")
    c = Container(spec, "sidecar", docker_name="e2e-all-three-x-tailer")
    args = pod._docker_args(c)
    joined = " ".join(args)
    assert "--network container:infra-x" in joined
    assert "--user 65532:65532" in joined
    assert "--read-only" in args
    assert "--cap-drop ALL" in joined
    assert "--security-opt no-new-privileges" in joined
    assert f"--memory {128 * 2**20}" in joined
    assert "--env POD_NAME=all-three" in joined
    assert "--env POD_NAMESPACE=default" in joined
    assert "--env NODE_NAME=e2e-node" in joined
    assert "--env SIDECAR_CONFIG=/etc/sidecars/tailer.yaml" in joined
    assert "--volume /tmp/cm-tailer:/etc/sidecars:ro" in joined
    assert "--volume vol-logs:/var/log/app:ro" in joined  # the tailer only reads the app's logs
    assert "vol-state:/var/lib/sidecars/tailer" in args  # its checkpoints: writable
    assert args[-1] == "sidecars/tailer:0.1.0"  # no command: the image's entrypoint runs


def test_command_replaces_the_entrypoint_and_args_follow() -> None:
    pod = Pod(Manifest.load(EXAMPLES / "02-init-artifact" / "pod.yaml"), suffix="x")
    pod.infra, pod.volumes = "infra-x", {"apps": "vol-apps"}
    spec = pod.spec["containers"][0]
    args = pod._docker_args(Container(spec, "app", docker_name="n"))
    i = args.index("--entrypoint")
    assert args[i + 1 :] == ["python", "sidecars/demo-app:0.1.0", "/apps/hello.pyz", "--port", "8080"]


def test_run_as_root_is_refused_when_run_as_non_root() -> None:
    m = Manifest.load(EXAMPLES / "01-shared-volume" / "pod.yaml")
    m.pod["spec"]["containers"][0]["securityContext"]["runAsUser"] = 0
    pod = Pod(m, suffix="x")
    pod.infra, pod.volumes = "infra-x", {"html": "vol"}
    with pytest.raises(PodError, match="runAsNonRoot"):
        pod._docker_args(Container(m.pod["spec"]["containers"][0], "app", docker_name="n"))


def test_termination_budget_is_what_is_left_of_one_grace_period() -> None:
    now = [100.0]
    budget = TerminationBudget(30, clock=lambda: now[0])
    assert budget.remaining() == 30
    now[0] += 12.4
    assert budget.remaining() == 17  # whole seconds, rounded down as docker stop -t takes them
    now[0] += 17
    assert budget.remaining() == MIN_GRACE_SECS  # past the end: the kubelet's minimum, not zero
    now[0] += 100
    assert budget.remaining() == MIN_GRACE_SECS


def test_pod_stop_shares_one_grace_period_apps_first_then_sidecars_in_reverse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pod = Pod(Manifest.load(EXAMPLES / "06-all-three" / "pod.yaml"), suffix="x")
    grace = int(pod.spec["terminationGracePeriodSeconds"])
    for spec in pod.spec["initContainers"]:
        pod.containers[spec["name"]] = Container(spec, "sidecar" if spec.get("restartPolicy") == "Always" else "init")
    for spec in pod.spec["containers"]:
        pod.containers[spec["name"]] = Container(spec, "app")
    pod.started = [n for n, c in pod.containers.items() if c.kind != "init"]
    sidecars = [n for n in pod.started if pod.containers[n].kind == "sidecar"]
    apps = [n for n in pod.started if pod.containers[n].kind == "app"]
    assert len(sidecars) >= 3 and apps
    now = [0.0]
    took = {n: 1.0 for n in [*apps, *sidecars]} | {sidecars[-1]: 4.5, sidecars[-2]: 30.0}
    given: list[tuple[str, int]] = []

    def stop_container(name: str, grace_secs: int = 10) -> int:
        given.append((name, grace_secs))
        now[0] += min(took[name], grace_secs)  # docker stop: SIGTERM, then SIGKILL at the grace period
        return 0

    monkeypatch.setattr(pod, "stop_container", stop_container)
    monkeypatch.setattr(pod, "state", lambda name: {"ExitCode": 0})
    pod.stop(clock=lambda: now[0])
    order = [name for name, _ in given]
    assert sorted(order[: len(apps)]) == sorted(apps) and order[len(apps) :] == list(reversed(sidecars))
    grants = dict(given)
    assert {grants[n] for n in apps} == {grace}  # the apps are stopped first, together, with all of it
    # Apps took 1 s each, one after the other here: what is left is shared by the sidecars in turn.
    left = grace - len(apps)
    assert grants[sidecars[-1]] == left
    assert grants[sidecars[-2]] == int(left - 4.5)
    # The slow one used up the rest: the others get the kubelet's minimum, not a grace period each.
    assert [grants[n] for n in sidecars[:-2]] == [MIN_GRACE_SECS] * (len(sidecars) - 2)
    assert now[0] <= grace + MIN_GRACE_SECS * (len(sidecars) - 2)
