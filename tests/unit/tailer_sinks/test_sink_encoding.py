"""Wire encodings: every line survives each format exactly, whatever its characters."""

from __future__ import annotations

import re

import orjson
import structlog
from hypothesis import example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from sidecars.tailer.sinks import Batch, Stream, load_sink
from sidecars.tailer.sinks.encode import ndjson, rfc3339_ns, rfc3339_us
from sidecars.tailer.sinks.loki import sanitize_label_name
from sidecars.tailer.sinks.otlp import any_value
from sidecars.tailer.sinks.syslog import sd_param_name, structured_data

# Decoded log text never holds lone surrogates (invalid UTF-8 is replaced when read).
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
# Quotes, backslashes and commas are what could break cutting an encoded list apart.
tricky = st.text(st.sampled_from(['"', "\\", ",", "]", "[", "\n", "\t", "\x00", "é", "€", "a", " "]), max_size=12)
lines_st = st.lists(st.one_of(text, tricky), max_size=30)
stamps_st = st.integers(min_value=0, max_value=4_102_444_800 * 10**9)


def sink(name: str, **config: object):  # type: ignore[no-untyped-def]
    cls = load_sink(name)
    return cls(cls.Settings(**config), structlog.get_logger(), CollectorRegistry())


def stamps(ts: int, n: int) -> list[int]:
    """Runs of equal times, as lines read together share theirs, and single ones."""
    return [ts + i // 3 if i < n // 2 else ts + i for i in range(n)]


def make(lines: list[str], ts: int, labels: dict[str, str] | None = None) -> Batch:
    return Batch([Stream("/l/a.log", {**(labels or {}), "path": "/l/a.log"}, lines, stamps(ts, len(lines)))])


@settings(max_examples=300, deadline=None)
@given(lines_st, stamps_st, st.dictionaries(text, text, max_size=3))
@example(['",', ""], 0, {})  # an escaped quote before `,"`: the encoded list cannot be cut at `","`
@example(['x","y', '\\",\\"', "\\"], 0, {})
def test_ndjson_round_trips_every_line(lines: list[str], ts: int, labels: dict[str, str]) -> None:
    body = ndjson(make(lines, ts, labels))
    assert body.endswith(b"\n") or not lines
    docs = [orjson.loads(x) for x in body.splitlines()]
    assert [d["message"] for d in docs] == lines
    assert all(d["labels"] == {**labels, "path": "/l/a.log"} for d in docs)
    assert [d["timestamp"] for d in docs] == [rfc3339_ns(t) for t in stamps(ts, len(lines))]


@settings(max_examples=200, deadline=None)
@given(lines_st, stamps_st)
@example(['a",', "b", '",', ""], 0)
def test_bulk_pairs_every_line(lines: list[str], ts: int) -> None:
    body = sink("elasticsearch", url="http://es:9200").encode(make(lines, ts))
    rows = [orjson.loads(x) for x in body.splitlines()]
    assert len(rows) == 2 * len(lines)
    assert all(set(a) == {"create"} for a in rows[0::2])
    assert [d["message"] for d in rows[1::2]] == lines
    assert [d["@timestamp"] for d in rows[1::2]] == [rfc3339_ns(t) for t in stamps(ts, len(lines))]


@settings(max_examples=200, deadline=None)
@given(lines_st, stamps_st)
def test_loki_and_otlp_keep_every_line(lines: list[str], ts: int) -> None:
    loki = orjson.loads(sink("loki", url="http://l/loki/api/v1/push").encode(make(lines, ts)))
    assert [v[1] for s in loki["streams"] for v in s["values"]] == lines
    otlp = orjson.loads(sink("otlp", url="http://o/v1/logs").encode(make(lines, ts)))
    records = [r for rl in otlp["resourceLogs"] for sl in rl["scopeLogs"] for r in sl["logRecords"]]
    assert [r["body"]["stringValue"] for r in records] == lines


@settings(max_examples=200, deadline=None)
@given(lines_st, stamps_st)
def test_syslog_octet_counting_frames_every_line(lines: list[str], ts: int) -> None:
    body = sink("syslog", hostname="h", structured_data_id=None).encode(make(lines, ts))
    messages, pos = [], 0
    while pos < len(body):
        space = body.index(b" ", pos)
        length = int(body[pos:space])
        messages.append(body[space + 1 : space + 1 + length])
        pos = space + 1 + length
    assert pos == len(body)
    stamp = re.compile(rb"^<14>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z h tailer - - - ")
    assert all(stamp.match(m) for m in messages)
    assert [stamp.sub(b"", m).decode() for m in messages] == lines


def test_timestamps() -> None:
    assert rfc3339_ns(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    assert rfc3339_us(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456Z"
    assert rfc3339_ns(5) == "1970-01-01T00:00:00.000000005Z"


def test_loki_label_names() -> None:
    assert sanitize_label_name("k8s.pod-name") == "k8s_pod_name"
    assert sanitize_label_name("9lives") == "_9lives"
    assert sanitize_label_name("") == "_"
    assert sanitize_label_name("ünï") == "_n_"
    assert sanitize_label_name("ok_Name1") == "ok_Name1"


def test_syslog_structured_data_escaping() -> None:
    sd = structured_data("labels@32473", {"a b=c]": 'x"y\\z]w', "path": "/p"})
    assert sd == '[labels@32473 a_b_c_="x\\"y\\\\z\\]w" path="/p"]'
    assert structured_data("labels@32473", {}) == "-"
    assert structured_data(None, {"a": "b"}) == "-"
    assert sd_param_name("x" * 40) == "x" * 32


def test_otlp_any_value() -> None:
    assert any_value({"a": [1, 2.5, None, False]}) == {
        "kvlistValue": {"values": [{"key": "a", "value": {"arrayValue": {"values": [
            {"intValue": "1"}, {"doubleValue": 2.5}, {}, {"boolValue": False}]}}}]}
    }  # fmt: skip
