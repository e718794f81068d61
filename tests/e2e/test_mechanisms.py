"""The mechanisms under every sidecar pattern: a shared volume, and an init container before the app."""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Callable

import pytest

from tests.e2e.patterns import docker_time
from tests.e2e.podrunner import EXAMPLES, Manifest, Pod, PodError

pytestmark = pytest.mark.e2e


def test_two_containers_share_a_volume(pod_factory: Callable[[str], Pod]) -> None:
    pod = pod_factory("01-shared-volume/pod.yaml")
    status, body = pod.request(8080, "/index.html")
    assert status == 200
    assert "Hello from the writer" in body
    assert pod.check_liveness() == {"server": None}
    states = pod.stop()
    assert {name: s["ExitCode"] for name, s in states.items()} == {"writer": 0, "server": 0}


def test_init_container_installs_the_artifact_before_the_app_starts(pod_factory: Callable[[str], Pod]) -> None:
    pod = pod_factory("02-init-artifact/pod.yaml")
    # The runtime serves code it does not contain: the version given to the init container.
    status, body = pod.request(8080, "/hello")
    assert status == 200
    assert '"version": "1.2.3"' in body
    install, runtime = pod.state("install"), pod.state("runtime")
    assert install["ExitCode"] == 0
    assert docker_time(install["FinishedAt"]) < docker_time(runtime["StartedAt"])
    assert "copied artifact hello.pyz" in pod.logs("install")
    states = pod.stop()
    assert states["runtime"]["ExitCode"] == 0


def test_security_context_is_applied(pod_factory: Callable[[str], Pod]) -> None:
    """Read-only root filesystem, dropped capabilities and the numeric non-root user are in force."""
    pod = pod_factory("01-shared-volume/pod.yaml")
    name = pod.containers["server"].docker_name
    probe = (
        "import os\nprint(os.getuid(), os.getgid())\n"
        "try:\n    open('/opt/x', 'w')\nexcept OSError as e:\n    print(e.errno)\n"
    )
    out = subprocess.run(
        ["docker", "exec", name, "python", "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == "65532 65532"
    assert out[1] == str(errno.EROFS)
    inspect = subprocess.run(
        ["docker", "inspect", "-f", "{{json .HostConfig.CapDrop}} {{.HostConfig.ReadonlyRootfs}}", name],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert inspect == '["ALL"] true'
    pod.stop()


def test_bad_config_in_a_configmap_stops_the_sidecar_with_a_clear_error(images: None, no_leftovers: None) -> None:
    """A misspelt key: the sidecar exits 2 before serving, naming the key and the mounted file."""
    manifest = Manifest.load(EXAMPLES / "04-ambassador" / "pod.yaml")
    cm = manifest.configmaps["ambassador-config"]
    cm["ambassador.yaml"] += "shutdown_timeout_sec: 5\n"
    pod = Pod(manifest)
    try:
        with pytest.raises(PodError) as failed:
            pod.start()
        message = str(failed.value)
        assert "ambassador exited" in message
        assert "shutdown_timeout_sec" in message and "/etc/sidecars/ambassador.yaml" in message
        assert pod.state("ambassador")["ExitCode"] == 2
        assert "app" not in pod.containers  # the app never started behind a broken sidecar
    finally:
        pod.remove()
