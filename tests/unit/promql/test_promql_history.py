"""History: staleness as Prometheus marks it, retention that bounds memory, explicit timestamps."""

from __future__ import annotations

import math

import pytest

from sidecars.adapter.promql import History, InstantVector, PromQLError, Scalar, StringValue, evaluate, parse_expr
from sidecars.adapter.promql.history import STALE_NAN, is_stale


def values(history: History, text: str, t_ms: int) -> dict[tuple[tuple[str, str], ...], float]:
    result = evaluate(parse_expr(text), history, t_ms)
    assert isinstance(result, InstantVector)
    return {s.labels: s.value for s in result.samples}


A = (("pod", "a"),)
B = (("pod", "b"),)
NAME_A = (("__name__", "m"), ("pod", "a"))
NAME_B = (("__name__", "m"), ("pod", "b"))


def test_instant_selector_takes_latest_sample_within_lookback() -> None:
    h = History(retention_ms=600_000, lookback_delta_ms=300_000)
    h.append_scrape(10_000, [("m", A, 1.0, None)])
    h.append_scrape(20_000, [("m", A, 2.0, None)])
    assert values(h, "m", 9_999) == {}
    assert values(h, "m", 10_000) == {NAME_A: 1.0}
    assert values(h, "m", 19_999) == {NAME_A: 1.0}
    assert values(h, "m", 20_000 + 300_000) == {NAME_A: 2.0}  # the lookback window is closed
    assert values(h, "m", 20_000 + 300_001) == {}


def test_series_missing_from_a_scrape_turns_stale_at_that_scrape() -> None:
    h = History(retention_ms=600_000)
    h.append_scrape(0, [("m", A, 1.0, None), ("m", B, 5.0, None)])
    h.append_scrape(15_000, [("m", A, 2.0, None)])
    assert values(h, "m", 14_999) == {NAME_A: 1.0, NAME_B: 5.0}
    assert values(h, "m", 15_000) == {NAME_A: 2.0}  # b is stale at once, not 5 minutes later
    # The marker never counts as a sample in a range.
    assert values(h, "count_over_time(m[1m])", 15_000) == {A: 2.0, B: 1.0}
    h.append_scrape(30_000, [("m", A, 3.0, None), ("m", B, 6.0, None)])
    assert values(h, "m", 30_000) == {NAME_A: 3.0, NAME_B: 6.0}
    assert values(h, "changes(m[1m])", 30_000) == {A: 2.0, B: 1.0}


def test_failed_scrape_marks_everything_stale() -> None:
    h = History(retention_ms=600_000)
    h.append_scrape(0, [("m", A, 1.0, None), ("m", B, 5.0, None)])
    h.mark_stale(15_000)
    assert values(h, "m", 14_000) == {NAME_A: 1.0, NAME_B: 5.0}
    assert values(h, "m", 15_000) == {}
    assert values(h, 'absent(m{pod="a"})', 15_000) == {A: 1.0}
    h.mark_stale(30_000)  # a second failure adds nothing
    assert h.series_count == 2
    h.append_scrape(45_000, [("m", A, 7.0, None)])
    assert values(h, "m", 45_000) == {NAME_A: 7.0}


def test_a_nan_from_the_page_is_a_value_not_a_staleness_marker() -> None:
    h = History(retention_ms=600_000)
    h.append_scrape(0, [("m", A, math.nan, None)])
    (value,) = values(h, "m", 1000).values()
    assert math.isnan(value) and not is_stale(value)
    assert is_stale(STALE_NAN) and not is_stale(math.nan) and not is_stale(1.0)


def test_explicit_timestamps_are_kept_and_not_tracked_for_staleness() -> None:
    h = History(retention_ms=600_000)
    h.append_scrape(10_000, [("m", A, 1.0, 4_000), ("m", B, 2.0, None)])
    h.append_scrape(20_000, [("m", B, 3.0, None)])
    got = values(h, "timestamp(m)", 20_000)
    assert got == {A: 4.0, B: 20.0}  # a's sample keeps its own time and is not marked stale
    # Older or equal timestamps are dropped, as Prometheus rejects out-of-order samples.
    h.append_scrape(30_000, [("m", A, 9.0, 3_000), ("m", A, 9.0, 4_000), ("m", B, 4.0, None)])
    assert values(h, "m", 30_000)[NAME_A] == 1.0


