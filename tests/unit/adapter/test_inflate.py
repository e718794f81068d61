"""Bounded decompression: exact output for good streams, never more than the budget, clear errors."""

from __future__ import annotations

import gzip
import os
import zlib

import pytest

from sidecars.adapter.inflate import PIECE_BYTES, InflateError, Inflater

# Random bytes (incompressible) and a long run (compresses a thousandfold): both paths of zlib.
DATA = os.urandom(300_000) * 2 + b"x" * 3_000_000


def inflate(body: bytes, encoding: str, budget: int = 1 << 40, step: int = 65536) -> list[bytes]:
    inflater = Inflater(encoding)
    pieces: list[bytes] = []
    total = 0
    for i in range(0, len(body), step):
        for piece in inflater.feed(body[i : i + step], budget - total):
            pieces.append(piece)
            total += len(piece)
            if total > budget:
                return pieces
    inflater.finish()
    return pieces


@pytest.mark.parametrize("step", [7, 1000, 65536, 1 << 30])
def test_gzip_and_deflate_come_out_whole(step: int) -> None:
    assert b"".join(inflate(gzip.compress(DATA), "gzip", step=step)) == DATA
    assert b"".join(inflate(zlib.compress(DATA), "deflate", step=step)) == DATA
    assert all(len(p) <= PIECE_BYTES for p in inflate(gzip.compress(DATA), "x-gzip", step=step))


def test_gzip_members_follow_one_another() -> None:
    body = gzip.compress(DATA) + gzip.compress(b"second member\n")
    assert b"".join(inflate(body, "gzip", step=4096)) == DATA + b"second member\n"


def test_a_bomb_stops_one_piece_past_the_budget() -> None:
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    body = b"".join([bomb.compress(b"\n" * (1 << 20)) for _ in range(256)] + [bomb.flush()])  # 256 MiB
    assert len(body) < 1 << 20
    budget = 1_000_000
    pieces = inflate(body, "gzip", budget=budget, step=len(body))  # the whole bomb in one read
    assert budget < sum(map(len, pieces)) <= budget + 1


@pytest.mark.parametrize(
    ("body", "encoding", "message"),
    [
        (gzip.compress(DATA)[:-10], "gzip", "gzip stream truncated"),
        (b"", "gzip", "gzip stream truncated"),
        (b"not gzip at all", "gzip", "invalid gzip data"),
        (gzip.compress(b"a") + b"\0\0", "gzip", "invalid gzip data"),
        (zlib.compress(b"a") + b"x", "deflate", "data after the end of the deflate stream"),
    ],
)
def test_broken_streams_are_errors(body: bytes, encoding: str, message: str) -> None:
    with pytest.raises(InflateError, match=message):
        inflate(body, encoding)


def test_an_unknown_encoding_is_refused() -> None:
    with pytest.raises(InflateError, match="unsupported Content-Encoding 'br'"):
        Inflater("br")
