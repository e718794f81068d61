"""Write the images' software bill of materials: CycloneDX 1.5 JSON, from what the image holds.

Run with the venv's interpreter after images/rootfs.py has filled ROOT. It lists
  - every distribution installed in the venv (name, version, licence, purl `pkg:pypi/...`) with the
    dependency graph from their `Requires-Dist` (only edges to what is installed);
  - every Debian package with a file in ROOT (read from `ROOT/var/lib/dpkg/status.d/`, which rootfs.py
    wrote from the base's dpkg database), with their `Depends` among themselves;
  - CPython itself when no Debian package owns the interpreter (e.g. the python:3.11-slim base).
Only the standard library is used (and `packaging`, when the venv has it, to evaluate markers), so
the build needs nothing more from an index, offline builds included. The document is
deterministic: the same inputs give the same bytes (time from SOURCE_DATE_EPOCH, serial from content).

    /opt/sidecars/bin/python images/sbom.py /rootfs > /rootfs/usr/share/sbom/sidecars.cdx.json
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT_PACKAGE = "sidecars"
TOOL = {"type": "application", "name": "sidecars-images-sbom", "description": "images/sbom.py"}
NAME_NORMALIZE = re.compile(r"[-_.]+")
REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
DEP_NAME = re.compile(r"^\s*([a-z0-9][a-z0-9+.-]+)(?::\w+)?")


def normalize(name: str) -> str:
    return NAME_NORMALIZE.sub("-", name).lower()


def python_components() -> tuple[list[dict[str, Any]], dict[str, list[str]], dict[str, str]]:
    """Components, dependency edges (by bom-ref) and name -> bom-ref for the venv's distributions."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # no marker evaluation: every requirement without an `extra` marker counts
        Requirement = None  # type: ignore[assignment,misc]
    dists = {normalize(d.metadata["Name"]): d for d in importlib.metadata.distributions()}
    refs = {name: f"pkg:pypi/{name}@{d.version}" for name, d in dists.items()}
    components, edges = [], {}
    for name, dist in sorted(dists.items()):
        meta = dist.metadata
        component: dict[str, Any] = {
            "type": "application" if name == ROOT_PACKAGE else "library",
            "bom-ref": refs[name],
            "name": meta["Name"],
            "version": dist.version,
            "purl": refs[name],
        }
        if meta["Summary"]:
            component["description"] = meta["Summary"]
        licenses = python_licenses(meta)
        if licenses:
            component["licenses"] = licenses
        components.append(component)
        depends = set()
        for spec in dist.requires or []:
            if Requirement is not None:
                req = Requirement(spec)
                if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                    continue
                dep = normalize(req.name)
            else:
                if "extra ==" in spec:
                    continue
                match = REQUIREMENT_NAME.match(spec)
                if not match:
                    continue
                dep = normalize(match.group(1))
            if dep in refs:
                depends.add(refs[dep])
        edges[refs[name]] = sorted(depends)
    return components, edges, refs


def python_licenses(meta: importlib.metadata.PackageMetadata) -> list[dict[str, Any]]:
    expression = meta["License-Expression"]
    if expression:
        return [{"expression": expression}]
    names = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License :: ")]
    short = (meta["License"] or "").strip()
    if not names and short and "\n" not in short and len(short) <= 100:
        names = [short]
    return [{"license": {"name": n}} for n in dict.fromkeys(names)]


def debian_packages(status_dir: Path) -> dict[str, dict[str, str]]:
    packages = {}
    for path in sorted(status_dir.glob("*")) if status_dir.is_dir() else []:
        fields: dict[str, str] = {}
        key = ""
        for line in path.read_text(errors="replace").splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields and "Version" in fields:
            packages[fields["Package"]] = fields
    return packages


def os_release(root: Path) -> dict[str, str]:
    for candidate in ("etc/os-release", "usr/lib/os-release"):
        path = root / candidate
        if path.exists():
            pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
            return {k: v.strip('"') for k, v in pairs}
    return {}


