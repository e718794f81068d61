"""The sink contract: registry of sinks by name, settings rules, errors, metrics, log limiting."""

from __future__ import annotations

import email.utils
from pathlib import Path

import pytest
import structlog
from prometheus_client import CollectorRegistry
from pydantic import SecretStr, ValidationError

from sidecars.core.registry import PluginError
from sidecars.tailer.settings import TailerSettings
from sidecars.tailer.sinks import Batch, SendResult, Sink, Stream, known_sinks, load_sink
from sidecars.tailer.sinks.base import BUILTIN_SINKS
from sidecars.tailer.sinks.http_base import HttpSinkSettings, parse_retry_after


def register(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entries: str) -> None:
    """Install a distribution's metadata, as `pip install acme-sinks` would, with these entry points."""
    dist = tmp_path / "acme_sinks-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-sinks\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[sidecars.tailer.sinks]\n{entries}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_batch_length_counts_lines_of_every_stream() -> None:
    batch = Batch([Stream("a", {}, ["1", "2"], [1, 2]), Stream("b", {}, [], []), Stream("c", {}, ["3"], [3])])
    assert len(batch) == 3


def _records(batch: Batch) -> list[tuple[str, str, int, object]]:
    return [
        (s.path, line, ts, s.fields[i] if s.fields is not None else None)
        for s in batch.streams
        for i, (line, ts) in enumerate(zip(s.lines, s.timestamps_ns, strict=True))
    ]


@pytest.mark.parametrize("sizes", [[1, 1], [3], [2, 5, 1], [4, 0, 4], [7, 2]])
def test_split_halves_a_batch_in_order_cutting_a_stream_where_needed(sizes: list[int]) -> None:
    streams = [
        Stream(f"f{k}", {"path": f"f{k}"}, [f"{k}-{i}" for i in range(n)], [k * 100 + i for i in range(n)],
               [{"i": i} for i in range(n)] if k % 2 else None)
        for k, n in enumerate(sizes)
    ]  # fmt: skip
    batch = Batch(streams)
    first, second = batch.split()
    assert len(first) == len(batch) // 2 and len(first) + len(second) == len(batch)
    assert _records(first) + _records(second) == _records(batch)  # nothing lost, doubled or reordered
    assert all(s.labels == {"path": s.path} for s in first.streams + second.streams)


@pytest.mark.parametrize("name", sorted(BUILTIN_SINKS))
def test_builtin_sinks_keep_the_contract(name: str) -> None:
    cls = load_sink(name)
    assert issubclass(cls, Sink) and cls.name == name and cls.description
    assert cls.Settings.model_config.get("extra") == "forbid"
    for field, info in cls.Settings.model_fields.items():
        assert info.description, f"{name}.{field} has no description"
    with pytest.raises(ValidationError, match="no_such_option"):
        cls.Settings(**_minimal(name), no_such_option=1)


def _minimal(name: str) -> dict[str, object]:
    return {
        "http": {"url": "http://127.0.0.1:1/x"},
        "loki": {"url": "http://127.0.0.1:1/loki/api/v1/push"},
        "elasticsearch": {"url": "http://127.0.0.1:1"},
        "otlp": {"url": "http://127.0.0.1:1/v1/logs"},
        "file": {"path": "/tmp/x"},
    }.get(name, {})


def test_unknown_sink_lists_the_known_ones() -> None:
    with pytest.raises(LookupError) as err:
        load_sink("kafka")
    assert "'kafka'" in str(err.value)
    for name in ("elasticsearch", "file", "http", "loki", "otlp", "stdout", "syslog"):
        assert name in str(err.value)


async def test_company_sink_registered_by_entry_point_loads_by_name(tmp_path, monkeypatch) -> None:
    register(tmp_path, monkeypatch, "acme = tests.unit.tailer_sinks.acme_sink:AcmeSink")
    assert "acme" in known_sinks()
    cls = load_sink("acme")
    assert cls.__name__ == "AcmeSink"
    registry = CollectorRegistry()
    sink = cls(cls.Settings(prefix="# "), structlog.get_logger(), registry)
    await sink.open()
    result = await sink.send(Batch([Stream("/l/a.log", {"path": "/l/a.log"}, ["x", "y"], [1, 2])]))
    await sink.close()
    assert result == SendResult()
    assert sink.received == ["# x", "# y"]  # type: ignore[attr-defined]
    assert registry.get_sample_value("tailer_sink_requests_total", {"sink": "acme", "outcome": "ok"}) == 1


