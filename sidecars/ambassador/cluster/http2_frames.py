"""What both HTTP/2 sides share: their `h2` state machines set up alike, sending within a window, and
writes gathered into one per connection per event-loop callback.

Every `h2` connection here validates what it receives (pseudo-headers, connection-specific fields,
upper-case names, content-length against DATA: RFC 9113 §8) and skips validating what it sends: the
proxy sends only fields it received validated, or wrote itself.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from h2.config import H2Configuration
from h2.connection import AllowedStreamIDs, H2Connection
from h2.settings import SettingCodes, Settings
from h2.stream import STREAM_OPEN, H2Stream, StreamState

from sidecars.ambassador.cluster.http2_hpack import CachingDecoder, CachingEncoder, CachingStream

Header = tuple[bytes, bytes]
# The first bytes of every HTTP/2 connection with prior knowledge (RFC 9113 §3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_WINDOW = 65535  # of a new connection, before any WINDOW_UPDATE (RFC 9113 §6.9.2)
SWEEP_AT = 512  # streams, open or closed, one connection's `h2` state tracks before closed ones are swept


class ProxyConnection(H2Connection):
    """`h2`'s connection with memoized HPACK and header checks (`http2_hpack`)."""

    def __init__(self, config: H2Configuration, max_header_list: int) -> None:
        super().__init__(config)
        self.encoder = CachingEncoder()
        self.decoder = CachingDecoder(max_header_list)

    def _open_streams(self, remainder: int) -> int:
        """`h2` counts the open streams of one direction on every new stream, walking them all (and
        sweeping closed ones out) only to compare with that direction's limit. While fewer than the
        limit are tracked at all, that many is a bound that compares the same, and no walk is made;
        at the limit (or `SWEEP_AT`, which bounds what is tracked) the walk counts and sweeps."""
        streams = self.streams
        outbound = (remainder == 1) == self.config.client_side
        limit = (self.remote_settings if outbound else self.local_settings).max_concurrent_streams
        if len(streams) < min(limit, SWEEP_AT):
            return len(streams)
        count = 0
        closed: list[int] = []
        for stream_id, stream in streams.items():
            state = stream.state_machine.state
            if state is StreamState.CLOSED:
                closed.append(stream_id)
            elif STREAM_OPEN[state] and stream_id % 2 == remainder:
                count += 1
        for stream_id in closed:
            self._closed_streams[stream_id] = streams.pop(stream_id).closed_by
        return count

    def _begin_new_stream(self, stream_id: int, allowed_ids: AllowedStreamIDs) -> H2Stream:
        stream = super()._begin_new_stream(stream_id, allowed_ids)
        stream.__class__ = CachingStream  # same layout, memoized `_process_received_headers`
        return stream


def connection(*, client: bool, stream_window: int, max_header_list: int, max_streams: int) -> H2Connection:
    """An `h2` connection with the proxy's settings as its current local settings; call `start` next."""
    conn = ProxyConnection(
        H2Configuration(
            client_side=client,
            header_encoding=None,
            validate_inbound_headers=True,
            normalize_inbound_headers=True,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        ),
        max_header_list,
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


def enforce_max_streams(conn: H2Connection, limit: int) -> None:
    """Let `h2` accept up to `limit` concurrent streams from the peer, whatever SETTINGS advertised
    (`h2` keeps one limit for both and ends the connection one stream past it)."""
    conn.local_settings._settings[SettingCodes.MAX_CONCURRENT_STREAMS] = deque([limit])


def send_some(conn: H2Connection, stream_id: int, data: bytes, end: bool = False) -> int:
    """Queue as much of `data` as the stream's and the connection's windows allow; the bytes queued.
    With `end`, the last frame ends the stream when it carries the last byte."""
    window = conn.local_flow_control_window(stream_id)
    if window <= 0:
        return 0
    size = len(data)
    if size > window:
        size = window
    end = end and size == len(data)
    frame = conn.max_outbound_frame_size
    if size <= frame:
        conn.send_data(stream_id, data if size == len(data) else data[:size], end_stream=end)
        return size
    for at in range(0, size, frame):
        stop = min(at + frame, size)
        conn.send_data(stream_id, data[at:stop], end_stream=end and stop == size)
    return size


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


__all__ = ["PREFACE", "Header", "Writes", "connection", "enforce_max_streams", "send_some", "start", "write_out"]
