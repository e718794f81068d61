"""End-to-end fixtures: a Docker engine with freshly built images, and Pods run from the examples.

The session starts by running `.ci/docker.sh` (idempotent: starts the engine if needed, builds the
base image once, rebuilds the images from the working tree with Docker's layer cache), so these
tests always exercise the current code. Without Docker they fail; they are never skipped.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.podrunner import EXAMPLES, LABEL, Manifest, Pod

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def images() -> None:
    proc = subprocess.run(["bash", str(ROOT / ".ci" / "docker.sh")], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f".ci/docker.sh failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


@pytest.fixture
def pod_factory(images: None, no_leftovers: None) -> Iterator[Callable[[str], Pod]]:
    """Start the Pod of `k8s-examples/<path>`; every container and volume is removed afterwards."""
    pods: list[Pod] = []

    def start(path: str) -> Pod:
        pod = Pod(Manifest.load(EXAMPLES / path))
        pods.append(pod)
        pod.start()
        return pod

    yield start
    for pod in pods:
        pod.remove()


@pytest.fixture(scope="session")
def no_leftovers() -> Iterator[None]:
    """After the session nothing labelled by the runner may remain (a leak is a failure).

    What an interrupted earlier session left behind is removed first, so it is not blamed here.
    """
    _remove_labelled()
    yield
    left, vols = _remove_labelled()
    if left or vols:
        pytest.fail(f"containers {left} and volumes {vols} were left behind")


def _remove_labelled() -> tuple[list[str], list[str]]:
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={LABEL}"], capture_output=True, text=True, check=False
    ).stdout.split()
    vols = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", f"label={LABEL}"], capture_output=True, text=True, check=False
    ).stdout.split()
    if left:
        subprocess.run(["docker", "rm", "-f", "-v", *left], capture_output=True, check=False)
    if vols:
        subprocess.run(["docker", "volume", "rm", "-f", *vols], capture_output=True, check=False)
    return left, vols
