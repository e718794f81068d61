"""A tiny upstream server that says who it is, for showing the ambassador's balancing.

`GET /anything` answers `{"upstream": NAME, "path": ...}`; `GET /healthz` answers 200.
Run: `python -m sidecars.demo.upstream --port 8081 --name a`.
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

from sidecars.demo.common import env_default, run_until_signal


def make_app(name: str) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"upstream": name, "path": request.path})

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.route("*", "/{tail:.*}", answer)])
    return app


async def serve(host: str, port: int, name: str) -> None:
    runner = web.AppRunner(make_app(name), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"upstream {name} listening on http://{host}:{port}", flush=True)
    try:
        await run_until_signal()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sidecars.demo.upstream", description=__doc__.splitlines()[0])
    p.add_argument("--host", default=env_default("UPSTREAM_HOST", "0.0.0.0"))
    p.add_argument("--port", type=int, default=int(env_default("UPSTREAM_PORT", "8081")))
    p.add_argument("--name", default=env_default("UPSTREAM_NAME", "upstream"))
    args = p.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
