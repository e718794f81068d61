"""The images: one shared filesystem, only metadata apart; non-root, exec-form, no HEALTHCHECK, labelled."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import sidecars

ROOT = Path(__file__).resolve().parents[2]
TARGETS = {"tailer": 9801, "ambassador": 9802, "adapter": 9803, "injector": 9804, "demo-app": 8080}


def inspect(image: str) -> dict[str, Any]:
    out = subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]  # type: ignore[no-any-return]


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    proc = subprocess.run([str(hadolint), str(ROOT / "images" / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.e2e
def test_images_share_every_layer_and_differ_only_in_metadata(images: None) -> None:
    found = {t: inspect(f"sidecars/{t}:{sidecars.__version__}") for t in TARGETS}
    layers = {t: tuple(i["RootFS"]["Layers"]) for t, i in found.items()}
    assert len(set(layers.values())) == 1, "the images must differ only in their metadata"
    for target, info in found.items():
        config = info["Config"]
        module = "sidecars.demo.app" if target == "demo-app" else f"sidecars.{target}"
        assert config["Entrypoint"] == ["python", "-m", module]  # exec form: python is PID 1, gets SIGTERM
        assert config["User"] == "65532:65532"
        assert config.get("Healthcheck") is None
        assert f"{TARGETS[target]}/tcp" in config["ExposedPorts"]
        assert "PYTHONDONTWRITEBYTECODE=1" in config["Env"]
        labels = config["Labels"]
        assert labels["org.opencontainers.image.version"] == sidecars.__version__
        assert labels["org.opencontainers.image.source"].startswith("https://")
        assert labels["org.opencontainers.image.revision"]


@pytest.mark.e2e
@pytest.mark.parametrize("target", ["tailer", "ambassador", "adapter"])
def test_sidecar_image_runs_read_only_without_a_network(images: None, target: str) -> None:
    """On a read-only root with no network: --version answers, a bad option is named in a clear error."""
    image = f"sidecars/{target}:{sidecars.__version__}"
    base = ["docker", "run", "--rm", "--read-only", "--network", "none", "--cap-drop", "ALL", image]
    proc = subprocess.run([*base, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert sidecars.__version__ in proc.stdout + proc.stderr
    bad = subprocess.run([*base, "--admin-port", "not-a-port"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
    assert "admin" in bad.stderr  # a clear error naming the option


@pytest.mark.e2e
def test_ambassador_image_runs_the_compiled_request_path_without_a_compiler(images: None) -> None:
    image = f"sidecars/ambassador:{sidecars.__version__}"
    base = ["docker", "run", "--rm", "--read-only", "--network", "none", "--cap-drop", "ALL"]
    # `compiled` fails start-up (config error) unless the image holds a twin built from its own source.
    proc = subprocess.run([*base, image, "--http-engine", "compiled", "--print-config"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "http_engine: compiled" in proc.stdout
    tools = subprocess.run([*base, "--entrypoint", "sh", image, "-c", "command -v cc gcc"], capture_output=True)
    assert tools.returncode != 0, "the build tools must stay in the builder stage"
