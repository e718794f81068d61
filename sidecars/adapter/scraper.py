"""One scrape of the target: HTTP GET, size limit, gzip, content negotiation, parsing off the loop.

Failures are classified with a small fixed vocabulary (the `reason` label of
`adapter_scrape_failures_total`): refused (nothing listens), timeout, http_status, too_large (past
`max_body_bytes`, counted while inflating), too_many_series (past `max_series`), decode_error (not
UTF-8, or a broken or unknown Content-Encoding), parse_error (with the line number in the detail),
error (anything else).

Memory stays bounded by the limits whatever the target sends: the body is inflated here, piece by
piece against the size limit (the session must not decompress, see `new_session`), and the parser
stops once the series limit is passed.
"""

from __future__ import annotations

import asyncio
import codecs
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import aiohttp

from sidecars.adapter.exposition import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    LabelCache,
    ParseError,
    ParseResult,
    SampleTuple,
    SeriesLimitError,
    SeriesSeen,
    parse_pieces,
)
from sidecars.adapter.inflate import InflateError, Inflater
from sidecars.core import heap
from sidecars.core.http import HttpClient, client_session
from sidecars.core.redact import redact_text, redact_url

# OpenMetrics first, then the classic text format; Prometheus sends the same preference.
ACCEPT = f"{OPENMETRICS_CONTENT_TYPE};q=0.5,{TEXT_CONTENT_TYPE};q=0.4,*/*;q=0.1"
CHUNK_BYTES = 1 << 16


class ScrapeError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Scrape:
    """The outcome of one scrape; `result` is set when it succeeded."""

    t_ms: int
    duration_secs: float
    result: ParseResult | None = None
    # The samples the rules read (all of `result.samples` when no rule filter was given).
    rule_samples: list[SampleTuple] = field(default_factory=list)
    error: ScrapeError | None = None
    bytes: int = 0
    openmetrics: bool = False
    families: frozenset[str] | None = field(default=None)

    @property
    def ok(self) -> bool:
        return self.result is not None


def new_session(connections: int = 1) -> HttpClient:
    """A client for `Scraper`: the core's, keep-alive, no environment proxies, no cookies, inflating
    nothing itself (the scraper's inflating is bounded). It follows redirects, as Prometheus does;
    the `Authorization` header stays with the target's origin."""
    return client_session(connections=connections, follow_redirects=True)


