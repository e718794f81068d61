"""Flow control across streams that share a connection, against a real h2c nginx: a client that stops
reading holds up its own streams only, never the streams of another client on the same upstream
connection; an upstream that stops reading request bodies holds up its own streams only, never the
other streams of the same client connection. What the ambassador holds meanwhile stays within one
stream window per stream (the `ambassador_http2_buffered_bytes` gauge)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from h2.settings import SettingCodes

from sidecars.ambassador.plugin import Ambassador
from sidecars.testing import RunningSidecar, run_sidecar
from tests.integration.ambassador.conftest import listener
from tests.support.nginx import Nginx, write_config

pytestmark = pytest.mark.timeout(120)

WINDOW = 262144  # the stream windows' default, both sides
CONNECTION_WINDOW = 1 << 20  # the connection windows' default
BIG = 4 << 20  # a response 16 stream windows long
SERVER = """
        client_max_body_size 0;
        http2_max_concurrent_streams 128;
        location = /stall {{ echo_sleep 90; echo "late"; }}
        location = /upload {{ echo_read_request_body; echo "got $content_length"; }}
        location /files/ {{ root {dir}/www; }}
"""
# Far beyond how long the test waits: a stream held up until one of these fires is a failure.
PATIENT = {
    "per_try_timeout_secs": 110.0,
    "overall_timeout_secs": 110.0,
    "stream_idle_timeout_secs": 600.0,
    "http2": {"zero_window_timeout_secs": 600.0},
}


@contextlib.asynccontextmanager
async def h2c_nginx() -> AsyncIterator[Nginx]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "www" / "files").mkdir(parents=True)
        (tmp / "www" / "files" / "big").write_bytes(b"z" * BIG)
        nginx = Nginx(tmp, SERVER, name="n1", echo=True)
        write_config(tmp, SERVER, nginx.port, name="n1", echo=True, listen="reuseport http2")
        try:
            await nginx.start()
            yield nginx
        finally:
            nginx.stop()


@contextlib.asynccontextmanager
async def ambassador(
    nginx: Nginx, http2: dict[str, int] | None = None, **extra: int
) -> AsyncIterator[tuple[RunningSidecar, int]]:
    cluster = {"protocol": "http2", "http2": {"max_connections_per_endpoint": 1}}
    options = {**PATIENT, **extra, "http2": {**PATIENT["http2"], **(http2 or {})}}
    async with run_sidecar(Ambassador, listeners=[listener([nginx.address], cluster=cluster, **options)]) as sc:
        yield sc, sc.plugin.listeners[0].port


def buffered(sc: RunningSidecar, direction: str) -> float:
    value = sc.sample("ambassador_http2_buffered_bytes", {"listener": "web", "cluster": "web", "direction": direction})
    assert value is not None, "ambassador_http2_buffered_bytes missing"
    return value


async def until(check: Callable[[], bool], secs: float, what: str) -> None:
    """Polls `check` until it holds; fails naming `what` after `secs` seconds."""
    deadline = time.monotonic() + secs
    while not check():
        assert time.monotonic() < deadline, f"not within {secs}s: {what}"
        await asyncio.sleep(0.02)


class Client:
    """An HTTP/2 client on asyncio streams: sends request bodies as its windows allow, reads and
    acknowledges responses (`read=False`: never reads a byte, its stream windows set to 0)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, read: bool) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        if not read:
            self.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 0})
        self.bodies: dict[int, bytes] = {}  # request bytes still to send, by stream
        self.got: dict[int, bytearray] = {}
        self.status: dict[int, bytes] = {}
        self.ended: set[int] = set()
        self.pongs = 0
        self.task = asyncio.create_task(self._read()) if read else None
        self._flush()

    @classmethod
    async def connect(cls, port: int, read: bool = True) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, read)

    def request(self, path: bytes, body: bytes | None = None) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        method = b"GET" if body is None else b"POST"
        head = [(b":method", method), (b":scheme", b"http"), (b":authority", b"localhost"), (b":path", path)]
        if body is not None:
            head.append((b"content-length", b"%d" % len(body)))
            self.bodies[stream_id] = body
        self.conn.send_headers(stream_id, head, end_stream=body is None)
        self.got[stream_id] = bytearray()
        self._pump()
        return stream_id

    def blocked(self, stream_id: int) -> bool:
        """The stream has request bytes left and no window to send them in."""
        return bool(self.bodies.get(stream_id)) and self.conn.local_flow_control_window(stream_id) == 0

    def _pump(self) -> None:
        for stream_id, body in list(self.bodies.items()):
            size = min(len(body), self.conn.local_flow_control_window(stream_id), 16384)
            while size > 0:
                self.conn.send_data(stream_id, body[:size], end_stream=size == len(body))
                body = body[size:]
                size = min(len(body), self.conn.local_flow_control_window(stream_id), 16384)
            self.bodies[stream_id] = body
            if not body:
                del self.bodies[stream_id]
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)

    async def _read(self) -> None:
        while data := await self.reader.read(65536):
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    self.status[event.stream_id] = dict(event.headers)[b":status"]
                elif isinstance(event, h2.events.DataReceived):
                    self.got[event.stream_id] += event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    self.ended.add(event.stream_id)
                elif isinstance(event, h2.events.PingAckReceived):
                    self.pongs += 1
            self._pump()

    async def fence(self) -> None:
        """Returns once the peer has read every frame sent before (it answers a PING in order)."""
        pongs = self.pongs
        self.conn.ping(b"fence-01")
        self._flush()
        await until(lambda: self.pongs > pongs, 30, "the PING's acknowledgement")

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, h2.exceptions.ProtocolError):
                await self.task
        self.writer.close()


