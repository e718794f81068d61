"""docs/tailer-sinks.md stays true: every option documented, the company-sink example works."""

from __future__ import annotations

import re
import sys
import tomllib
import types
from pathlib import Path

import orjson
import pytest

from sidecars.tailer.sinks import Sink
from sidecars.tailer.sinks.base import BUILTIN_SINKS, load_sink
from tests.integration.tailer_sinks.sink_receivers import Received, make_batch

DOC = Path(__file__).resolve().parents[3] / "docs" / "tailer-sinks.md"


@pytest.mark.parametrize("name", sorted(BUILTIN_SINKS))
def test_every_option_is_documented(name: str) -> None:
    text = DOC.read_text()
    assert f"## {name}\n" in text
    missing = [f for f in load_sink(name).Settings.model_fields if f"`{f}`" not in text]
    assert missing == []


def example_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The documented company sink, installed as the package the docs describe."""
    code = re.search(r"<!-- example: company-sink -->\n```python\n(.*?)```", DOC.read_text(), re.S)
    assert code is not None
    pkg = tmp_path / "acme_sinks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "intake.py").write_text(code.group(1))
    toml = re.search(r'```toml\n(\[project.entry-points."sidecars.tailer.sinks"\]\n.*?)```', DOC.read_text(), re.S)
    assert toml is not None
    entries = tomllib.loads(toml.group(1))["project"]["entry-points"]["sidecars.tailer.sinks"]
    dist = tmp_path / "acme_sinks-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-sinks\nVersion: 1.0\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entries.items())
    (dist / "entry_points.txt").write_text("[sidecars.tailer.sinks]\n" + lines)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "acme_sinks", raising=False)
    monkeypatch.delitem(sys.modules, "acme_sinks.intake", raising=False)
    import acme_sinks.intake  # type: ignore[import-not-found]

    return acme_sinks.intake  # type: ignore[no-any-return]


async def test_documented_company_sink_works(tmp_path, monkeypatch, start_receiver, log, registry) -> None:
    example_module(tmp_path, monkeypatch)
    cls = load_sink("acme-intake")
    assert issubclass(cls, Sink)

    def validate(rec: Received) -> dict[str, object]:
        assert rec.headers["Content-Type"] == "application/json"
        return orjson.loads(rec.body)  # type: ignore[no-any-return]

    def answer(rec: Received, parsed: object) -> tuple[int, dict[str, str], bytes]:
        return 200, {"Content-Type": "application/json"}, b'{"dropped": 1}'

    rx = await start_receiver(validate, answer)
    sink = cls(cls.Settings(url=rx.url + "/intake", service="shop", gzip=True), log, registry)
    await sink.open()
    result = await sink.send(make_batch(("/l/a.log", ["one", "two"]), labels={"pod": "web-0"}))
    await sink.close()
    assert rx.violations == []
    assert rx.requests[0].headers["Content-Encoding"] == "gzip"
    body = rx.parsed[0]
    assert body["service"] == "shop"
    assert [(e["file"], e["line"], e["pod"]) for e in body["entries"]] == [
        ("/l/a.log", "one", "web-0"),
        ("/l/a.log", "two", "web-0"),
    ]
    assert result.rejected == 1 and result.reason == "intake_dropped"
