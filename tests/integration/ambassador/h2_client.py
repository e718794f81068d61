"""A raw HTTP/2 client on the `h2` state machine, for what a grpcio client will not send: floods,
malformed frames, headers it would not write. Blocking socket I/O, bounded by timeouts."""

from __future__ import annotations

import socket
import time
from typing import Any

import h2.config
import h2.connection
import h2.events


class RawH2:
    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None, validate_outbound_headers=False)
        )
        self.conn.initiate_connection()
        self.flush()
        self.events: list[Any] = []
        self.closed = False

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, path: bytes, headers: list[tuple[bytes, bytes]] = (), end_stream: bool = True) -> int:  # type: ignore[assignment]
        stream_id = self.conn.get_next_available_stream_id()
        base = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"localhost"), (b":path", path)]
        self.conn.send_headers(stream_id, [*base, *headers], end_stream=end_stream)
        self.flush()
        return stream_id

    def read_until(self, predicate: Any, timeout: float = 10.0) -> list[Any]:
        """Events until `predicate(event)` holds for one, or the connection closes; all of them returned."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if predicate(event):
                    return self.events
            if self.closed:
                return self.events
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                continue
            try:
                self.events.extend(self.conn.receive_data(data))
            except h2.exceptions.ProtocolError:
                self.closed = True
            self.flush()
        return self.events

    def goaway(self) -> h2.events.ConnectionTerminated | None:
        self.read_until(lambda e: isinstance(e, h2.events.ConnectionTerminated))
        for event in self.events:
            if isinstance(event, h2.events.ConnectionTerminated):
                return event
        return None

    def close(self) -> None:
        self.sock.close()


def frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream_id.to_bytes(4, "big") + payload