def test_entry_point_cannot_take_the_name_of_a_builtin(tmp_path, monkeypatch) -> None:
    register(tmp_path, monkeypatch, "stdout = tests.unit.tailer_sinks.acme_sink:AcmeSink")
    with pytest.raises(PluginError) as err:
        load_sink("stdout")
    assert "sink 'stdout' is provided more than once" in str(err.value)
    assert "built in (sidecars.tailer.sinks.stdout:StdoutSink)" in str(err.value)
    assert "acme-sinks 1.0 (tests.unit.tailer_sinks.acme_sink:AcmeSink)" in str(err.value)
    assert load_sink("file").name == "file"  # the other sinks are unaffected
    with pytest.raises(ValidationError, match="sink 'stdout' is provided more than once"):
        TailerSettings(sink="stdout")  # refused with the rest of the config, before anything starts


def test_entry_point_that_is_not_a_sink_is_a_clear_error(tmp_path, monkeypatch) -> None:
    register(tmp_path, monkeypatch, "bad = tests.unit.tailer_sinks.acme_sink:NotASink\nbroken = acme_missing:Sink")
    with pytest.raises(PluginError, match=r"sink 'bad' .* is not a subclass of sidecars\.tailer\.sinks\.base\.Sink"):
        load_sink("bad")
    with pytest.raises(PluginError, match=r"'broken' \(acme-sinks 1.0 .*cannot be loaded: ModuleNotFoundError"):
        load_sink("broken")


@pytest.mark.parametrize(
    ("header", "expected"),
    [("120", 120.0), ("0", 0.0), (" 5 ", 5.0), (None, None), ("", None), ("soon", None), ("-3", None),
     ("1.5", None)],
)  # fmt: skip
def test_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 0.0  # in the past: retry now
    assert parse_retry_after("Sun Nov  6 08:49:37 1994", now=now) is None  # asctime has no zone


def test_http_settings_checks_and_secrets() -> None:
    with pytest.raises(ValidationError, match="http:// or https://"):
        HttpSinkSettings(url="ftp://x/y")
    with pytest.raises(ValidationError, match="must not hold credentials") as err:
        HttpSinkSettings(url="https://ingest:pa55word@logs.example/x")
    assert "pa55word" not in err.value.errors()[0]["msg"]
    with pytest.raises(ValidationError, match="not both"):
        HttpSinkSettings(url="http://x", basic_auth_username="u", basic_auth_password="p", bearer_token="t")
    with pytest.raises(ValidationError, match="basic_auth_username is required"):
        HttpSinkSettings(url="http://x", basic_auth_password="p")
    with pytest.raises(ValidationError, match="go together"):
        HttpSinkSettings(url="https://x", tls_cert_file="/c.pem")
    s = HttpSinkSettings(url="http://x", bearer_token="tok-secret", secret_headers={"X-Key": "key-secret"})
    assert isinstance(s.bearer_token, SecretStr)
    shown = repr(s) + s.model_dump_json()
    assert "tok-secret" not in shown and "key-secret" not in shown


def test_two_sinks_share_one_registry() -> None:
    registry = CollectorRegistry()
    a = load_sink("stdout")(load_sink("stdout").Settings(), structlog.get_logger(), registry)
    b = load_sink("file")(load_sink("file").Settings(path="/tmp/never-opened"), structlog.get_logger(), registry)
    with a.metrics.request() as req:
        req.result = SendResult(rejected=2, reason="x")
    with b.metrics.request() as req:
        req.result = SendResult()
    assert registry.get_sample_value("tailer_sink_requests_total", {"sink": "stdout", "outcome": "partial"}) == 1
    assert registry.get_sample_value("tailer_sink_rejected_lines_total", {"sink": "stdout"}) == 2
    assert registry.get_sample_value("tailer_sink_requests_total", {"sink": "file", "outcome": "ok"}) == 1


def test_recurring_warning_logged_once_per_interval() -> None:
    sink = load_sink("stdout")(load_sink("stdout").Settings(), structlog.get_logger(), CollectorRegistry())
    with structlog.testing.capture_logs() as logs:
        for _ in range(100):
            sink.warn_limited("items_rejected", interval_secs=3600, count=1)
        sink.warn_limited("other_problem", interval_secs=3600)
    assert [e["event"] for e in logs] == ["items_rejected", "other_problem"]
    assert logs[0]["sink"] == "stdout" and logs[0]["suppressed_since_last"] == 0
