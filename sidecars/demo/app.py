"""The demo application: what a sidecar sits beside.

It writes JSON log lines into a directory (for the tailer), exposes Prometheus `/metrics` (for the
adapter) and calls an upstream through a local address (the ambassador). `POST /toggle?bad=1` makes
its metrics go bad (queue depth high, errors counted) and `?bad=0` heals them, so health rules can be
shown flipping. Run: `python -m sidecars.demo.app --port 8080 --log-dir /var/log/app`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from sidecars.demo.common import env_default, run_until_signal

# The client session GET / calls the upstream with: made by `serve`, which runs the app.
SESSION = web.AppKey("session", aiohttp.ClientSession)


class AppLog:
    """Appends one JSON document per line to `<dir>/app.log`; `seq` numbers every line written."""

    def __init__(self, directory: Path | None) -> None:
        self.seq = 0
        self._file = None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            # Line buffered: a line is in the file (for the tailer) as soon as it is logged.
            self._file = open(directory / "app.log", "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def write(self, event: str, **fields: object) -> None:
        self.seq += 1
        if self._file is not None:
            doc = {"ts": time.time(), "seq": self.seq, "event": event, **fields}
            self._file.write(orjson.dumps(doc).decode() + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class DemoApp:
    def __init__(self, log_dir: Path | None, upstream_url: str | None, tick_secs: float) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("demo_requests", "Requests answered.", ["path"], registry=self.registry)
        self.errors = Counter("demo_errors", "Requests or work items that failed.", registry=self.registry)
        self.latency = Histogram("demo_request_duration_seconds", "Time to answer a request.", registry=self.registry)
        self.queue_depth = Gauge("demo_queue_depth", "Work items waiting.", registry=self.registry)
        self.bad = False
        self.log = AppLog(log_dir)
        self.upstream_url = upstream_url
        self.tick_secs = tick_secs

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.index),
            web.get("/metrics", self.metrics),
            web.post("/toggle", self.toggle),
            web.get("/healthz", self.healthz),
        ]

    async def index(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        self.requests.labels(path="/").inc()
        body: dict[str, Any] = {"app": "demo", "bad": self.bad}
        status = 200
        if self.upstream_url:
            try:
                async with request.app[SESSION].get(self.upstream_url) as resp:
                    body["upstream_status"] = resp.status
                    body["upstream"] = (await resp.text())[:200]
                    status = 200 if resp.status < 500 else 502
            except (aiohttp.ClientError, TimeoutError) as exc:
                body["upstream_error"] = type(exc).__name__
                status = 502
        if status != 200 or self.bad:
            self.errors.inc()
        self.log.write("request", path="/", status=status)
        self.latency.observe(time.perf_counter() - started)
        return web.json_response(body, status=status)

    async def metrics(self, request: web.Request) -> web.Response:
        self.requests.labels(path="/metrics").inc()
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def toggle(self, request: web.Request) -> web.Response:
        self.bad = request.query.get("bad", "1") not in ("0", "false", "no")
        self.queue_depth.set(500 if self.bad else 0)
        self.log.write("toggle", bad=self.bad)
        return web.json_response({"bad": self.bad})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def ticker(self) -> None:
        """A log line per tick; while bad, errors keep counting so rate() rules see them."""
        while True:
            self.log.write("tick", bad=self.bad)
            if self.bad:
                self.errors.inc(5)
            await asyncio.sleep(self.tick_secs)

    async def serve(self, host: str, port: int) -> None:
        app = web.Application()
        app.add_routes(self.routes())
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            app[SESSION] = session
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, host, port).start()
            print(f"demo app listening on http://{host}:{port}", flush=True)
            ticker = asyncio.create_task(self.ticker()) if self.tick_secs > 0 else None
            try:
                await run_until_signal()
            finally:
                if ticker is not None:
                    ticker.cancel()
                self.log.write("stopping")
                await runner.cleanup()
                self.log.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sidecars.demo.app", description=__doc__.splitlines()[0])
    p.add_argument("--host", default=env_default("DEMO_HOST", "0.0.0.0"), help="Listen address (DEMO_HOST).")
    p.add_argument("--port", type=int, default=int(env_default("DEMO_PORT", "8080")), help="(DEMO_PORT)")
    p.add_argument("--log-dir", default=env_default("DEMO_LOG_DIR", ""), help="Write app.log here (DEMO_LOG_DIR).")
    p.add_argument(
        "--upstream-url", default=env_default("DEMO_UPSTREAM_URL", ""), help="Called by GET / (DEMO_UPSTREAM_URL)."
    )
    p.add_argument(
        "--tick-secs",
        type=float,
        default=float(env_default("DEMO_TICK_SECS", "1")),
        help="A log line every this many seconds; 0 disables (DEMO_TICK_SECS).",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    app = DemoApp(Path(args.log_dir) if args.log_dir else None, args.upstream_url or None, args.tick_secs)
    asyncio.run(app.serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
