"""The HTTP/2 attacks against the ambassador's listener, each answered with the right error code and
counted: rapid reset, CONTINUATION flood, HPACK bomb, SETTINGS and PING floods, too many streams,
zero-window stalls. Clients are raw `h2` connections writing the frames an attacker would."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import h2.events
import hpack
import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from sidecars.ambassador.plugin import Ambassador
from sidecars.testing import RunningSidecar, run_sidecar
from tests.integration.ambassador.conftest import listener
from tests.integration.ambassador.grpc_service import grpc_server
from tests.integration.ambassador.h2_client import RawH2, frame
from tests.integration.ambassador.h2_upstream import h2_upstream

pytestmark = pytest.mark.timeout(60)

HEADERS, RST_STREAM, SETTINGS, PING, CONTINUATION = 0x1, 0x3, 0x4, 0x6, 0x9
END_STREAM, END_HEADERS = 0x1, 0x4
BASE = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"localhost"), (b":path", b"/")]


@contextlib.asynccontextmanager
async def ambassador(mode: str = "silent", **http2: Any) -> AsyncIterator[tuple[RunningSidecar, int]]:
    async with h2_upstream("up", mode=mode) as up:
        config = listener([up.address], cluster={"protocol": "http2"}, http2=http2)
        async with run_sidecar(Ambassador, listeners=[config]) as sc:
            yield sc, sc.plugin.listeners[0].port


def violations(sc: RunningSidecar) -> dict[str, int]:
    return dict(sc.plugin.listeners[0].stats.h2_violations)


def attack(port: int, payload: Any) -> h2.events.ConnectionTerminated | None:
    raw = RawH2(port)
    try:
        payload(raw)
        return raw.goaway()
    finally:
        raw.close()


async def test_rapid_reset_ends_the_connection_with_enhance_your_calm() -> None:
    async with ambassador(max_resets_per_sec=50) as (sc, port):

        def payload(raw: RawH2) -> None:
            encoder = hpack.Encoder()
            burst = bytearray()
            for i in range(300):
                stream_id = 2 * i + 1
                burst += frame(HEADERS, END_HEADERS | END_STREAM, stream_id, encoder.encode(BASE))
                burst += frame(RST_STREAM, 0, stream_id, int(ErrorCodes.CANCEL).to_bytes(4, "big"))
            raw.send_raw(bytes(burst))

        ended = await asyncio.to_thread(attack, port, payload)
        assert ended is not None and ended.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert violations(sc) == {"h2_rapid_reset": 1}


async def test_continuation_flood_is_cut_before_the_block_is_decoded() -> None:
    async with ambassador(max_continuation_frames=8) as (sc, port):

        def payload(raw: RawH2) -> None:
            block = hpack.Encoder().encode(BASE)
            data = frame(HEADERS, 0, 1, block)  # no END_HEADERS: CONTINUATION frames follow
            data += b"".join(frame(CONTINUATION, 0, 1, b"\x40\x01a\x01b") for _ in range(200))
            raw.send_raw(data)

        ended = await asyncio.to_thread(attack, port, payload)
        assert ended is not None and ended.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert violations(sc) == {"h2_continuation_flood": 1}


async def test_hpack_bomb_is_refused_by_its_decoded_size() -> None:
    async with ambassador(max_header_list_bytes=16384) as (sc, port):

        def payload(raw: RawH2) -> None:
            # One 4 KiB field into the dynamic table, then 1-byte references to it: a small block that
            # decodes to far more than the header list limit.
            encoder = hpack.Encoder()
            block = encoder.encode([*BASE, (b"x-big", b"v" * 4000)])
            block += bytes([0x80 | 62]) * 100  # indexed field 62: the newest dynamic entry
            assert len(block) < 16384
            raw.send_raw(frame(HEADERS, END_HEADERS | END_STREAM, 1, block))

        ended = await asyncio.to_thread(attack, port, payload)
        assert ended is not None and ended.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert violations(sc) == {"h2_header_list_too_large": 1}


@pytest.mark.parametrize(("kind", "reason"), [(SETTINGS, "h2_settings_flood"), (PING, "h2_ping_flood")])
async def test_settings_and_ping_floods(kind: int, reason: str) -> None:
    async with ambassador() as (sc, port):

        def payload(raw: RawH2) -> None:
            body = b"" if kind == SETTINGS else b"12345678"
            raw.send_raw(b"".join(frame(kind, 0, 0, body) for _ in range(200)))

        ended = await asyncio.to_thread(attack, port, payload)
        assert ended is not None and ended.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert violations(sc) == {reason: 1}


async def test_streams_over_the_limit_are_refused_and_twice_as_many_end_the_connection() -> None:
    async with ambassador(max_concurrent_streams=4) as (sc, port):

        def refused(raw: RawH2) -> list[Any]:
            for _ in range(5):
                raw.request(b"/", end_stream=True)
            return raw.read_until(lambda e: isinstance(e, h2.events.StreamReset))

        raw = RawH2(port)
        try:
            events = await asyncio.to_thread(refused, raw)
        finally:
            raw.close()
        resets = [e for e in events if isinstance(e, h2.events.StreamReset)]
        assert [(e.stream_id, e.error_code) for e in resets] == [(9, ErrorCodes.REFUSED_STREAM)]
        assert sc.plugin.listeners[0].stats.errors.get("h2_too_many_streams") == 1

        def burst(raw: RawH2) -> None:
            encoder = hpack.Encoder()
            raw.send_raw(
                b"".join(frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, encoder.encode(BASE)) for i in range(9))
            )

        ended = await asyncio.to_thread(attack, port, burst)
        assert ended is not None and ended.error_code == ErrorCodes.PROTOCOL_ERROR
        assert violations(sc) == {"h2_too_many_streams": 1}


async def test_a_stream_stalled_by_a_closed_window_is_reset() -> None:
    async with grpc_server("s1") as s1:
        config = listener([s1.address], cluster={"protocol": "http2"}, http2={"zero_window_timeout_secs": 0.5})
        async with run_sidecar(Ambassador, listeners=[config]) as sc:
            port = sc.plugin.listeners[0].port

            def stalled() -> list[Any]:
                raw = RawH2(port)
                try:
                    raw.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 0})  # never reads a byte
                    raw.flush()
                    headers = [(b"content-type", b"application/grpc"), (b"te", b"trailers")]
                    stream_id = raw.request(b"/test.Echo/Big", headers, end_stream=False)
                    raw.conn.send_data(stream_id, b"\x00\x00\x00\x00\x0510000", end_stream=True)
                    raw.flush()
                    return raw.read_until(lambda e: isinstance(e, h2.events.StreamReset), timeout=10)
                finally:
                    raw.close()

            events = await asyncio.to_thread(stalled)
            resets = [e for e in events if isinstance(e, h2.events.StreamReset)]
            assert resets and resets[0].error_code == ErrorCodes.CANCEL
            assert violations(sc) == {"h2_zero_window_stall": 1}


async def test_a_malformed_request_resets_its_stream_and_the_connection_serves_on() -> None:
    async with ambassador(mode="ok") as (sc, port):

        def calls() -> list[Any]:
            raw = RawH2(port)
            try:
                bad = raw.request(b"/", [(b"te", b"gzip")], end_stream=True)  # only "trailers" (RFC 9113 §8.2.2)
                good = raw.request(b"/", end_stream=True)
                events = raw.read_until(lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == good)
                return [bad, good, events]
            finally:
                raw.close()

        bad, good, events = await asyncio.to_thread(calls)
        errors = dict(sc.plugin.listeners[0].stats.errors)
    resets = [(e.stream_id, e.error_code) for e in events if isinstance(e, h2.events.StreamReset)]
    assert resets == [(bad, ErrorCodes.PROTOCOL_ERROR)]
    assert any(isinstance(e, h2.events.ResponseReceived) and e.stream_id == good for e in events)
    assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
    assert errors.get("h2_malformed_request") == 1