def _decoded_pieces(chunks: list[bytes]) -> Iterator[str]:
    """The body as text, about 256 KiB at a time (never one decode over the whole page).

    Each chunk is let go once decoded, so the raw page shrinks while the parse grows.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines_before = 0
    group: list[bytes] = []
    size = 0
    for i, chunk in enumerate(chunks):
        chunks[i] = b""
        group.append(chunk)
        size += len(chunk)
        last = i == len(chunks) - 1
        if size < 256 * 1024 and not last:
            continue
        data = b"".join(group)
        try:
            yield decoder.decode(data, final=last)
        except UnicodeDecodeError as exc:
            line = lines_before + data.count(b"\n", 0, max(exc.start, 0)) + 1
            raise ScrapeError("decode_error", f"line {line}: not UTF-8") from None
        lines_before += data.count(b"\n")
        group, size = [], 0


def _decode_and_parse(
    chunks: list[bytes],
    openmetrics: bool,
    families: frozenset[str] | None,
    cache: LabelCache,
    series_seen: SeriesSeen,
    rule_families: frozenset[str] | None,
    after_parse: Callable[[ParseResult], None],
    max_series: int | None = None,
) -> tuple[ParseResult, list[SampleTuple]]:
    """Runs in a worker thread: joining, decoding and parsing a big page must not hold the loop.

    When the outputs need more families than the rules, the rules' share is picked out here too,
    so the event loop only ever handles what the rules read.
    """
    pieces = _decoded_pieces(chunks)
    # Full collections would walk the growing page again and again: they wait until it is built.
    with heap.full_collections_held():
        result = parse_pieces(
            pieces,
            openmetrics=openmetrics,
            families=families,
            label_cache=cache,
            series_seen=series_seen,
            max_series=max_series,
        )
        after_parse(result)
    rule_samples = result.samples
    if rule_families is not None and rule_families != families:
        rule_samples = [s for s in result.samples if s[0] in rule_families]
    return result, rule_samples


class Scraper:
    """Scrapes one URL with a shared session; keeps a label cache across scrapes of the same page.

    A big page leaves hundreds of thousands of long-lived objects (its samples, the label cache).
    CPython's full collections walk every tracked object, tens to hundreds of milliseconds with the
    GIL held, whichever thread triggers them; probes would wait that long. So after parsing a big
    page the scraper calls `gc.freeze()`: what exists then is left out of later collections (the
    samples are acyclic; reference counting still frees them), through `sidecars.core.heap`, which
    the push outputs share. `close()` undoes it.
    """

    def __init__(
        self,
        session: HttpClient,
        url: str,
        timeout_secs: float,
        max_body_bytes: int,
        max_series: int | None = None,
        authorization: str | None = None,
    ) -> None:
        self.session = session
        self.url = url
        self.timeout = aiohttp.ClientTimeout(total=timeout_secs)
        self.max_body_bytes = max_body_bytes
        self.max_series = max_series
        # Built once: the credential never sits in a local variable of the request path.
        self._headers = {"Accept": ACCEPT, "Accept-Encoding": "gzip", "User-Agent": "sidecars-adapter"}
        if authorization is not None:
            self._headers["Authorization"] = authorization
        self._cache: LabelCache = {}
        self._series_seen: SeriesSeen = {}
        self._cache_families: frozenset[str] | None = None
        self._froze = False

    async def scrape(
        self, families: frozenset[str] | None = None, rule_families: frozenset[str] | None = None
    ) -> Scrape:
        """`families`: what to parse (None: all); `rule_families`: what of it the rules read."""
        t_ms = int(time.time() * 1000)
        started = time.perf_counter()
        outcome = Scrape(t_ms=t_ms, duration_secs=0.0, families=families)
        try:
            chunks, size, openmetrics = await self._fetch()
            outcome.bytes, outcome.openmetrics = size, openmetrics
            if families != self._cache_families or len(self._cache) > 2_000_000:
                self._cache, self._series_seen, self._cache_families = {}, {}, families
            cache = self._cache
            result, outcome.rule_samples = await asyncio.to_thread(
                _decode_and_parse,
                chunks,
                openmetrics,
                families,
                cache,
                self._series_seen,
                rule_families,
                self._after_parse,
                self.max_series,
            )
            # Bound the cache to the series of the latest page: entries of vanished series go.
            if len(cache) > 2 * max(len(result.samples), 1000):
                self._cache, self._series_seen = {}, {}
            outcome.result = result
        except ScrapeError as exc:
            # A copy without the traceback: the raised one holds the frames, and so the whole body,
            # in a cycle through `outcome` that only a full collection would free.
            outcome.error = ScrapeError(exc.reason, exc.detail)
        except ParseError as exc:
            outcome.error = ScrapeError("parse_error", str(exc))
        except SeriesLimitError as exc:
            outcome.error = ScrapeError("too_many_series", f"{exc} in the families read (max_series)")
        except TimeoutError:
            outcome.error = ScrapeError("timeout", f"no complete answer within {self.timeout.total} s")
        except aiohttp.ClientConnectorError as exc:
            reason = "refused" if isinstance(exc.os_error, ConnectionRefusedError) else "error"
            outcome.error = ScrapeError(reason, f"cannot connect to {redact_url(self.url)}: {exc.os_error}")
        except (aiohttp.ClientError, OSError) as exc:
            outcome.error = ScrapeError("error", redact_text(f"{type(exc).__name__}: {exc}")[:200])
        outcome.duration_secs = time.perf_counter() - started
        return outcome

    def _after_parse(self, result: ParseResult) -> None:
        """In the parse thread, before full collections are allowed again: freeze a big page."""
        if len(result.samples) < heap.FREEZE_MIN_OBJECTS:
            return
        heap.freeze()
        self._froze = True

    def close(self) -> None:
        """Hands frozen objects back to the garbage collector."""
        if self._froze:
            heap.unfreeze()
            self._froze = False

    async def _fetch(self) -> tuple[list[bytes], int, bool]:
        async with self.session.get(self.url, headers=self._headers, timeout=self.timeout) as response:
            if response.status != 200:
                raise ScrapeError("http_status", f"HTTP {response.status} from {redact_url(self.url)}")
            limit = self.max_body_bytes
            if response.content_length is not None and response.content_length > limit:
                raise ScrapeError("too_large", f"Content-Length {response.content_length} > {limit}")
            openmetrics = response.content_type == "application/openmetrics-text"
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            try:
                inflater = None if encoding in ("", "identity") else Inflater(encoding)
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                    if inflater is None:
                        size += len(chunk)
                        if size > limit:
                            raise ScrapeError("too_large", f"page larger than {limit} bytes")
                        chunks.append(chunk)
                        continue
                    for piece in inflater.feed(chunk, limit - size):
                        size += len(piece)
                        if size > limit:
                            raise ScrapeError("too_large", f"page larger than {limit} bytes")
                        chunks.append(piece)
                        # One read of a bomb inflates to the whole limit (300 ms of zlib for 50 MB):
                        # the loop answers probes between pieces.
                        await asyncio.sleep(0)
                if inflater is not None:
                    inflater.finish()
            except InflateError as exc:
                raise ScrapeError("decode_error", str(exc)) from None
            return chunks, size, openmetrics
