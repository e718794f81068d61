"""`sidecars schema NAME`: every config file the repository shows validates, and a typo does not.

The schemas are taken from the real command's output (a subprocess), as an editor's
yaml-language-server or a CI job would use them. The examples are every `<sidecar>.yaml` and
`rules.yaml` of a ConfigMap in k8s-examples/ and in the docs' YAML blocks, the rules files in
examples/, and every YAML block of docs/<sidecar>*.md that is a config file of that sidecar.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from sidecars.cli import schemas

ROOT = Path(__file__).resolve().parents[3]
SIDECARS = ("tailer", "ambassador", "adapter", "injector")
BLOCK = re.compile(r"^```ya?ml\n(.*?)^```", re.M | re.S)


@cache
def schema(name: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "sidecars", "schema", name], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def errors(name: str, config: Any) -> list[str]:
    validator = Draft202012Validator(schema(name))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(config)]


def _config_maps(text: str, where: str, sidecar: str | None = None) -> Iterator[tuple[str, str, Any]]:
    """The config files of ConfigMaps: `<sidecar>.yaml`, `rules.yaml`, and `config.yaml` on `sidecar`'s page."""
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
            for key, body in (doc.get("data") or {}).items():
                stem = key.removesuffix(".yaml")
                name = "adapter-rules" if stem == "rules" else sidecar if stem == "config" else stem
                if name in SIDECARS or name == "adapter-rules":
                    yield f"{where} {doc['metadata']['name']}/{key}", name, yaml.safe_load(body)


def examples() -> Iterator[tuple[str, str, Any]]:
    for path in sorted((ROOT / "k8s-examples").glob("*/*.yaml")):
        yield from _config_maps(path.read_text(), str(path.relative_to(ROOT)))
    for path in sorted((ROOT / "examples").glob("*/rules.yaml")):
        yield str(path.relative_to(ROOT)), "adapter-rules", yaml.safe_load(path.read_text())
    for path in sorted((ROOT / "docs").glob("*.md")):
        sidecar = path.stem.split("-")[0]
        text = path.read_text()
        for match in BLOCK.finditer(text):
            where = f"{path.relative_to(ROOT)}:{text[: match.start()].count(chr(10)) + 2}"
            try:
                docs = list(yaml.safe_load_all(match.group(1)))
            except yaml.YAMLError:
                continue  # a fragment shown with `...`, not a file
            yield from _config_maps(match.group(1), where, sidecar)
            for doc in docs:
                if not isinstance(doc, dict) or sidecar not in SIDECARS:
                    continue
                if set(doc) <= {"rules", "scrape", "export"} and sidecar == "adapter":
                    yield where, "adapter-rules", doc
                elif len(set(doc) & set(schema(sidecar)["properties"])) * 2 >= len(doc):
                    yield where, sidecar, doc  # mostly options of this sidecar: its config file


EXAMPLES = list(examples())


def test_the_examples_are_found() -> None:
    """A guard against a collector that finds nothing: each kind of file is there."""
    kinds = {name for _, name, _ in EXAMPLES}
    assert kinds == {"tailer", "ambassador", "adapter", "adapter-rules"}
    assert len([w for w, _, _ in EXAMPLES if w.startswith("docs/tailer-sinks.md")]) >= 7  # one per sink
    assert len([w for w, _, _ in EXAMPLES if w.startswith("k8s-examples/")]) >= 12
    assert len([w for w, _, _ in EXAMPLES if w.startswith("docs/ambassador.md")]) >= 4  # TLS, gRPC, redis


@pytest.mark.parametrize(("where", "name", "config"), EXAMPLES, ids=[w for w, _, _ in EXAMPLES])
def test_every_example_config_validates(where: str, name: str, config: Any) -> None:
    assert errors(name, config) == [], where


def test_a_typo_is_rejected_at_its_place() -> None:
    tailer = next(c for w, n, c in EXAMPLES if n == "tailer" and "sink_config" in c and "03-tailer" in w)
    assert errors("tailer", {**tailer, "batch_max_byte": 1024}) == [
        ": Additional properties are not allowed ('batch_max_byte' was unexpected)"
    ]
    # A key of the chosen sink, validated by that sink's settings: `password` is not one of the http sink's.
    wrong = {**tailer, "sink": "http", "sink_config": {**tailer["sink_config"], "password": "x"}}
    assert errors("tailer", wrong) == ["sink_config: Additional properties are not allowed ('password' was unexpected)"]
    # The same key is right for another sink's settings only where that sink has it.
    assert errors("tailer", {"sink": "http", "sink_config": {"url": "http://x", "basic_auth_username": "u"}}) == []
    assert errors("tailer", {"sink": "file", "sink_config": {"url": "http://x"}}) != []
    ambassador = next(c for _, n, c in EXAMPLES if n == "ambassador" and c.get("listeners"))
    listener = {**ambassador["listeners"][0], "mode": "htttp"}
    assert [e.split(":")[0] for e in errors("ambassador", {"listeners": [listener]})] == ["listeners.0.mode"]
    rules = {"rules": [{"name": "up", "expr": "up == 0", "severity": "fatal"}]}
    assert [e.split(":")[0] for e in errors("adapter-rules", rules)] == ["rules.0.severity"]
    assert errors("adapter-rules", {"rules": [{"name": "up", "exp": "up == 0"}]}) != []


