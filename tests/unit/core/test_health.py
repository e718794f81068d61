"""The probe endpoints' logic: lifecycle checks, plugin checks, rendering as kube-apiserver does."""

from __future__ import annotations

from sidecars.core.health import Health, Lifecycle, Result, render_text
from sidecars.core.plugin import Check


def _health(checks: list[Check]) -> tuple[Health, Lifecycle]:
    lifecycle = Lifecycle()
    return Health(lifecycle, lambda: checks), lifecycle


def test_readiness_follows_lifecycle_and_checks() -> None:
    state = {"sink": "3 sends failed in a row"}
    health, lifecycle = _health([Check("sink", lambda: state["sink"])])
    assert [r.ok for r in health.evaluate("readyz")] == [True, False, True, False]
    lifecycle.started = True
    state["sink"] = None  # type: ignore[assignment]
    assert all(r.ok for r in health.evaluate("readyz"))
    lifecycle.draining = True
    results = health.evaluate("readyz")
    body = render_text("readyz", results, verbose=False)
    assert not all(r.ok for r in results)
    assert "[-]shutdown failed: draining" in body and body.endswith("readyz check failed\n")


def test_liveness_ignores_readiness_checks_and_exclude_and_single_check() -> None:
    health, _ = _health(
        [Check("upstream", lambda: "down"), Check("loop", lambda: None, readiness=False, liveness=True)]
    )
    assert [r.name for r in health.evaluate("livez")] == ["ping", "loop"]
    assert [r.name for r in health.evaluate("readyz", exclude=["upstream", "started"])] == ["ping", "shutdown"]
    assert [r.line() for r in health.evaluate("readyz", only="upstream")] == ["[-]upstream failed: down"]


def test_a_raising_check_is_a_failure_with_its_reason() -> None:
    def broken() -> str | None:
        raise ValueError("boom")

    health, lifecycle = _health([Check("broken", broken)])
    lifecycle.started = True
    results = health.evaluate("readyz")
    assert not all(r.ok for r in results)
    assert "[-]broken failed: check raised ValueError: boom" in render_text("readyz", results, verbose=True)
    results = health.evaluate("livez")
    assert all(r.ok for r in results) and render_text("livez", results, verbose=False) == "ok"


def test_a_warn_check_is_listed_but_never_fails_its_endpoint() -> None:
    state: dict[str, str | None] = {"reload": "last reload rejected"}
    health, lifecycle = _health([Check("reload", lambda: state["reload"], warn=True)])
    lifecycle.started = True
    results = health.evaluate("readyz")
    body = render_text("readyz", results, verbose=True)
    assert all(r.ok for r in results)
    assert "[+]reload warn: last reload rejected" in body and body.endswith("readyz check passed\n")
    state["reload"] = None
    assert "[+]reload ok" in render_text("readyz", health.evaluate("readyz"), verbose=True)


def test_check_reasons_show_urls_redacted() -> None:
    def broken() -> str | None:
        raise OSError("cannot reach https://h/?api_key=ak-77")

    health, lifecycle = _health(
        [Check("sink", lambda: "https://u:pw-77@h/push: HTTP 503"), Check("scrape", broken, warn=True)]
    )
    lifecycle.started = True
    body = render_text("readyz", health.evaluate("readyz"), verbose=True)
    assert "pw-77" not in body and "ak-77" not in body
    assert "[-]sink failed: https://**********@h/push: HTTP 503" in body
    assert "[+]scrape warn: check raised OSError: cannot reach https://h/?api_key=**********" in body


def test_text_lists_excluded_checks_and_stays_under_what_the_kubelet_reads() -> None:
    results = [Result("a", None), Result("b", "slow", warn=True)]
    assert render_text("readyz", results, verbose=True, excluded=["c"]).splitlines() == [
        "[+]a ok",
        "[+]b warn: slow",
        "[+]c excluded: ok",
        "readyz check passed",
    ]
    many = [Result(f"rule-{i:04d}", "x" * 5000) for i in range(100)]
    body = render_text("healthz", many, verbose=False)
    assert len(body.encode()) < 10 * 1024
    assert body.endswith("more checks not shown\nhealthz check failed\n")
    assert body.splitlines()[0] == "[-]rule-0000 failed: " + "x" * 1024  # each reason cut


def test_health_json_puts_failures_first_and_stays_under_10_kib() -> None:
    import orjson

    from sidecars.core.health import render_json

    results = [Result("a", None), Result("b", "slow", warn=True), Result("c", "down", details={"group": "g"})]
    doc = orjson.loads(render_json("readyz", results, at=0))
    assert doc["status"] == "fail" and doc["description"] == "readyz"
    assert list(doc["checks"]) == ["c", "b", "a"]
    assert doc["checks"]["c"] == [
        {"componentId": "c", "status": "fail", "time": "1970-01-01T00:00:00Z", "output": "down", "group": "g"}
    ]
    assert orjson.loads(render_json("readyz", results[:2]))["status"] == "warn"
    big = render_json("healthz", [Result(f"r{i}", "y" * 900, key=f"r{i}:readiness") for i in range(50)])
    assert len(big) < 10 * 1024 and "checks left out" in orjson.loads(big)["notes"][0]
