"""`sidecars inject` as a real process: stdin and files, --dry-run, --classic, images, exit codes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

DATA = Path(__file__).resolve().parents[2] / "data" / "injector"
GOLDEN = DATA / "golden"


def inject(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecars", "inject", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_file_in_yaml_out_and_a_line_per_template() -> None:
    proc = inject("-f", str(DATA / "list-mixed.yaml"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (GOLDEN / "list-mixed.yaml").read_text()
    assert "document 1 (List), items[1] (Deployment web): adapter injected (native)" in proc.stderr
    assert "document 1 (List), items[2] (Deployment plain): no sidecars asked for" in proc.stderr


def test_stdin_classic() -> None:
    proc = inject("--classic", stdin=(DATA / "job-ambassador.yaml").read_text())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (GOLDEN / "job-ambassador.classic.yaml").read_text()
    assert "document 1 (Job report): ambassador injected (classic)" in proc.stderr


def test_dry_run_prints_a_diff_of_only_the_added_lines() -> None:
    path = DATA / "several-documents.yaml"
    proc = inject("-f", str(path), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"--- {path}" and lines[1] == f"+++ {path} (injected)"
    changed = [ln for ln in lines[2:] if ln[:1] in "+-"]
    assert changed and all(ln.startswith("+") for ln in changed)  # nothing of the input is rewritten
    assert any(re.fullmatch(r"\+ +- name: tailer", ln) for ln in lines)


def test_second_run_reports_unchanged_and_writes_the_same() -> None:
    once = (GOLDEN / "deployment-all-three.yaml").read_text()
    proc = inject(stdin=once)
    assert proc.returncode == 0
    assert proc.stdout == once
    assert "tailer, ambassador, adapter already injected, unchanged" in proc.stderr


def test_images_by_prefix_tag_and_digest() -> None:
    digest = "registry.example.com/sc/adapter@sha256:" + "ab" * 32
    proc = inject(
        "--image-prefix", "registry.example.com/sc", "--image-tag", "9.9.9", "--image", f"adapter={digest}",
        stdin=(DATA / "statefulset-existing-init.yaml").read_text(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    spec = yaml.safe_load(proc.stdout)["spec"]["template"]["spec"]
    images = {c["name"]: c["image"] for c in spec["initContainers"]}
    assert images["tailer"] == "registry.example.com/sc/tailer:9.9.9"
    assert images["adapter"] == digest


def test_bad_input_exits_2_lists_every_problem_and_writes_nothing() -> None:
    text = (
        "kind: Pod\nmetadata: {name: a, annotations: {sidecars.io/inject: logger}}\nspec: {containers: [{name: x}]}\n"
        "---\nkind: Deployment\nmetadata: {name: b}\nspec: {template: {metadata: {annotations: "
        "{sidecars.io/inject: tailer}}, spec: {containers: [{name: tailer}]}}}\n"
    )
    proc = inject("--image", "proxy=x:1", stdin=text)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "cannot inject (3 problems)" in proc.stderr
    assert "--image: proxy=x:1: unknown sidecar 'proxy'" in proc.stderr
    assert "document 1 (Pod a): metadata.annotations[\"sidecars.io/inject\"]: unknown sidecar 'logger'" in proc.stderr
    assert "document 2 (Deployment b): spec.template.spec.containers[0].name: a container named 'tailer'" in proc.stderr


def test_missing_file_and_invalid_utf8() -> None:
    missing = inject("-f", "/nonexistent/x.yaml")
    assert missing.returncode == 2 and "/nonexistent/x.yaml: cannot read" in missing.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "sidecars", "inject"], input=b"kind: Pod\nx: \xff\n", capture_output=True, timeout=60
    )
    assert proc.returncode == 2 and b"cannot read" in proc.stderr


def test_listed_in_the_umbrella_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "sidecars", "--help"], capture_output=True, text=True, timeout=60)
    assert "inject" in proc.stdout
    usage = inject("--help")
    assert usage.returncode == 0 and "sidecars.io/tailer-logs-volume" in usage.stdout
