"""The exposition parser: the format's corners, errors with line numbers, the family filter, and
agreement with prometheus_client's parser on generated pages and on a real node_exporter page."""

from __future__ import annotations

import math
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from sidecars.adapter.exposition import ParseError, family_names, parse
from sidecars.testing import free_port

DATA = Path(__file__).parents[2] / "data" / "adapter"

Normal = tuple[str, tuple[tuple[str, str], ...], str, float | None]


def _norm_value(value: float) -> str:
    # NaN != NaN: compare a canonical text of each value instead.
    return "NaN" if math.isnan(value) else repr(float(value))


def ours(text: str, **kwargs: object) -> list[Normal]:
    out = []
    for name, labels, value, ts in parse(text, **kwargs).samples:  # type: ignore[arg-type]
        out.append((name, labels, _norm_value(value), None if ts is None else ts / 1000))
    return out


def theirs(text: str) -> list[Normal]:
    """prometheus_client's samples, deduplicated as Prometheus ingests them (first sample wins)."""
    out, seen = [], set()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            if key in seen:
                continue
            seen.add(key)
            out.append((s.name, key[1], _norm_value(s.value), s.timestamp))
    return out


# --- the format's corners ---------------------------------------------------------------------------------


def test_types_help_and_samples() -> None:
    page = (
        "# HELP http_requests_total Requests.\\nSecond line \\\\ done\n"
        "# TYPE http_requests_total counter\n"
        'http_requests_total{method="GET",code="200"} 1027 1395066363000\n'
        'http_requests_total{code="400",method="POST"} 3\n'
        "\n"
        "# A free comment\n"
        "# TYPE latency histogram\n"
        'latency_bucket{le="0.1"} 1\n'
        'latency_bucket{le="+Inf"} 2\n'
        "latency_sum 0.3\n"
        "latency_count 2\n"
        "# TYPE rpc summary\n"
        'rpc{quantile="0.99"} 3.1e-3\n'
        "plain_untyped -Inf\n"
        "not_a_number NaN\n"
        "positive +Inf\n"
    )
    result = parse(page)
    assert result.types == {"http_requests_total": "counter", "latency": "histogram", "rpc": "summary"}
    assert result.help["http_requests_total"] == "Requests.\nSecond line \\ done"
    samples = result.samples
    assert samples[0] == ("http_requests_total", (("code", "200"), ("method", "GET")), 1027.0, 1395066363000)
    assert samples[1] == ("http_requests_total", (("code", "400"), ("method", "POST")), 3.0, None)
    assert samples[3] == ("latency_bucket", (("le", "+Inf"),), 2.0, None)
    assert samples[6] == ("rpc", (("quantile", "0.99"),), 0.0031, None)
    assert samples[7][2] == -math.inf and samples[9][2] == math.inf and math.isnan(samples[8][2])


def test_escapes_and_special_characters_in_label_values() -> None:
    page = 'm{a="x\\"y",b="back\\\\slash",c="new\\nline",d="} , = #",e="\\t kept"} 1\n'
    ((name, labels, value, _),) = parse(page).samples
    assert dict(labels) == {"a": 'x"y', "b": "back\\slash", "c": "new\nline", "d": "} , = #", "e": "\\t kept"}
    assert (name, value) == ("m", 1.0)


def test_whitespace_trailing_comma_and_empty_label_set() -> None:
    page = 'a{x="1",} 1\nb{} 2\nc\t3\n  d 4  \ne { x = "1" , y="2" } 5\n'
    assert parse(page).samples == [
        ("a", (("x", "1"),), 1.0, None),
        ("b", (), 2.0, None),
        ("c", (), 3.0, None),
        ("d", (), 4.0, None),
        ("e", (("x", "1"), ("y", "2")), 5.0, None),
    ]


def test_the_general_label_scan_takes_the_same_forms() -> None:
    # A timestamp sends every line through the general path, which scans the label block pair by pair.
    page = 'a{x="1",} 1 7\nb{} 2 7\ne { x = "1" , y="2" } 5 7\nf{y="\\"}",x="a\\\\"} 6 7\n'
    assert parse(page).samples == [
        ("a", (("x", "1"),), 1.0, 7),
        ("b", (), 2.0, 7),
        ("e", (("x", "1"), ("y", "2")), 5.0, 7),
        ("f", (("x", "a\\"), ("y", '"}')), 6.0, 7),
    ]


