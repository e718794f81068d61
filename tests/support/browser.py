"""A page as a person sees it: Debian's Chromium, headless, and what its DOM holds once loaded.

`dump_dom()` runs one browser per page with a fresh profile and a bounded run: the page gets a
virtual-time budget to finish loading (scripts, if it had any, would have run by then), the whole run
a wall-clock timeout, and the browser's process group is killed whatever happens, so no renderer or
GPU helper outlives the test. `Dom` turns the dump into what the tests read: every element with its
attributes, the text, and each table as rows of cell texts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM = shutil.which("chromium")
INSTALL = "apt-get install chromium (.ci/packages/core.txt)"


def dump_dom(url: str, profile: Path, *, timeout_secs: float = 120.0, budget_ms: int = 2000) -> str:
    """What Chromium (`--headless=new`) has in its DOM once it loaded `url`."""
    assert CHROMIUM is not None, f"chromium is not installed: {INSTALL}"
    # The flags keep the run to the page: no sandbox (tests run as root), no first-run work, no
    # extensions, no sync or component updates, and nothing fetched beyond what the page asks for.
    args = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
            "--disable-sync", "--disable-component-update", "--disable-background-networking",
            f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", "--dump-dom", url]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_secs)
    finally:
        # Its own session: the renderer and helper processes go with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    return out.decode()


class Dom(HTMLParser):
    """Every element of a document with its attributes, the text, and each table's rows."""

    def __init__(self, document: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.tables: list[tuple[str | None, list[list[str]]]] = []  # (id, rows of cell texts)
        self._open: list[tuple[str | None, list[list[str]]]] = []
        self._cell: list[str] | None = None
        self.feed(document)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if tag == "table":
            self._open.append((attributes.get("id"), []))
        elif tag == "tr" and self._open:
            self._open[-1][1].append([])
        elif tag in ("td", "th") and self._open and self._open[-1][1]:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._open:
            self._open[-1][1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table" and self._open:
            self.tables.append(self._open.pop())

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def table(self, table_id: str) -> list[list[str]]:
        """The rows of the table with this id, header row first."""
        return next(rows for tid, rows in self.tables if tid == table_id)

    def links(self) -> list[str]:
        return [a["href"] for tag, a in self.elements if tag == "a" and a.get("href")]
