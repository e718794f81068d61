"""The admin status page (`/`) as a person sees it: opened in a real headless Chromium.

The sidecar under test names a check, a figure and table cells with markup in them (a script, an
image from another server, a closing `</table>` and a heading): the page must show each as text,
run nothing, load nothing, and keep its own structure. A small server on 127.0.0.1 counts every
request the browser makes beyond the page itself: there must be none.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pydantic import Field

from sidecars.core import Check, Figures, Sidecar, SidecarSettings
from sidecars.core.status import MAX_ROWS
from sidecars.testing import http_get, run_sidecar
from tests.support.browser import Dom, dump_dom


class ShowcaseSettings(SidecarSettings):
    env_prefix = "SHOWCASE_"
    admin_port: int = Field(9899, description="Admin port.")
    leak_port: int = Field(1, description="Where the hostile names point their images and styles.")
    rows: int = Field(3, description="Rows of the files table.")


class Showcase(Sidecar[ShowcaseSettings]):
    name = "showcase"
    description = "a sidecar whose names carry markup"
    Settings = ShowcaseSettings

    def hostile(self, tag: str) -> str:
        leak = f"http://127.0.0.1:{self.settings.leak_port}/{tag}"
        return (
            f'<img src="{leak}.png" id="img-{tag}"><script>document.title="pwned-{tag}"</script>'
            f'<link rel="stylesheet" href="{leak}.css"></td></tr></table><h1 id="injected-{tag}">{tag}</h1>'
        )

    async def run(self, ready: Callable[[], None]) -> None:
        ready()
        await asyncio.Event().wait()

    def checks(self) -> Sequence[Check]:
        return [
            Check(self.hostile("check"), lambda: None),
            Check("upstream", lambda: "refused: " + self.hostile("reason")),
            Check("reload", lambda: "config refused", warn=True),
        ]

    def admin_routes(self) -> Sequence[web.RouteDef]:
        async def things(_: web.Request) -> web.Response:
            """the things this sidecar follows"""
            return web.json_response({"things": []})

        return [web.get("/things", things)]

    def figures(self) -> Figures:
        rows = [
            {"path": f"/logs/{i}-{self.hostile('cell')}.log", "bytes_behind": i, "live": True}
            for i in range(self.settings.rows)
        ]
        return Figures(values={"followed": self.settings.rows, self.hostile("figure"): 1.5}, tables={"files": rows})


@pytest.fixture
async def leak_server() -> AsyncIterator[tuple[int, list[str]]]:
    """A server that records every request: the page must make none."""
    hits: list[str] = []

    async def record(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1]), hits
    finally:
        await runner.cleanup()


async def test_status_page_in_a_browser_shows_markup_as_text_and_loads_nothing(
    tmp_path: Path, leak_server: tuple[int, list[str]]
) -> None:
    leak_port, hits = leak_server
    async with run_sidecar(Showcase, leak_port=leak_port) as sc:
        url = f"http://127.0.0.1:{sc.runtime.admin.port}/"
        dom = await asyncio.to_thread(dump_dom, url, tmp_path / "profile")
        plugin = sc.runtime.plugin
        assert isinstance(plugin, Showcase)
    tags = Dom(dom)
    names = [tag for tag, _ in tags.elements]
    assert "script" not in names and "img" not in names and "link" not in names, names
    assert not [a for _, a in tags.elements if (a.get("id") or "").startswith(("injected", "img-"))]
    assert hits == []  # no image, style or anything else fetched
    text = "".join(tags.text)
    for tag in ("check", "reason", "figure", "cell"):
        assert plugin.hostile(tag) in text  # shown as the text it is
    title = next(t for t in tags.text if t.startswith("showcase"))
    assert title == "showcase: ready"  # no script changed the title
    # What a person reads: the sidecar, its state, each check with its status, the figures, the pages.
    assert [a.get("id") for t, a in tags.elements if t == "table"] == ["checks", "figures", None, "pages"]
    assert "showcase" in text and "a sidecar whose names carry markup" in text
    for expected in ("/readyz", "upstream", "fail", "reload", "warn", "config refused", "followed", "task restarts"):
        assert expected in text, expected
    links = [a["href"] for t, a in tags.elements if t == "a" and a.get("href")]
    assert {"/", "/config", "/metrics", "/things", "/readyz?verbose", "/livez?verbose"} <= set(links)
    assert "the things this sidecar follows" in text  # a plugin's page, described by its docstring


async def test_every_link_of_the_index_leads_to_a_page(leak_server: tuple[int, list[str]]) -> None:
    async with run_sidecar(Showcase, leak_port=leak_server[0]) as sc:
        base = f"http://127.0.0.1:{sc.runtime.admin.port}"
        status, body = await http_get(base + "/", headers={"Accept": "application/json"})
        assert status == 200
        doc = json.loads(body)
        for page in doc["pages"]:
            code, _ = await http_get(base + page["path"])
            assert code in (200, 503), page  # readyz fails here (the upstream check), but it exists


async def test_status_json_has_the_checks_figures_and_cut_tables(leak_server: tuple[int, list[str]]) -> None:
    async with run_sidecar(Showcase, leak_port=leak_server[0], rows=MAX_ROWS + 300) as sc:
        base = f"http://127.0.0.1:{sc.runtime.admin.port}"
        status, body = await http_get(base + "/", headers={"Accept": "application/json"})
        _, page = await http_get(base + "/", headers={"Accept": "text/html"})
    assert status == 200
    doc = json.loads(body)
    assert doc["sidecar"] == "showcase" and doc["state"] == "ready"
    ready = {c["name"]: c for c in doc["checks"]["readyz"]}
    assert ready["upstream"]["status"] == "fail" and ready["upstream"]["reason"].startswith("refused: <img")
    assert ready["reload"]["status"] == "warn"
    assert doc["figures"]["followed"] == MAX_ROWS + 300 and doc["figures"]["events in"] == 0
    assert len(doc["tables"]["files"]["rows"]) == MAX_ROWS and doc["tables"]["files"]["total"] == MAX_ROWS + 300
    assert "300 more rows not shown" in page
    assert len(page) < 2_000_000


async def test_status_page_forbids_scripts_and_every_other_origin() -> None:
    async with run_sidecar(Showcase) as sc:
        base = f"http://127.0.0.1:{sc.runtime.admin.port}"
        async with aiohttp.ClientSession() as session, session.get(base + "/") as resp:
            headers = resp.headers
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Type"].startswith("text/html")
