"""Writes an HTML page into a shared volume every few seconds: the writer half of the simplest Pod.

Another container serves the same volume (e.g. `python -m http.server --directory /html`).
Run: `python -m sidecars.demo.page /html/index.html --interval-secs 5`.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from pathlib import Path


def write_page(path: Path, count: int) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    html = f"<html><body><h1>Hello from the writer</h1><p>update {count} at {stamp} UTC</p></body></html>\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)  # readers never see a half-written page


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sidecars.demo.page", description=__doc__.splitlines()[0])
    p.add_argument("path", type=Path)
    p.add_argument("--interval-secs", type=float, default=5.0)
    args = p.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    count = 0
    while not stop.is_set():
        count += 1
        write_page(args.path, count)
        stop.wait(args.interval_secs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
