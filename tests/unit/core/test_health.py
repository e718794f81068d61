"""The probe endpoints' logic: lifecycle checks, plugin checks, rendering as kube-apiserver does."""

from __future__ import annotations

from sidecars.core.health import Health, Lifecycle, render
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
    ok, body = render("readyz", health.evaluate("readyz"), verbose=False)
    assert not ok and "[-]shutdown failed: draining" in body and body.endswith("readyz check failed\n")


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
    ok, body = render("readyz", health.evaluate("readyz"), verbose=True)
    assert not ok and "[-]broken failed: check raised ValueError: boom" in body
    ok, body = render("livez", health.evaluate("livez"), verbose=False)
    assert ok and body == "ok\n"


def test_a_warn_check_is_listed_but_never_fails_its_endpoint() -> None:
    state: dict[str, str | None] = {"reload": "last reload rejected"}
    health, lifecycle = _health([Check("reload", lambda: state["reload"], warn=True)])
    lifecycle.started = True
    ok, body = render("readyz", health.evaluate("readyz"), verbose=True)
    assert ok and "[+]reload warn: last reload rejected" in body and body.endswith("readyz check passed\n")
    state["reload"] = None
    assert "[+]reload ok" in render("readyz", health.evaluate("readyz"), verbose=True)[1]


def test_check_reasons_show_urls_redacted() -> None:
    def broken() -> str | None:
        raise OSError("cannot reach https://h/?api_key=ak-77")

    health, lifecycle = _health(
        [Check("sink", lambda: "https://u:pw-77@h/push: HTTP 503"), Check("scrape", broken, warn=True)]
    )
    lifecycle.started = True
    _, body = render("readyz", health.evaluate("readyz"), verbose=True)
    assert "pw-77" not in body and "ak-77" not in body
    assert "[-]sink failed: https://**********@h/push: HTTP 503" in body
    assert "[+]scrape warn: check raised OSError: cannot reach https://h/?api_key=**********" in body