@contextlib.asynccontextmanager
async def client(port: int, read: bool = True) -> AsyncIterator[Client]:
    c = await Client.connect(port, read)
    try:
        yield c
    finally:
        await c.close()


async def test_a_client_that_stops_reading_does_not_stall_another_client_on_the_shared_upstream_connection() -> None:
    async with h2c_nginx() as nginx, ambassador(nginx) as (sc, port), client(port, read=False) as a, client(port) as b:
        held_up = [a.request(b"/files/big") for _ in range(8)]
        # Four of A's streams take the upstream connection's whole window (1 MiB) unless it is
        # given back as the bytes arrive.
        await until(lambda: buffered(sc, "response") >= 4 * WINDOW, 30, "A's streams fill their buffers")
        stream_id = b.request(b"/files/big")
        await until(lambda: stream_id in b.ended, 30, "B's response, on the same upstream connection")
        assert b.status[stream_id] == b"200" and len(b.got[stream_id]) == BIG
        assert dict(sc.plugin.listeners[0].stats.upstream_connections) == {nginx.address: 1}
        # Every stream of A holds one stream window, however much more nginx has for it (30 MiB).
        await until(lambda: buffered(sc, "response") >= len(held_up) * WINDOW, 30, "A's buffers full")
        assert buffered(sc, "response") == len(held_up) * WINDOW
        assert not a.ended


async def test_an_upstream_that_stops_reading_one_body_does_not_stall_the_other_streams_of_the_client() -> None:
    async with h2c_nginx() as nginx, ambassador(nginx) as (sc, port), client(port) as c:
        stalled = [c.request(b"/stall", b"s" * (2 * WINDOW)) for _ in range(8)]
        # nginx never reads these bodies: each stream's window closes, then (unless the connection
        # window is given back as bytes arrive) the client connection's.
        await until(lambda: all(c.blocked(s) for s in stalled), 30, "the stalled bodies wait for windows")
        stream_id = c.request(b"/upload", b"u" * WINDOW)
        await until(lambda: stream_id in c.ended, 30, "the upload on the same client connection")
        assert c.status[stream_id] == b"200"
        assert bytes(c.got[stream_id]) == b"got %d\n" % WINDOW
        # What the ambassador holds of the stalled bodies: one stream window each at most.
        assert 0 < buffered(sc, "request") <= len(stalled) * WINDOW
        assert not any(s in c.ended for s in stalled)


async def test_what_one_client_connection_holds_of_stalled_bodies_stays_within_its_buffer() -> None:
    budget = CONNECTION_WINDOW
    async with (
        h2c_nginx() as nginx,
        # No copies kept for retries: the gauge then shows the bytes held for the client alone.
        ambassador(nginx, http2={"connection_buffer_bytes": budget}, max_retry_body_bytes=0) as (sc, port),
        client(port) as c,
    ):
        stalled = [c.request(b"/stall", b"s" * (2 * WINDOW)) for _ in range(24)]
        # Their stream windows would let 24 x 256 KiB (6 MiB) in; the connection's window stays open
        # for its buffer's worth of held bytes only, then opens as bytes are passed on.
        await until(lambda: all(c.blocked(s) for s in stalled), 30, "the stalled bodies wait for windows")
        await c.fence()  # every byte the client could send is in
        held = buffered(sc, "request")
        assert budget // 2 < held <= budget + CONNECTION_WINDOW, held
        assert not any(s in c.ended for s in stalled)
