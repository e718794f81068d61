"""Every Pod a reader copies (k8s-examples/ and the docs' YAML blocks) opts out of what it does not use.

Service links put a `<SERVICE>_PORT=tcp://...` env var per Service of the namespace into every
container, where a sidecar's `SIDECAR_`/`AMBASSADOR_` options live; the service account token is a
credential none of the sidecars needs. The docs' Pods are also checked by kubernetes-validate, as
tests/e2e/test_manifests.py checks k8s-examples/.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```ya?ml\n(.*?)^```", re.M | re.S)
VALIDATE = Path(sys.executable).with_name("kubernetes-validate")


def _pods(text: str, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict) and doc.get("kind") == "Pod":
            yield f"{where} pod/{doc['metadata']['name']}", doc


def pods() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted((ROOT / "k8s-examples").glob("*/*.yaml")):
        yield from _pods(path.read_text(), str(path.relative_to(ROOT)))
    for path in sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "k8s-examples").glob("**/*.md")]):
        text = path.read_text()
        for match in BLOCK.finditer(text):
            where = f"{path.relative_to(ROOT)}:{text[: match.start()].count(chr(10)) + 2}"
            try:
                yield from _pods(match.group(1), where)
            except yaml.YAMLError:
                continue  # a fragment shown with `...`, not a manifest


PODS = list(pods())
DOC_PODS = [(w, p) for w, p in PODS if not w.startswith("k8s-examples/")]


def test_the_pods_are_found() -> None:
    assert len(PODS) - len(DOC_PODS) >= 14 and len(DOC_PODS) >= 5


@pytest.mark.parametrize(("where", "pod"), PODS, ids=[w for w, _ in PODS])
def test_no_service_links_and_no_service_account_token(where: str, pod: dict[str, Any]) -> None:
    assert pod["spec"].get("enableServiceLinks") is False, where
    assert pod["spec"].get("automountServiceAccountToken") is False, where


def test_the_docs_pods_are_valid_kubernetes(tmp_path: Path) -> None:
    files = []
    for i, (_, pod) in enumerate(DOC_PODS):
        files.append(tmp_path / f"{i}.yaml")
        files[-1].write_text(yaml.safe_dump(pod))
    proc = subprocess.run(
        [str(VALIDATE), "--strict", "-k", "1.29.0", *map(str, files)], capture_output=True, text=True, timeout=120
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert output.count("passed") == len(files), output
