"""A log receiver standing in for remote log storage (Loki, Elasticsearch...) in the examples.

It accepts the tailer's HTTP sink: `POST` of NDJSON or plain lines (gzip or not) on any path, and
prints every received line to stdout, so `kubectl logs`/`docker logs` show what arrived.
`GET /stats` answers `{"lines": N, "batches": M}`; `GET /lines?last=50` the most recent lines.
Run: `python -m sidecars.demo.receiver --port 9880`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys

from aiohttp import web

from sidecars.demo.common import env_default, run_until_signal


class Receiver:
    def __init__(self, quiet: bool = False) -> None:
        self.lines = 0
        self.batches = 0
        self.recent: collections.deque[str] = collections.deque(maxlen=1000)
        self.quiet = quiet

    async def ingest(self, request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp has already undone Content-Encoding: gzip
        text = body.decode("utf-8", "replace")
        received = [line for line in text.split("\n") if line]
        self.lines += len(received)
        self.batches += 1
        self.recent.extend(received)
        if not self.quiet and received:
            sys.stdout.write("\n".join(received) + "\n")
            sys.stdout.flush()
        return web.json_response({"accepted": len(received)})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"lines": self.lines, "batches": self.batches})

    async def last(self, request: web.Request) -> web.Response:
        n = max(0, min(int(request.query.get("last", "50")), len(self.recent)))
        items = list(self.recent)[len(self.recent) - n :]
        return web.Response(text="".join(f"{line}\n" for line in items), content_type="text/plain")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes(
            [
                web.get("/stats", self.stats),
                web.get("/lines", self.last),
                web.get("/healthz", lambda _: self._ok()),
                web.post("/{tail:.*}", self.ingest),
            ]
        )
        return app

    @staticmethod
    async def _ok() -> web.Response:
        return web.Response(text="ok\n")


async def serve(host: str, port: int, quiet: bool) -> None:
    runner = web.AppRunner(Receiver(quiet).app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"log receiver listening on http://{host}:{port}", file=sys.stderr, flush=True)
    try:
        await run_until_signal()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sidecars.demo.receiver", description=__doc__.splitlines()[0])
    p.add_argument("--host", default=env_default("RECEIVER_HOST", "0.0.0.0"))
    p.add_argument("--port", type=int, default=int(env_default("RECEIVER_PORT", "9880")))
    p.add_argument("--quiet", action="store_true", help="Do not print received lines.")
    args = p.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.quiet))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
