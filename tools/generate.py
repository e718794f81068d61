"""Writes the files generated from one source, so that they cannot drift from it.

    python tools/generate.py           write them
    python tools/generate.py --check   exit 1 and list the files that differ from what would be written

- `k8s-examples/*/pod.yaml` and `pod-classic.yaml`, from each folder's `template.yaml` (the app and
  its stand-ins, with the annotations) through `sidecars inject`: the examples are the injector's
  output, so what the e2e tests run is what users get.

tests/unit/injector/test_generated.py fails when a committed file differs from what this writes.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sidecars.injector import yamlio
from sidecars.injector.inject import Options
from sidecars.injector.workloads import inject_documents

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "k8s-examples"
GENERATED = "# Generated from template.yaml by `python tools/generate.py`: edit the template, then run that.\n"
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


def outputs() -> dict[Path, Callable[[], str]]:
    """Every generated file and how to make it."""
    made: dict[Path, Callable[[], str]] = {}
    for template in sorted(EXAMPLES.glob("*/template.yaml")):
        made[template.with_name("pod.yaml")] = lambda t=template: example(t, classic=False)  # type: ignore[misc]
        made[template.with_name("pod-classic.yaml")] = lambda t=template: example(t, classic=True)  # type: ignore[misc]
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
            path.write_text(text)
    for path in stale:
        print(f"{'differs' if args.check else 'wrote'}: {path.relative_to(ROOT)}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
