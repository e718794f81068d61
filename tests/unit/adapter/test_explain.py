"""`/explain/<check>`'s document: the result vector, the selectors and what matched nothing, the bounds."""

from __future__ import annotations

from sidecars.adapter.evaluator import Evaluator, ScrapeReport
from sidecars.adapter.explain import MAX_LABELS, MAX_SERIES, MAX_TEXT, explain
from sidecars.adapter.rules import parse_rules

RULES = """
rules:
  - name: wide
    expr: 'big > 0'
  - name: ratio
    expr: sum(rate(errors_total[5m])) / sum(rate(requests_total{code="200"}[5m])) > 0.1
    recover: sum(rate(errors_total[5m])) < 1
  - name: scalar
    expr: vector(1) > 0
"""


def evaluator() -> Evaluator:
    ev = Evaluator(parse_rules(RULES, "x"))
    long = "v" * (MAX_TEXT * 3)
    many = tuple(sorted((f"l{i:02d}", "x") for i in range(MAX_LABELS + 10)))
    samples = [("big", (("i", str(i)), ("long", long)), float(i + 1), None) for i in range(MAX_SERIES * 3)]
    samples.append(("big", many, 1.0, None))
    samples.append(("errors_total", (), 5.0, None))
    ev.observe(ScrapeReport(t_ms=60_000, ok=True, samples=samples))
    return ev


def test_the_result_vector_is_shown_bounded() -> None:
    doc = explain(evaluator(), "wide")
    assert doc is not None
    result = doc["condition"]["result"]
    assert result["type"] == "vector" and result["series_total"] == MAX_SERIES * 3 + 1
    assert len(result["series"]) == MAX_SERIES
    first = result["series"][0]
    assert first["value"] == 1 and first["labels"]["i"] == "0"
    assert len(first["labels"]["long"]) == MAX_TEXT + 3  # cut, with "..."
    assert doc["evaluated_at_ms"] == 60_000 and doc["evaluated_at"] == "1970-01-01T00:01:00.000Z"
    assert doc["state"] == "firing" and doc["failing"] is True


def test_the_selector_that_matched_nothing_is_named() -> None:
    doc = explain(evaluator(), "ratio")
    assert doc is not None
    condition = doc["condition"]
    assert condition["result"] == {"type": "vector", "series_total": 0, "series": []}
    assert condition["selectors"] == [
        {"selector": "errors_total[300s]", "series_known": 1, "series_matched": 1},
        {"selector": 'requests_total{code="200"}[300s]', "series_known": 0, "series_matched": 0},
    ]
    assert condition["matched_nothing"] == ['requests_total{code="200"}[300s]']
    assert doc["recover"]["expr"] == "sum(rate(errors_total[5m])) < 1"


def test_a_scalar_a_scrape_and_an_unknown_check() -> None:
    ev = evaluator()
    assert explain(ev, "nosuch") is None
    scrape = explain(ev, "scrape")
    assert scrape is not None and scrape["state"] == "ok" and "condition" not in scrape
    doc = explain(ev, "scalar")
    assert doc is not None and doc["condition"]["selectors"] == [] and doc["condition"]["matched_nothing"] == []


def test_sorted_results_keep_prometheus_order_in_the_explanation_and_the_reason() -> None:
    # Scraped in an order that is neither ascending nor descending: the order shown is the engine's,
    # the one Prometheus gives, and the reason (what ?verbose prints) names the first series of it.
    ev = Evaluator(
        parse_rules(
            """
rules:
  - {name: worst, expr: 'sort_desc(lat > 0.5)'}
  - {name: best, expr: 'sort(lat)'}
  - {name: top, expr: 'topk(3, lat)'}
  - {name: bottom, expr: 'bottomk(2, lat)'}
""",
            "x",
        )
    )
    values = {"a": 0.7, "b": 2.5, "c": 0.1, "d": 1.2, "e": 0.9}
    samples = [("lat", (("pod", pod),), value, None) for pod, value in values.items()]
    ev.observe(ScrapeReport(t_ms=60_000, ok=True, samples=samples))

    def shown(name: str) -> list[str]:
        doc = explain(ev, name)
        assert doc is not None
        return [s["labels"]["pod"] for s in doc["condition"]["result"]["series"]]

    assert shown("worst") == ["b", "d", "e", "a"]
    assert shown("best") == ["c", "a", "e", "d", "b"]
    assert shown("top") == ["b", "d", "e"]
    assert shown("bottom") == ["c", "a"]
    verdict = ev.verdict
    assert verdict is not None
    assert verdict.by_name["worst"].reason == 'sort_desc(lat > 0.5) = 2.5{pod="b"} and 3 more series'
    assert verdict.by_name["bottom"].reason == 'bottomk(2, lat) = 0.1{pod="c"} and 1 more series'
