"""A scripted HTTP/2 (h2c) upstream on the `h2` state machine, for behaviours a real gRPC server shows
only by chance: never answering, refusing streams, GOAWAY, tiny windows. Runs in the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import h2.config
import h2.connection
import h2.events
from h2.errors import ErrorCodes


class ScriptedH2(asyncio.Protocol):
    def __init__(self, server: H2Upstream) -> None:
        self.server = server
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections += 1
        self.conn.initiate_connection()
        self._flush()

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self.server.streams += 1
                self.server.requests.append(list(event.headers))
                self._answer(event.stream_id)
            elif isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        self._flush()

    def _answer(self, stream_id: int) -> None:
        mode = self.server.mode
        if mode == "silent":
            return
        if mode == "hints":
            for _ in range(12):  # more than the proxy passes on
                self.conn.send_headers(stream_id, [(b":status", b"103"), (b"link", b"</app.css>; rel=preload")])
            mode = "body"
        if mode == "5xx-once":
            if self.server.streams == 1:
                head = [(b":status", b"503"), (b"content-length", b"15"), (b"x-try", b"1")]
                self.conn.send_headers(stream_id, head)
                self.conn.send_data(stream_id, b"SORRY-503-BODY\n")
                self.conn.send_headers(stream_id, [(b"x-sorry", b"yes")], end_stream=True)
            else:
                self.conn.send_headers(stream_id, [(b":status", b"200")])
                self.conn.send_data(stream_id, b"real\n", end_stream=True)
        elif mode == "always-500":
            body = b'{"error":"db down"}'
            head = [(b":status", b"500"), (b"retry-after", b"7"), (b"content-type", b"application/json")]
            self.conn.send_headers(stream_id, [*head, (b"content-length", b"%d" % len(body))])
            self.conn.send_data(stream_id, body, end_stream=True)
        elif mode == "refuse":
            self.conn.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
        elif mode == "goaway":
            self.conn.close_connection(last_stream_id=0)
        else:
            headers = [
                (b":status", b"200"),
                (b"content-type", b"application/grpc"),
                (b"grpc-status", b"0"),
                (b"x-served-by", self.server.name.encode()),
            ]
            if mode == "body":
                headers = [(b":status", b"200"), (b"x-served-by", self.server.name.encode())]
                self.conn.send_headers(stream_id, headers)
                self.conn.send_data(stream_id, b"hello from " + self.server.name.encode())
                self.conn.send_headers(stream_id, [(b"x-checksum", b"abc")], end_stream=True)
                return
            self.conn.send_headers(stream_id, headers, end_stream=True)

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)


class H2Upstream:
    def __init__(self, name: str, mode: str) -> None:
        self.name = name
        self.mode = mode
        self.connections = 0
        self.streams = 0
        self.requests: list[list[tuple[bytes, bytes]]] = []  # the header lists received, in order
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def h2_upstream(name: str, mode: str = "ok") -> AsyncIterator[H2Upstream]:
    """mode: ok (Trailers-Only grpc-status 0 with x-served-by), body (a body without content-length, then
    trailers), hints (twelve 103 Early Hints, then as body), silent, refuse (REFUSED_STREAM), goaway,
    5xx-once (the first stream a 503 with a body and trailers, then a 200 `real\n` without a length),
    always-500 (a 500 with `retry-after: 7` and a JSON body)."""
    upstream = H2Upstream(name, mode)
    server = await asyncio.get_running_loop().create_server(lambda: ScriptedH2(upstream), "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    try:
        yield upstream
    finally:
        server.close()