def test_duplicate_series_in_one_scrape_keeps_the_first() -> None:
    h = History(retention_ms=600_000)
    h.append_scrape(0, [("m", A, 1.0, None), ("m", A, 2.0, None)])
    assert values(h, "m", 0) == {NAME_A: 1.0}


def test_empty_label_values_are_no_labels() -> None:
    h = History(retention_ms=600_000)
    h.append_scrape(0, [("m", (("env", ""), ("pod", "a")), 1.0, None)])
    assert values(h, "m", 0) == {NAME_A: 1.0}
    assert values(h, 'm{env=""}', 0) == {NAME_A: 1.0}


def test_labels_are_normalised_once_per_series() -> None:
    h = History(retention_ms=600_000)
    h.append_scrape(0, [("m", (("pod", "a"), ("__name__", "m"), ("app", "x")), 1.0, None)])
    assert values(h, "m", 0) == {(("__name__", "m"), ("app", "x"), ("pod", "a")): 1.0}


def test_retention_bounds_memory_and_forgets_dead_series() -> None:
    h = History(retention_ms=60_000)
    for i in range(2000):
        t = i * 1000
        page = [("m", A, float(i), None)]
        if i < 100:
            page.append(("m", B, float(i), None))
        h.append_scrape(t, page)
    series = {s.labels: s for s in h.all_series()}
    kept = series[NAME_A]
    assert len(kept.ts) <= 60 * 1.25 + 2  # retention plus the trimming slack
    assert kept.ts[-1] == 1_999_000
    assert NAME_B not in series and h.series_count == 1
    # Everything a 1m window needs is still there.
    assert values(h, "count_over_time(m[1m])", 1_999_000) == {A: 61.0}


def test_retention_can_grow() -> None:
    h = History(retention_ms=10_000)
    h.set_retention_ms(120_000)
    for i in range(100):
        h.append_scrape(i * 1000, [("m", A, float(i), None)])
    assert values(h, "count_over_time(m[100s])", 99_000) == {A: 100.0}
    with pytest.raises(ValueError):
        h.set_retention_ms(0)


def test_result_types() -> None:
    h = History(retention_ms=60_000)
    h.append_scrape(0, [("m", A, 1.0, None)])
    assert evaluate(parse_expr("1 + 1"), h, 0) == Scalar(2.0)
    assert evaluate(parse_expr('"text"'), h, 0) == StringValue("text")
    with pytest.raises(PromQLError, match="range vector"):
        evaluate(parse_expr("m[1m]"), h, 0)


def test_evaluation_errors_are_promql_errors() -> None:
    h = History(retention_ms=60_000)
    h.append_scrape(0, [("m", A, 1.0, None), ("m", B, 2.0, None), ("n", (), 1.0, None)])
    with pytest.raises(PromQLError, match="many-to-many matching not allowed"):
        evaluate(parse_expr("n + on() m"), h, 0)
    with pytest.raises(PromQLError, match="many-to-one matching must be explicit"):
        evaluate(parse_expr("m + on() n"), h, 0)
    with pytest.raises(PromQLError, match="same labelset"):
        evaluate(parse_expr('label_replace(m, "pod", "x", "", "")'), h, 0)
    assert values(h, "m + on() group_left n", 0) == {A: 2.0, B: 3.0}


def test_selection_cache_sees_new_series() -> None:
    h = History(retention_ms=60_000)
    h.append_scrape(0, [("m", A, 1.0, None)])
    assert set(values(h, "m", 0)) == {NAME_A}
    h.append_scrape(1000, [("m", A, 1.0, None), ("m", B, 1.0, None)])
    assert set(values(h, "m", 1000)) == {NAME_A, NAME_B}


def test_subqueries_with_too_many_steps_are_refused() -> None:
    h = History(retention_ms=60_000)
    h.append_scrape(0, [("m", A, 1.0, None)])
    with pytest.raises(PromQLError, match="at most 11000"):
        evaluate(parse_expr("max_over_time(m[1d:1s])"), h, 0)
    assert values(h, "max_over_time(m[1h:1s])", 0) == {A: 1.0}