@pytest.mark.parametrize(
    "block",
    [
        "{,}",
        '{a="1",,}',
        '{a="1" b="2"}',
        '{a="1"',
        '{a="1"' + " " * 50_000,
        '{a="1",' + " " * 50_000 + "b}",
        "{" + " " * 50_000,
    ],
)
def test_malformed_label_blocks_are_rejected(block: str) -> None:
    for suffix in (" 1\n", " 1 7\n"):
        with pytest.raises(ParseError, match="invalid label set"):
            parse("x" + block + suffix)


def test_a_line_spanning_many_pieces_is_parsed_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    import sidecars.adapter.exposition as exposition

    monkeypatch.setattr(exposition, "SLICE_CHARS", 10)
    value = "1" * 5000
    page = f'a 1\nlong_{"x" * 3000}{{l="{"v" * 3000}"}} {value}\nz 2'
    samples = parse(page).samples
    assert [(s[0][:6], s[2]) for s in samples] == [("a", 1.0), ("long_x", float(value)), ("z", 2.0)]
    assert samples[1][1] == (("l", "v" * 3000),)


def test_validation_memos_stay_bounded_whatever_the_pages_hold() -> None:
    import sidecars.adapter.exposition as exposition

    exposition.reset_memos()
    # Names and skeletons over the per-entry bound are validated but not kept.
    parse(f'{"n" * (exposition.MEMO_KEY_CHARS + 1)} 1\n{"s" * 2000}{{a="1"}} 1\n')
    assert not exposition._VALID_NAMES and not exposition._SCHEMAS
    # A target inventing new names on every scrape: the memos start afresh at their character budget.
    name_chars = exposition.MEMO_KEY_CHARS - 40
    for scrape in range(2 * exposition.MEMO_CHARS // (100 * name_chars)):
        parse("".join(f'm{scrape:05d}_{i:03d}_{"x" * name_chars}{{a="1"}} 1\n' for i in range(100)))
        kept = sum(map(len, exposition._VALID_NAMES)) + sum(map(len, exposition._SCHEMAS))
        assert kept <= exposition.MEMO_CHARS
    assert exposition._VALID_NAMES  # still remembering, not switched off
    exposition.reset_memos()


def test_duplicate_series_keep_the_first_sample() -> None:
    page = 'a{x="1",y="2"} 1\na{y="2",x="1"} 2\nb 3\nb 4\na{x="1",y="3"} 5\n'
    result = parse(page)
    assert [(n, v) for n, _, v, _ in result.samples] == [("a", 1.0), ("b", 3.0), ("a", 5.0)]
    assert result.duplicates == 2


def test_openmetrics_timestamps_in_seconds_exemplars_and_eof() -> None:
    page = (
        "# TYPE foo counter\n"
        "# UNIT foo seconds\n"
        "# HELP foo Help.\n"
        'foo_total{a="b"} 17.0 1520879607.789 # {trace_id="KOO5S4vxi0o"} 0.67\n'
        "foo_created 1520430000.123\n"
        "# TYPE h histogram\n"
        'h_bucket{le="1"} 0 # {trace_id="x"} 0.5 123.4\n'
        "# EOF\n"
    )
    result = parse(page, openmetrics=True)
    assert result.samples == [
        ("foo_total", (("a", "b"),), 17.0, 1520879607789),
        ("foo_created", (), 1520430000.123, None),
        ("h_bucket", (("le", "1"),), 0.0, None),
    ]
    assert result.types == {"foo": "counter", "h": "histogram"}


@pytest.mark.parametrize(
    ("page", "line", "message"),
    [
        ("ok 1\nbad-name 1\n", 2, "invalid metric name"),
        ('ok 1\n\nx{a="1" 2\n', 3, "invalid label set"),
        ('x{a="1",a="2"} 1\n', 1, "duplicate label name"),
        ("x one\n", 1, "invalid value"),
        ("x 1_000\n", 1, "invalid value"),
        ("x 1 2 3\n", 1, "unexpected text"),
        ("x 1 1.5\n", 1, "invalid timestamp"),
        ("x\n", 1, "missing value"),
        ("# TYPE x gauge\n# TYPE x counter\n", 2, "second TYPE"),
        ("# TYPE x sometype\n", 1, "unknown metric type"),
        ('x{a="unterminated} 1\n', 1, "invalid label set"),
        ('x{1a="v"} 1\n', 1, "invalid label set"),
    ],
)
def test_errors_name_the_line(page: str, line: int, message: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse(page)
    assert caught.value.line == line
    assert message in caught.value.message
    assert str(caught.value).startswith(f"line {line}: ")


def test_openmetrics_requires_eof() -> None:
    with pytest.raises(ParseError, match="EOF"):
        parse("a 1\n", openmetrics=True)
    with pytest.raises(ParseError, match="not OpenMetrics"):
        parse("# random comment\na 1\n# EOF\n", openmetrics=True)


# --- the family filter --------------------------------------------------------------------------------------


def test_family_names_cover_the_whole_family() -> None:
    assert family_names(["latency_bucket"]) >= {"latency", "latency_bucket", "latency_sum", "latency_count"}
    assert family_names(["up"]) >= {"up", "up_total"}


def test_filter_keeps_only_wanted_families_and_matches_a_full_parse() -> None:
    page = (DATA / "node_exporter.prom").read_text()
    wanted = family_names(["node_cpu_seconds_total", "go_gc_duration_seconds", "node_load1"])
    filtered = parse(page, families=wanted).samples
    full = [s for s in parse(page).samples if s[0] in wanted]
    assert filtered == full
    assert {s[0] for s in filtered} == {
        "node_cpu_seconds_total", "go_gc_duration_seconds", "go_gc_duration_seconds_sum",
        "go_gc_duration_seconds_count", "node_load1",
    }  # fmt: skip
    # node_load15 shares the prefix of node_load1 and must not slip through.
    assert all(s[0] != "node_load15" for s in filtered)


def test_filter_skips_bad_lines_of_other_families_but_reports_wanted_ones() -> None:
    page = "other{{{ garbage\nwanted 1\nwanted_total 2\n"
    assert parse(page, families={"wanted"}).samples == [("wanted", (), 1.0, None)]
    with pytest.raises(ParseError) as caught:
        parse("a 1\nb 2\nwanted x\n", families={"wanted"})
    assert caught.value.line == 3


def test_filter_with_indented_lines_falls_back_to_the_line_loop() -> None:
    page = "a 1\n  wanted 2\n"
    assert parse(page, families={"wanted"}).samples == [("wanted", (), 2.0, None)]


@pytest.mark.parametrize("indent", ["", "  "])
def test_the_lines_a_filter_skips_unchecked_are_counted(indent: str, monkeypatch: pytest.MonkeyPatch) -> None:
    page = f"# TYPE other gauge\n{indent}other{{{{{{ garbage\nwanted 1\n\nother 3\nwanted_total 2\n"
    with pytest.raises(ParseError):
        parse(page)
    filtered = parse(page, families={"wanted"})
    assert filtered.samples == [("wanted", (), 1.0, None)]
    # The garbage, `other 3` and `wanted_total`: sample lines of families not asked for, in either path
    # (the indented page takes the line loop), and whatever the pieces the page arrives in.
    assert filtered.unchecked_lines == 3
    for size in (5, 7, 11):
        monkeypatch.setattr("sidecars.adapter.exposition.SLICE_CHARS", size)
        assert parse(page, families={"wanted"}).unchecked_lines == 3


def test_label_cache_gives_the_same_samples() -> None:
    page = (DATA / "node_exporter.prom").read_text()
    cache: dict = {}
    first = parse(page, label_cache=cache).samples
    assert cache
    assert parse(page, label_cache=cache).samples == first == parse(page).samples


# --- agreement with prometheus_client -----------------------------------------------------------------------

_names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
_label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,6}", fullmatch=True).filter(lambda n: not n.startswith("__"))
_label_values = st.text(alphabet='ab z"\\\n\t{},=#é€:', max_size=8)
_values = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: "NaN" if math.isnan(f) else ("+Inf" if f > 0 else "-Inf") if math.isinf(f) else repr(f)
    ),
    st.sampled_from(["1e3", "-0.5E-2", ".5", "+7", "0"]),
)
_timestamps = st.one_of(st.none(), st.integers(min_value=-(10**13), max_value=10**13))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@st.composite
def _pages(draw: st.DrawFn) -> str:
    lines: list[str] = []
    for index in range(draw(st.integers(min_value=1, max_value=6))):
        base = f"{draw(_names)}_{index}"
        kind = draw(st.sampled_from(["counter", "gauge", "untyped", "histogram", "summary", None]))
        name = base + "_total" if kind == "counter" else base
        if draw(st.booleans()):
            help_text = draw(st.text(alphabet="ab \\é", max_size=10)).replace("\\", "\\\\")
            lines.append(f"# HELP {name} {help_text}".rstrip())
        if kind is not None:
            lines.append(f"# TYPE {name} {kind}")
        suffixes = {"histogram": ["_bucket", "_sum", "_count"], "summary": ["", "_sum", "_count"]}.get(kind or "", [""])
        for _ in range(draw(st.integers(min_value=1, max_value=5))):
            suffix = draw(st.sampled_from(suffixes))
            labels = draw(st.dictionaries(_label_names, _label_values, max_size=3))
            if suffix == "_bucket":
                labels["le"] = draw(st.sampled_from(["0.1", "1", "+Inf"]))
            if kind == "summary" and suffix == "":
                labels["quantile"] = draw(st.sampled_from(["0.5", "0.99"]))
            pairs = list(labels.items())
            if draw(st.booleans()):
                pairs.reverse()
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
            series = f"{name}{suffix}{{{text}}}" if text or draw(st.booleans()) else f"{name}{suffix}"
            ts = draw(_timestamps)
            sep = draw(st.sampled_from([" ", "\t", "  "]))
            lines.append(f"{series}{sep}{draw(_values)}" + ("" if ts is None else f" {ts}"))
        if draw(st.booleans()):
            lines.append("")
    return "\n".join(lines) + "\n"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_pages())
