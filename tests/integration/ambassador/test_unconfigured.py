"""An ambassador started with its defaults (no listeners) says so instead of silently idling."""

from __future__ import annotations

from sidecars.ambassador.plugin import Ambassador
from sidecars.testing import http_get, run_sidecar


async def test_no_listeners_is_a_visible_warning_not_a_failure() -> None:
    async with run_sidecar(Ambassador) as sc:
        status, body = await http_get(sc.admin_url + "/readyz?verbose")
        assert status == 200
        assert "[+]configured warn: no listeners configured" in body
        assert sc.events("no listeners configured: nothing to proxy")
