"""What the HTTP/2 connections share: writes gathered into one per connection per event-loop
callback, and the `h2` state machine set up for the health checks (`grpc_health`); the proxy's own
connections frame by hand (`http2_wire`).

Every `h2` connection here validates what it receives (pseudo-headers, connection-specific fields,
upper-case names, content-length against DATA: RFC 9113 §8) and skips validating what it sends: the
proxy sends only fields it received validated, or wrote itself.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.settings import SettingCodes, Settings

Header = tuple[bytes, bytes]
# The first bytes of every HTTP/2 connection with prior knowledge (RFC 9113 §3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_WINDOW = 65535  # of a new connection, before any WINDOW_UPDATE (RFC 9113 §6.9.2)


def connection(*, client: bool, stream_window: int, max_header_list: int, max_streams: int) -> H2Connection:
    """An `h2` connection with the proxy's settings as its current local settings; call `start` next."""
    conn = H2Connection(
        H2Configuration(
            client_side=client,
            header_encoding=None,
            validate_inbound_headers=True,
            normalize_inbound_headers=True,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
    )
    conn.local_settings = Settings(
        client=client,
        initial_values={
            SettingCodes.ENABLE_PUSH: 0,
            SettingCodes.INITIAL_WINDOW_SIZE: stream_window,
            SettingCodes.MAX_HEADER_LIST_SIZE: max_header_list,
            SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
        },
    )
    conn.decoder.max_header_list_size = max_header_list  # the HPACK bomb's bound, from the first block on
    return conn


def start(conn: H2Connection, connection_window: int) -> None:
    """The connection's opening frames (preface, SETTINGS, the connection window), queued in `conn`."""
    conn.initiate_connection()
    if connection_window > DEFAULT_WINDOW:
        conn.increment_flow_control_window(connection_window - DEFAULT_WINDOW)


class Flushable(Protocol):
    dirty: bool

    def flush(self) -> None: ...


class Writes:
    """Connections with frames queued in their `h2` state: written once, when the callback that queued
    them returns (`flush`), so a read that answers many streams is one write per connection."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: list[Flushable] = []

    def mark(self, conn: Flushable) -> None:
        if not conn.dirty:
            conn.dirty = True
            self.pending.append(conn)

    def flush(self) -> None:
        pending = self.pending
        while pending:
            self.pending = []
            for conn in pending:
                conn.dirty = False
                conn.flush()
            pending = self.pending


def write_out(conn: H2Connection, transport: asyncio.Transport | None) -> None:
    data = conn.data_to_send()
    if data and transport is not None and not transport.is_closing():
        transport.write(data)


__all__ = ["PREFACE", "Header", "Writes", "connection", "start", "write_out"]