def debian_licenses(root: Path, package: str) -> list[dict[str, Any]]:
    """The `License:` names of a machine-readable (DEP-5) copyright file, if the package has one."""
    path = root / "usr/share/doc" / package / "copyright"
    if not path.is_file():
        return []
    text = path.read_text(errors="replace")
    if not text.startswith("Format:"):
        return []
    names = re.findall(r"^License: *(\S[^\n]*)$", text, re.M)
    return [{"license": {"name": n.strip()}} for n in dict.fromkeys(names)]


def deb_components(root: Path) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    packages = debian_packages(root / "var/lib/dpkg/status.d")
    release = os_release(root)
    distro = f"&distro={release['ID']}-{release['VERSION_ID']}" if "ID" in release and "VERSION_ID" in release else ""
    namespace = release.get("ID", "debian")
    refs = {
        name: f"pkg:deb/{namespace}/{name}@{quote(f['Version'], safe='')}?arch={f.get('Architecture', 'all')}{distro}"
        for name, f in packages.items()
    }
    components, edges = [], {}
    for name, fields in sorted(packages.items()):
        component: dict[str, Any] = {
            "type": "library",
            "bom-ref": refs[name],
            "name": name,
            "version": fields["Version"],
            "purl": refs[name],
        }
        if fields.get("Description"):
            component["description"] = fields["Description"].split("\n", 1)[0]
        licenses = debian_licenses(root, name)
        if licenses:
            component["licenses"] = licenses
        components.append(component)
        depends = set()
        for field in ("Pre-Depends", "Depends"):
            for alternative in re.split(r"[,|]", fields.get(field, "")):
                match = DEP_NAME.match(alternative)
                if match and match.group(1) in refs and match.group(1) != name:
                    depends.add(refs[match.group(1)])
        edges[refs[name]] = sorted(depends)
    return components, edges


def cpython_component(root: Path, debian: list[dict[str, Any]]) -> dict[str, Any] | None:
    """CPython as a component of its own when no Debian package provides the interpreter."""
    if any(re.fullmatch(r"(lib)?python3\.\d+(-minimal)?", c["name"]) for c in debian):
        return None
    version = platform.python_version()
    ref = f"pkg:generic/cpython@{version}"
    return {
        "type": "application",
        "bom-ref": ref,
        "name": "cpython",
        "version": version,
        "purl": ref,
        "licenses": [{"expression": "PSF-2.0"}],
    }


def build(root: Path, version: str, timestamp: float) -> dict[str, Any]:
    py_components, py_edges, py_refs = python_components()
    if ROOT_PACKAGE not in py_refs:
        raise SystemExit(f"{ROOT_PACKAGE} is not installed in {sys.prefix}: run this with the venv's python")
    debs, deb_edges = deb_components(root)
    cpython = cpython_component(root, debs)
    image_ref = f"{ROOT_PACKAGE}-image@{version}"
    top = [py_refs[ROOT_PACKAGE], *(c["bom-ref"] for c in debs)]
    extra = [cpython] if cpython else []
    if cpython:
        top.append(cpython["bom-ref"])
    body: dict[str, Any] = {
        "components": [*py_components, *debs, *extra],
        "dependencies": [
            {"ref": image_ref, "dependsOn": sorted(top)},
            *({"ref": ref, "dependsOn": deps} for ref, deps in sorted({**py_edges, **deb_edges}.items())),
            *({"ref": c["bom-ref"], "dependsOn": []} for c in extra),
        ],
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return {
        "$schema": "http://cyclonedx.org/schema/bom-1.5.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'sha256:' + digest)}",
        "version": 1,
        "metadata": {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp)),
            "tools": {"components": [{**TOOL, "version": version}]},
            "component": {
                "type": "container",
                "bom-ref": image_ref,
                "name": ROOT_PACKAGE,
                "version": version,
                "description": "The filesystem every sidecars image shares (tailer, ambassador, adapter, demo-app)",
            },
        },
        **body,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="the root filesystem images/rootfs.py assembled")
    args = parser.parse_args()
    version = importlib.metadata.version(ROOT_PACKAGE)
    timestamp = float(os.environ.get("SOURCE_DATE_EPOCH") or time.time())
    json.dump(build(args.root, version, timestamp), sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
