"""Bounded decompression of a scraped body: never more output than the page limit, however small the input.

A gzip bomb is a few megabytes that inflate to gigabytes; decompressing a whole network read at once
(what an HTTP client's transparent decompression does) holds all of it before any size check can
run. Here every call to zlib is capped (`max_length`), so the bytes held never pass the limit by
more than one piece, and each C call stays short for the event loop.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

# The most output one call to zlib may produce.
PIECE_BYTES = 256 * 1024
ENCODINGS = frozenset({"gzip", "x-gzip", "deflate"})


class InflateError(ValueError):
    pass


class Inflater:
    """Inflates a `gzip` (members one after another, as Go's reader takes them) or `deflate` (zlib) body."""

    def __init__(self, encoding: str) -> None:
        if encoding not in ENCODINGS:
            raise InflateError(f"unsupported Content-Encoding {encoding[:40]!r} (gzip or deflate expected)")
        self._gzip = encoding != "deflate"
        self._inflater = self._new()
        self._full = False  # the last call filled its cap: zlib may hold more output without more input

    def _new(self) -> zlib._Decompress:
        return zlib.decompressobj(31 if self._gzip else 15)

    def feed(self, data: bytes, budget: int) -> Iterator[bytes]:
        """The output for `data`, piece by piece; stops once more than `budget` bytes came out."""
        while data or self._full:
            inflater = self._inflater
            if inflater.eof:
                if not self._gzip:
                    raise InflateError("data after the end of the deflate stream")
                inflater = self._inflater = self._new()  # the next gzip member
            cap = min(budget + 1, PIECE_BYTES)
            try:
                out = inflater.decompress(data, cap)
            except zlib.error as exc:
                raise InflateError(f"invalid {'gzip' if self._gzip else 'deflate'} data: {exc}") from None
            # At the end of a stream what follows it is in unused_data (and may linger in unconsumed_tail).
            data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
            self._full = len(out) == cap and not inflater.eof
            if out:
                budget -= len(out)
                yield out
                if budget < 0:
                    return

    def finish(self) -> None:
        """Raises if the body ended inside a stream."""
        if not self._inflater.eof:
            raise InflateError(f"{'gzip' if self._gzip else 'deflate'} stream truncated")