def test_secret_options_have_their_file_key() -> None:
    adapter = schema("adapter")["properties"]
    assert "target_bearer_token" in adapter and "target_bearer_token_file" in adapter
    assert errors("adapter", {"target_bearer_token_file": "/var/run/secrets/token"}) == []


def test_every_schema_is_a_valid_draft_2020_12_schema() -> None:
    for name, found in schemas().items():
        Draft202012Validator.check_schema(found)  # raises, naming the schema's own error
        assert found["$schema"].endswith("2020-12/schema"), name


def test_no_secret_default_is_published() -> None:
    """A secret compiled in as a default stays out of the schema; the field is still documented."""
    from pydantic import Field, SecretStr

    from sidecars.core.schema import config_schema
    from sidecars.core.settings import SidecarSettings, secret

    class Leaky(SidecarSettings):
        token: SecretStr | None = Field(SecretStr("hunter2-token"), description="A token.")
        key: str | None = secret("hunter2-key", description="A key.")

    found = config_schema("leaky", Leaky)
    assert "hunter2" not in json.dumps(found)
    assert found["properties"]["token"]["description"] == "A token."
    assert "key" in found["properties"] and "key_file" in found["properties"]
    for name in schemas():
        assert '"**********"' not in json.dumps(schema(name)), name


def test_the_command_lists_its_names_and_refuses_an_unknown_one() -> None:
    run = [sys.executable, "-m", "sidecars", "schema"]
    listed = subprocess.run(run, capture_output=True, text=True, timeout=60, check=False)
    assert listed.returncode == 0 and {"tailer", "ambassador", "adapter", "adapter-rules"} <= set(listed.stdout.split())
    wrong = subprocess.run([*run, "taler"], capture_output=True, text=True, timeout=60, check=False)
    assert wrong.returncode == 2 and "no schema named 'taler'" in wrong.stderr and wrong.stdout == ""


def test_a_wrong_type_is_rejected_at_its_place() -> None:
    tailer = next(c for w, n, c in EXAMPLES if n == "tailer" and "03-tailer" in w)
    assert [e.split(":")[0] for e in errors("tailer", {**tailer, "batch_max_bytes": "lots"})] == ["batch_max_bytes"]
    assert [e.split(":")[0] for e in errors("tailer", {**tailer, "include": "/var/log/*.log"})] == ["include"]
    tls = next(c for w, n, c in EXAMPLES if n == "ambassador" and "tls" in json.dumps(c))
    listener = tls["listeners"][0]
    wrong_port = {"listeners": [{**listener, "port": "http"}]}
    assert [e.split(":")[0] for e in errors("ambassador", wrong_port)] == ["listeners.0.port"]
    cluster = listener["cluster"]
    typo = {"listeners": [{**listener, "cluster": {**cluster, "tls": {**cluster["tls"], "ca_fil": "/x"}}}]}
    assert [e.split(":")[0] for e in errors("ambassador", typo)] == ["listeners.0.cluster.tls"]
    h2 = {"listeners": [{**listener, "http2": {"max_concurrent_streams": "many"}}]}
    assert [e.split(":")[0] for e in errors("ambassador", h2)] == ["listeners.0.http2.max_concurrent_streams"]


def test_choices_in_any_case_and_their_aliases_as_the_sidecar_takes_them(tmp_path: Path) -> None:
    for level in ("INFO", "Warning", "WARN", " debug "):
        assert errors("tailer", {"log_level": level}) == [], level
    assert [e.split(":")[0] for e in errors("tailer", {"log_level": "LOUD"})] == ["log_level"]
    assert errors("tailer", {"log_level": "info"}) == [] and "info" in json.dumps(schema("tailer")["properties"])
    file = {"sink": "stdout", "sink_config": {"format": "RAW", "stream": "STDERR"}, "watch_mode": "POLL"}
    listener = {"name": "a", "port": 7001, "mode": "TCP", "cluster": {"endpoints": ["127.0.0.1:1"]}}
    assert errors("tailer", file) == [] and errors("ambassador", {"listeners": [listener]}) == []
    # What the schema lets through, the sidecar runs with: the same file, checked by the tailer.
    path = tmp_path / "tailer.yaml"
    path.write_text(yaml.safe_dump({**file, "log_level": "WARN", "checkpoint_dir": str(tmp_path)}))
    check = subprocess.run(
        [sys.executable, "-m", "sidecars.tailer", "--check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (check.returncode, check.stdout) == (0, "tailer: configuration is valid\n"), check.stderr
