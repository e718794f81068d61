"""HTTP for every sidecar: serving an aiohttp app, and talking to one peer as a client.

Serving: `start_server(app, hosts, port)` sets up the runner and one site per address, all on one
port (`sidecars.core.listen`: port 0 picks a free one); `HttpServer.close()` releases them.
No access log (probes every few seconds would drown the sidecar's own lines), no signal handlers
(the runtime owns signals).

Talking to a peer: `client_session()` is the one way a sidecar opens an HTTP client. It talks only
to what it was told, because the peer (a receiver, the app) may be buggy or hostile and the
environment is the app's:

- no redirects: a 301/302/303 turns a POST into a GET whose 200 is no acknowledgement, and a redirect
  may point anywhere; the caller sees the 3xx and says where it pointed. A scrape is the exception,
  by its own explicit choice (`follow_redirects=True`, as Prometheus' `follow_redirects` defaults
  to): at most 10 hops, and the `Authorization` header never leaves the origin it was given for;
- no proxy from `HTTP(S)_PROXY`/`NO_PROXY`: set for the app, they must not reroute the sidecar;
- no cookies kept between requests;
- no automatic decompression: a gzip bomb inflates to gigabytes in one read; answers are read with
  `read_answer`, which inflates up to a bound, or by the caller's own bounded reader.
"""

from __future__ import annotations

import ssl
import zlib
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from sidecars.core import listen

__all__ = ["HttpClient", "HttpServer", "client_session", "read_answer", "start_server"]

# zlib window bits: a gzip or a zlib header, detected.
_GZIP_OR_ZLIB = 32 + zlib.MAX_WBITS
_READ_BYTES = 16 * 1024
# Go's http.Client (Prometheus) stops after 10 redirects too.
MAX_REDIRECTS = 10


class HttpServer:
    """A started aiohttp app: the port it listens on, its addresses, and `close()`."""

    def __init__(self, runner: web.AppRunner, port: int, addresses: list[str], skipped: list[tuple[str, str]]) -> None:
        self.runner = runner
        self.port = port
        self.addresses = addresses
        self.skipped = skipped  # (address, why): IPv6 on a node without it, see sidecars.core.listen

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_server(
    app: web.Application, host: str | Sequence[str], port: int, *, ssl_context: ssl.SSLContext | None = None
) -> HttpServer:
    """Listen on `port` (0: a free one) on each address of `host`; OSError (port taken, address not
    local) releases all."""
    hosts = [host] if isinstance(host, str) else list(host)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        bound = listen.bind(hosts, port)
        try:
            for sock in bound.sockets:
                await web.SockSite(runner, sock, ssl_context=ssl_context).start()
        except BaseException:
            bound.close()
            raise
    except BaseException:
        await runner.cleanup()
        raise
    return HttpServer(runner, bound.port, bound.addresses, bound.skipped)


class HttpClient:
    """An aiohttp session under the policy of `client_session`: redirects followed only if it says so."""

    def __init__(self, session: aiohttp.ClientSession, follow_redirects: bool = False) -> None:
        self.session = session
        self.follow_redirects = follow_redirects

    def request(self, method: str, url: str, **kwargs: Any) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        if "allow_redirects" in kwargs or "max_redirects" in kwargs:
            raise ValueError("redirects are the client's policy (client_session(follow_redirects=...))")
        # aiohttp drops Authorization on a redirect to another origin by itself.
        return self.session.request(
            method, url, allow_redirects=self.follow_redirects, max_redirects=MAX_REDIRECTS, **kwargs
        )

    def get(self, url: str, **kwargs: Any) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        return self.request("POST", url, **kwargs)

    @property
    def closed(self) -> bool:
        return self.session.closed

    async def close(self) -> None:
        await self.session.close()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def client_session(
    *,
    connections: int = 1,
    timeout: aiohttp.ClientTimeout | None = None,
    tls: ssl.SSLContext | None = None,
    follow_redirects: bool = False,
) -> HttpClient:
    """A keep-alive client of at most `connections` connections, talking only to what it is told.

    `tls` is the context for https (see `sidecars.core.tls`); None verifies with the system's CAs.
    `follow_redirects` only where the protocol's users expect it (a scrape). Create it on the event
    loop that uses it.
    """
    return HttpClient(
        aiohttp.ClientSession(
            timeout=timeout or aiohttp.ClientTimeout(total=30),
            connector=aiohttp.TCPConnector(limit=connections, ssl=tls if tls is not None else True),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            raise_for_status=False,
        ),
        follow_redirects,
    )


async def read_answer(resp: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of the answer, inflated when gzip or deflate; and whether that was all.

    The compressed bytes read are bounded too (a stream of empty deflate blocks inflates to nothing
    forever). An encoding other than gzip/deflate is not read at all.
    """
    encoding = resp.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        inflate = None
    elif encoding in ("gzip", "x-gzip", "deflate"):
        inflate = zlib.decompressobj(_GZIP_OR_ZLIB)
    else:
        return b"", False
    out = bytearray()
    raw_budget = limit + _READ_BYTES  # compression that works makes the raw answer smaller still
    while True:
        chunk = await resp.content.read(min(_READ_BYTES, raw_budget + 1))
        if not chunk:
            if inflate is not None and not inflate.eof:
                return bytes(out), False  # ended inside the compressed stream
            return bytes(out), True
        raw_budget -= len(chunk)
        if inflate is None:
            out += chunk
        else:
            try:
                out += inflate.decompress(chunk, limit + 1 - len(out))
            except zlib.error:
                return bytes(out), False
            if inflate.unconsumed_tail:
                return bytes(out[:limit]), False
        if len(out) > limit or raw_budget < 0:
            return bytes(out[:limit]), False