def test_agrees_with_prometheus_client_on_generated_pages(page: str) -> None:
    assert ours(page) == theirs(page)


@settings(max_examples=100, deadline=None)
@given(_pages(), st.data())
def test_filtered_parse_is_the_full_parse_restricted(page: str, data: st.DataObject) -> None:
    full = parse(page).samples
    names = sorted({s[0] for s in full})
    wanted = family_names(data.draw(st.lists(st.sampled_from(names), max_size=3))) if names else frozenset()
    expected = [(n, labels, _norm_value(v), ts) for n, labels, v, ts in full if n in wanted]
    assert [(n, labels, _norm_value(v), ts) for n, labels, v, ts in parse(page, families=wanted).samples] == expected


def test_agrees_with_prometheus_client_on_the_saved_node_exporter_page() -> None:
    page = (DATA / "node_exporter.prom").read_text()
    got = ours(page)
    assert len(got) > 300
    assert got == theirs(page)


@pytest.fixture
def node_exporter_page() -> Iterator[str]:
    """A fresh page from a real node_exporter started on a free 127.0.0.1 port."""
    port = free_port()
    proc = subprocess.Popen(
        ["/usr/bin/prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    yield response.read().decode()
                    return
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(10)


def test_agrees_with_prometheus_client_on_a_live_node_exporter_page(node_exporter_page: str) -> None:
    got = ours(node_exporter_page)
    assert len(got) > 300
    assert got == theirs(node_exporter_page)


def test_help_and_type_with_odd_whitespace() -> None:
    result = parse("# HELP\tx\tsome  help \n# TYPE x   gauge \nx 1\n")
    assert result.help == {"x": "some  help"}
    assert result.types == {"x": "gauge"}
    with pytest.raises(ParseError, match="invalid metric name"):
        parse("# HELP 1x help\n")


def test_line_numbers_hold_across_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    import sidecars.adapter.exposition as exposition

    monkeypatch.setattr(exposition, "SLICE_CHARS", 10)
    page = "".join(f"m{i} {i}\n" for i in range(50)) + "broken{ 1\n" + "z 1\n"
    with pytest.raises(ParseError) as caught:
        parse(page)
    assert caught.value.line == 51
    assert [s[2] for s in parse(page[: page.index("broken")]).samples] == [float(i) for i in range(50)]


# --- OpenMetrics agreement ------------------------------------------------------------------------------------


def theirs_openmetrics(text: str) -> list[tuple[str, tuple[tuple[str, str], ...], str, int | None]]:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families

    out = []
    for family in om_families(text):
        for s in family.samples:
            ts = None if s.timestamp is None else s.timestamp.sec * 1000 + s.timestamp.nsec // 1_000_000
            out.append((s.name, tuple(sorted(s.labels.items())), _norm_value(s.value), ts))
    return out


def _om_seconds(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}"


@st.composite
def _om_pages(draw: st.DrawFn) -> str:
    lines: list[str] = []
    for index in range(draw(st.integers(min_value=1, max_value=4))):
        base = f"{draw(_names)}_{index}"
        kind = draw(st.sampled_from(["counter", "gauge", "histogram", "unknown"]))
        lines.append(f"# TYPE {base} {kind}")
        if draw(st.booleans()):
            lines.append(f"# HELP {base} {draw(st.text(alphabet='ab é', max_size=8))}".rstrip())
        label_sets = draw(st.lists(st.dictionaries(_label_names, _label_values, max_size=2), min_size=1, max_size=3))
        seen: set[tuple[tuple[str, str], ...]] = set()
        for labels in label_sets:
            labels.pop("le", None)
            key = tuple(sorted(labels.items()))
            if key in seen:
                continue
            seen.add(key)
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            ts = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=2 * 10**12)))
            stamp = "" if ts is None else f" {_om_seconds(ts)}"
            value = draw(st.integers(min_value=0, max_value=10**6))
            exemplar = f' # {{trace_id="{draw(_names)}"}} 0.5' if draw(st.booleans()) else ""
            if kind == "counter":
                lines.append(f"{base}_total{{{text}}} {value}{stamp}{exemplar}")
            elif kind == "histogram":
                sep = "," if text else ""
                lines.append(f'{base}_bucket{{{text}{sep}le="1.0"}} {value}{stamp}{exemplar}')
                lines.append(f'{base}_bucket{{{text}{sep}le="+Inf"}} {value}{stamp}')
                lines.append(f"{base}_count{{{text}}} {value}{stamp}")
                lines.append(f"{base}_sum{{{text}}} {value}.5{stamp}")
            else:
                lines.append(f"{base}{{{text}}} {draw(_values)}{stamp}")
    return "\n".join(lines) + "\n# EOF\n"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(_om_pages())
def test_agrees_with_prometheus_client_on_generated_openmetrics_pages(page: str) -> None:
    from hypothesis import assume

    try:
        expected = theirs_openmetrics(page)
    except ValueError:
        assume(False)
        return
    got = [(n, labels, _norm_value(v), ts) for n, labels, v, ts in parse(page, openmetrics=True).samples]
    assert got == expected  # timestamps compared in whole milliseconds


def test_duplicates_with_caches_kept_between_scrapes() -> None:
    from sidecars.adapter.exposition import parse_pieces

    page = 'a{x="1",y="2"} 1\na{y="2",x="1"} 2\nb 3\nb 4\na{x="1",y="3"} 5\n'
    cache: dict = {}
    seen: dict = {}
    for _ in range(3):  # every scrape finds the same two duplicates, not more
        result = parse_pieces([page[:7], page[7:]], label_cache=cache, series_seen=seen)
        assert [(n, v) for n, _, v, _ in result.samples] == [("a", 1.0), ("b", 3.0), ("a", 5.0)]
        assert result.duplicates == 2
