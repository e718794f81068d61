"""HTTP/2 connections framed by hand (RFC 9113): the proxy's side of the app's connections
(`ServerWire`) and of its connections to the endpoints (`ClientWire`).

A proxy needs a small part of HTTP/2: heads, bodies and trailers passed on, flow control both ways,
SETTINGS, PING, GOAWAY, RST_STREAM. `h2`'s general state machine costs several times what that part
needs per stream (an event object, state-machine transitions and a frame object for every frame),
so `Wire` frames it in one pass over each read and calls its subclass back directly. What it still
checks of every frame the peer sends (every peer is treated as hostile): frame sizes and stream ids,
header blocks (CONTINUATION only right after, bounded in frames and bytes), HPACK and the header
list size, the header fields (RFC 9113 §8, with `h2`'s own checks), content-length against DATA,
both flow-control windows. A connection error queues GOAWAY and raises `WireError`; a malformed
stream is reset (a stream error) and reported to the subclass.

HPACK and the header checks are memoized (`http2_hpack`). The floods a client may try (rapid reset,
SETTINGS, PING, CONTINUATION) are cut before the wire sees the bytes (`http2_limits.InboundGuard`).
"""

from __future__ import annotations

from typing import Any

import h2.exceptions
from h2.errors import ErrorCodes
from h2.utilities import HeaderValidationFlags
from hpack.exceptions import OversizedHeaderListError

from sidecars.ambassador.cluster.http2_frames import DEFAULT_WINDOW, PREFACE, Header
from sidecars.ambassador.cluster.http2_hpack import CachingDecoder, CachingEncoder, checked_headers

MAX_WINDOW = 2**31 - 1
# Bytes of a connection's open streams held with their connection window given back (the setting's
# default; `Wire.connection_buffer`).
DEFAULT_CONNECTION_BUFFER = 4 << 20
MAX_FRAME = 16384  # what the proxy accepts (it never raises SETTINGS_MAX_FRAME_SIZE)
MAX_CONTINUATIONS = 64
# The most of a peer's SETTINGS_HEADER_TABLE_SIZE the proxy's encoder uses (the default; nghttp2's bound
# too): the setting is what the peer can hold, and a table as large as it says would be kept and
# searched for every field sent.
MAX_ENCODER_TABLE = 4096
# PING and SETTINGS acknowledgements queued while the transport's buffer is full (the peer does not
# read): beyond, the connection ends (nghttp2 allows 1000 queued).
MAX_OWED_ACKS = 1000
# Streams reset lately (by the proxy or the client) whose late header blocks are ignored, not a
# connection error: as many as may be open at once (their frames can be in flight), up to this.
RESET_MEMORY = 1024

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT, S_INITIAL_WINDOW, S_MAX_FRAME, S_MAX_HEADER_LIST = range(1, 7)

# The kinds of header block, as `h2`'s checks tell them apart.
RESPONSE = HeaderValidationFlags(is_client=True, is_trailer=False, is_response_header=True, is_push_promise=False)
TRAILER = HeaderValidationFlags(is_client=True, is_trailer=True, is_response_header=False, is_push_promise=False)
REQUEST = HeaderValidationFlags(is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False)
REQUEST_TRAILER = REQUEST._replace(is_trailer=True)


class WireError(h2.exceptions.ProtocolError):
    """The peer broke HTTP/2: the connection is over (GOAWAY with `error_code` is queued). `reason`
    names the violation for the counters."""

    def __init__(
        self, message: str, error_code: int = ErrorCodes.PROTOCOL_ERROR, reason: str = "h2_protocol_error"
    ) -> None:
        super().__init__(message)
        self.error_code = error_code  # type: ignore[assignment]  # h2's attribute holds any code
        self.reason = reason


def _head(length: int, kind: int, flags: int, stream_id: int) -> bytes:
    return (length << 48 | kind << 40 | flags << 32 | stream_id).to_bytes(9, "big")


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return _head(len(payload), kind, flags, stream_id) + payload


class WireStream:
    __slots__ = (
        "expected",
        "grown",
        "head",
        "held",
        "local_closed",
        "received",
        "recv_window",
        "remote_closed",
        "send_window",
        "unacked",
    )

    def __init__(self, send_window: int, recv_window: int, head: bool, local_closed: bool) -> None:
        self.send_window = send_window
        self.recv_window = recv_window  # bytes the peer may still send on this stream
        self.unacked = 0  # bytes passed on, not yet given back in a WINDOW_UPDATE
        self.local_closed = local_closed  # our END_STREAM is sent
        self.remote_closed = False  # theirs is received; the stream is forgotten once both are
        self.head = head  # a HEAD request: the response has no body, whatever content-length says
        self.expected: int | None = None  # the peer's content-length (-1: none), once its head is in
        self.received = 0
        self.grown = False  # its send window grew in the current read: told once at its end
        self.held = 0  # bytes passed to the subclass, not yet passed on by it (`credit`)


class Wire:
    """Frames, windows and settings of one connection, either side; a subclass handles what arrives."""

    # Slots: the framing's state is read on every frame, and a subclass's own attributes (an asyncio
    # protocol's) stay few enough in its instance dict for CPython's fast attribute access.
    __slots__ = (
        "block",
        "block_end_stream",
        "block_frames",
        "block_stream",
        "buffer",
        "conn_held",
        "conn_owed",
        "conn_recv_window",
        "conn_send_window",
        "conn_unacked",
        "connection_buffer",
        "connection_window",
        "decoder",
        "encoder",
        "grown_streams",
        "max_header_list",
        "next_stream_id",
        "out",
        "owed_acks",
        "peer_goaway_code",
        "peer_last_stream",
        "remote_initial_window",
        "remote_max_frame",
        "remote_max_streams",
        "self_dependent",
        "settings_pending",
        "stream_window",
        "window_grown",
        "wire_closed",
        "wire_streams",
        "writable",
    )

    def __init__(
        self,
        *,
        stream_window: int,
        connection_window: int,
        max_header_list: int,
        connection_buffer: int = DEFAULT_CONNECTION_BUFFER,
    ) -> None:
        self.out = bytearray()
        self.wire_streams: dict[int, WireStream] = {}
        self.next_stream_id = 1
        self.encoder = CachingEncoder()
        self.decoder = CachingDecoder(max_header_list)
        self.max_header_list = max_header_list
        self.stream_window = stream_window
        self.connection_window = max(connection_window, DEFAULT_WINDOW)
        self.conn_recv_window = DEFAULT_WINDOW
        self.conn_unacked = 0
        # Bytes of open streams passed to the subclass and not yet passed on; of those, the bytes whose
        # connection window is not given back yet: at most `connection_buffer` held bytes have theirs
        # back, so one connection holds at most `connection_buffer` + its connection window.
        self.connection_buffer = connection_buffer
        self.conn_held = 0
        self.conn_owed = 0
        self.conn_send_window = DEFAULT_WINDOW
        self.remote_initial_window = DEFAULT_WINDOW
        self.remote_max_frame = 16384
        self.remote_max_streams = 100
        self.buffer = b""
        self.block: bytearray | None = None  # a header block waiting for its CONTINUATION frames
        self.block_stream = 0
        self.block_end_stream = False
        self.block_frames = 0
        self.wire_closed = False  # GOAWAY sent: nothing more is sent or read
        self.writable = True  # False while the transport's buffer is full
        self.owed_acks = 0  # acknowledgements queued while not writable
        self.window_grown = False  # the connection's send window grew in the current read
        self.grown_streams: list[int] = []  # streams whose send window grew in the current read
        self.peer_last_stream = MAX_WINDOW + 1  # the lowest last stream id of the peer's GOAWAY frames
        self.peer_goaway_code = 0
        self.settings_pending = True  # the peer's first frame, which must be SETTINGS, is still to come
        self.self_dependent = False  # the header block being received names its own stream as parent

    # -- sending -----------------------------------------------------------------------------------

    def _initiate(self, opening: bytes, settings: tuple[tuple[int, int], ...]) -> None:
        payload = b"".join(code.to_bytes(2, "big") + value.to_bytes(4, "big") for code, value in settings)
        self.out += opening + _frame(SETTINGS, 0, 0, payload)
        if self.connection_window > DEFAULT_WINDOW:
            grow = self.connection_window - DEFAULT_WINDOW
            self.conn_recv_window += grow
            self.out += _frame(WINDOW_UPDATE, 0, 0, grow.to_bytes(4, "big"))

    def data_to_send(self) -> bytes:
        out = bytes(self.out)
        self.out.clear()
        return out

    def _headers(self, stream_id: int, headers: list[Header], end_stream: bool) -> None:
        block = self.encoder.encode(headers)
        size = self.remote_max_frame
        flags = END_STREAM if end_stream else 0
        out = self.out
        if len(block) <= size:
            out += _head(len(block), HEADERS, flags | END_HEADERS, stream_id)
            out += block
            return
        out += _head(size, HEADERS, flags, stream_id)
        out += block[:size]
        for at in range(size, len(block), size):
            chunk = block[at : at + size]
            last = at + size >= len(block)
            out += _head(len(chunk), CONTINUATION, END_HEADERS if last else 0, stream_id)
            out += chunk

    def send(self, stream_id: int, data: bytes, end_stream: bool = False) -> int:
        """Queue as much of `data` as both windows allow; the bytes queued."""
        stream = self.wire_streams.get(stream_id)
        if stream is None or stream.local_closed:
            return 0
        size = min(len(data), stream.send_window, self.conn_send_window)
        if size <= 0 and (data or not end_stream):
            return 0
        end = end_stream and size == len(data)
        frame = self.remote_max_frame
        out = self.out
        at = 0
        while True:
            stop = min(at + frame, size)
            out += _head(stop - at, DATA, END_STREAM if end and stop == size else 0, stream_id)
            out += data[at:stop]
            at = stop
            if at >= size:
                break
        stream.send_window -= size
        self.conn_send_window -= size
        if end:
            self._local_end(stream_id, stream)
        return size

    def finish(self, stream_id: int, trailers: list[Header] | None) -> None:
        """Our end of the stream: trailers, or an empty DATA frame with END_STREAM."""
        stream = self.wire_streams.get(stream_id)
        if stream is None or stream.local_closed:
            return
        if trailers:
            self._headers(stream_id, trailers, True)
        else:
            self.out += _head(0, DATA, END_STREAM, stream_id)
        self._local_end(stream_id, stream)

    def _local_end(self, stream_id: int, stream: WireStream) -> None:
        stream.local_closed = True
        if stream.remote_closed:
            self._forget(stream_id)

    def _remote_end(self, stream_id: int, stream: WireStream) -> None:
        stream.remote_closed = True
        if stream.local_closed:
            self._forget(stream_id)

    def _forget(self, stream_id: int) -> WireStream | None:
        """The stream is over: what it held no longer counts against the connection's buffer."""
        stream = self.wire_streams.pop(stream_id, None)
        if stream is not None and stream.held:
            self._release(stream.held)
            stream.held = 0
        return stream

    def rst(self, stream_id: int, code: int) -> None:
        """RST_STREAM for a stream still open (either way); forgotten."""
        if self._forget(stream_id) is not None:
            self.out += _frame(RST_STREAM, 0, stream_id, int(code).to_bytes(4, "big"))

    def _conn_credit(self, size: int) -> None:
        """The peer may send `size` more bytes on the connection (batched: a WINDOW_UPDATE once half
        the window is owed)."""
        unacked = self.conn_unacked + size
        if unacked >= self.connection_window // 2:
            self.out += _frame(WINDOW_UPDATE, 0, 0, unacked.to_bytes(4, "big"))
            self.conn_recv_window += unacked
            self.conn_unacked = 0
        else:
            self.conn_unacked = unacked

    def _hold(self, stream: WireStream, flow: int) -> None:
        """`flow` bytes go to the subclass: their connection window comes back at once while the
        connection's held bytes stay within `connection_buffer`, else as bytes are passed on."""
        stream.held += flow
        self.conn_held = held = self.conn_held + flow
        over = held - self.conn_owed - self.connection_buffer
        if over > 0:
            owe = min(flow, over)
            self.conn_owed += owe
            flow -= owe
        if flow:
            self._conn_credit(flow)

    def _release(self, size: int) -> None:
        """`size` held bytes were passed on (or dropped with their stream): connection window owed
        comes back as far as the buffer has room again."""
        self.conn_held -= size
        owed = self.conn_owed
        if owed:
            back = min(owed, self.connection_buffer - (self.conn_held - owed))
            if back > 0:
                self.conn_owed = owed - back
                self._conn_credit(back)

    def credit(self, stream_id: int, size: int) -> None:
        """`size` received bytes of the stream were passed on: the peer may send that many more on it
        (batched: a WINDOW_UPDATE once half a window is owed). The connection's window came back as
        the bytes arrived, or comes back now if the connection held more than its buffer (`_hold`)."""
        stream = self.wire_streams.get(stream_id)
        if stream is None:
            return
        if stream.held:
            passed = min(size, stream.held)
            stream.held -= passed
            self._release(passed)
        if stream.remote_closed:
            return
        stream.unacked += size
        if stream.unacked >= self.stream_window // 2:
            stream.recv_window += stream.unacked
            self.out += _frame(WINDOW_UPDATE, 0, stream_id, stream.unacked.to_bytes(4, "big"))
            stream.unacked = 0

    def send_goaway(self, code: int = ErrorCodes.NO_ERROR, last_stream_id: int = 0) -> None:
        """The last GOAWAY: nothing more is sent or read."""
        if not self.wire_closed:
            self.wire_closed = True
            self.out += _frame(GOAWAY, 0, 0, last_stream_id.to_bytes(4, "big") + int(code).to_bytes(4, "big"))

    # -- receiving ---------------------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Handle every whole frame of what came in; WireError on a connection error."""
        if self.wire_closed:
            return
        buf = self.buffer + data if self.buffer else data
        size = len(buf)
        pos = 0
        mark = len(self.out)
        if self.writable:
            self.owed_acks = 0
        try:
            if self.settings_pending and size >= 5:
                if buf[3] != SETTINGS or buf[4] & ACK:
                    raise WireError("the peer's first frame is not SETTINGS (RFC 9113 §3.4)")
                self.settings_pending = False
            while size - pos >= 9:
                length = int.from_bytes(buf[pos : pos + 3], "big")
                if length > MAX_FRAME:
                    raise WireError(f"frame of {length} bytes over {MAX_FRAME}", ErrorCodes.FRAME_SIZE_ERROR)
                end = pos + 9 + length
                if end > size:
                    break
                kind = buf[pos + 3]
                flags = buf[pos + 4]
                stream_id = int.from_bytes(buf[pos + 5 : pos + 9], "big") & MAX_WINDOW
                payload = buf[pos + 9 : end]
                pos = end
                if self.block is not None and (kind != CONTINUATION or stream_id != self.block_stream):
                    raise WireError("a header block interrupted before its end")
                if kind == DATA:
                    self._data(stream_id, flags, payload)
                elif kind == HEADERS:
                    self._headers_frame(stream_id, flags, payload)
                elif kind == CONTINUATION:
                    self._continuation(stream_id, flags, payload)
                elif kind == WINDOW_UPDATE:
                    self._window_update(stream_id, payload)
                elif kind == RST_STREAM:
                    if stream_id == 0 or length != 4:
                        raise WireError("RST_STREAM on stream 0 or not 4 bytes", ErrorCodes.FRAME_SIZE_ERROR)
                    self._check_known(stream_id)
                    if self._forget(stream_id) is not None:
                        self._reset_done(stream_id)
                        self.on_stream_reset(stream_id, int.from_bytes(payload, "big"))
                elif kind == SETTINGS:
                    self._settings(stream_id, flags, payload)
                elif kind == PING:
                    if stream_id != 0 or length != 8:
                        raise WireError("PING on a stream or not 8 bytes", ErrorCodes.FRAME_SIZE_ERROR)
                    if not flags & ACK:
                        if not self.writable:
                            self._owe_ack()
                        self.out += _frame(PING, ACK, 0, payload)
                elif kind == GOAWAY:
                    if stream_id != 0 or length < 8:
                        raise WireError("GOAWAY on a stream or under 8 bytes")
                    last = int.from_bytes(payload[:4], "big") & MAX_WINDOW
                    code = int.from_bytes(payload[4:8], "big")
                    # Told only when it says more (each one makes the subclass look through its
                    # streams): a lower last stream id (it may not grow: RFC 9113 §6.8), a first error.
                    if last < self.peer_last_stream or (code and not self.peer_goaway_code):
                        self.peer_last_stream = last = min(last, self.peer_last_stream)
                        self.peer_goaway_code = self.peer_goaway_code or code
                        self.on_goaway(last, code)
                elif kind == PUSH_PROMISE:
                    raise WireError("PUSH_PROMISE with push disabled")
                elif kind == PRIORITY:
                    if stream_id == 0 or length != 5:
                        raise WireError("PRIORITY on stream 0 or not 5 bytes", ErrorCodes.FRAME_SIZE_ERROR)
                    if int.from_bytes(payload[:4], "big") & MAX_WINDOW == stream_id:
                        self._depends_on_itself(stream_id)
                # Frames of unknown types are ignored (RFC 9113 §4.1).
        except WireError as exc:
            # As `h2` does, the read that broke the connection is answered by the GOAWAY alone (no
            # resets or acks for streams the peer may not know were taken).
            del self.out[mark:]
            self.send_goaway(exc.error_code, self.last_stream_id())
            self.buffer = b""
            raise
        self.buffer = buf[pos:] if pos < size else b""
        if self.window_grown or self.grown_streams:
            self._tell_windows()

    def _tell_windows(self) -> None:
        """Windows that grew in this read, each told once: a peer sending many small WINDOW_UPDATE
        frames makes the streams try to send once per read, not once per 13 bytes of its own."""
        grown = self.grown_streams
        if grown:
            self.grown_streams = []
            streams = self.wire_streams
            for stream_id in grown:
                stream = streams.get(stream_id)
                if stream is not None and stream.grown:
                    stream.grown = False
                    if not self.window_grown:
                        self.on_window(stream_id)
        if self.window_grown:
            self.window_grown = False
            self.on_window(0)

    def _owe_ack(self) -> None:
        self.owed_acks += 1
        if self.owed_acks > MAX_OWED_ACKS:
            raise WireError(
                f"over {MAX_OWED_ACKS} PING or SETTINGS acknowledgements owed to a peer that does not read",
                ErrorCodes.ENHANCE_YOUR_CALM,
                "h2_ack_flood",
            )

    def _unpad(self, flags: int, payload: bytes) -> bytes:
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                raise WireError("padding longer than the frame")
            return payload[1 : len(payload) - payload[0]]
        return payload

    def _data(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0:
            raise WireError("DATA on stream 0")
        self._check_known(stream_id)
        flow = len(payload)
        if flow > self.conn_recv_window:
            raise WireError("DATA over the connection window", ErrorCodes.FLOW_CONTROL_ERROR)
        # The connection's window comes back as the bytes arrive (while the connection holds no more
        # than `connection_buffer`: `_hold`), each stream's only as its bytes are passed on (`credit`):
        # a stream whose reader is slow holds at most its own window here, and never closes the
        # window the connection's other streams share (as nghttp2 and Envoy do).
        self.conn_recv_window -= flow
        data = self._unpad(flags, payload)
        stream = self.wire_streams.get(stream_id)
        if stream is None:
            self._conn_credit(flow)  # a stream already reset: nothing is held
            return
        if stream.remote_closed or stream.expected is None:
            # After the peer's END_STREAM: STREAM_CLOSED (RFC 9113 §5.1, half-closed (remote)).
            code = ErrorCodes.STREAM_CLOSED if stream.remote_closed else ErrorCodes.PROTOCOL_ERROR
            self._conn_credit(flow)
            self._stream_error(stream_id, "DATA before the response head or after the end", code)
            return
        if flow > stream.recv_window:
            self._conn_credit(flow)
            self._stream_error(stream_id, "DATA over the stream window", ErrorCodes.FLOW_CONTROL_ERROR)
            return
        stream.recv_window -= flow
        stream.received += len(data)
        end = bool(flags & END_STREAM)
        if (stream.expected >= 0 and stream.received > stream.expected) or (
            end and stream.expected >= 0 and stream.received != stream.expected
        ):
            self._conn_credit(flow)
            self._stream_error(stream_id, "DATA does not match content-length")
            return
        self._hold(stream, flow)
        if end:
            self._remote_end(stream_id, stream)
        self.on_data(stream_id, data, flow, end)

    def _headers_frame(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0:
            raise WireError("HEADERS on stream 0")
        block = self._unpad(flags, payload)
        if flags & PRIORITY_FLAG:
            if len(block) < 5:
                raise WireError("HEADERS too short for its priority")
            if int.from_bytes(block[:4], "big") & MAX_WINDOW == stream_id:
                self.self_dependent = True  # a stream error, once the block is decoded (`_block`)
            block = block[5:]
        if flags & END_HEADERS:
            self._block(stream_id, block, bool(flags & END_STREAM))
        else:
            self.block = bytearray(block)
            self.block_stream = stream_id
            self.block_end_stream = bool(flags & END_STREAM)
            self.block_frames = 1

    def _continuation(self, stream_id: int, flags: int, payload: bytes) -> None:
        block = self.block
        if block is None:
            raise WireError("CONTINUATION without a header block")
        block += payload
        self.block_frames += 1
        if self.block_frames > MAX_CONTINUATIONS or len(block) > self.max_header_list:
            raise WireError("header block too long", ErrorCodes.ENHANCE_YOUR_CALM)
        if flags & END_HEADERS:
            self.block = None
            self._block(stream_id, bytes(block), self.block_end_stream)

    def _decode(self, block: bytes) -> list[Any]:
        try:
            return self.decoder.decode(block, raw=True)
        except OversizedHeaderListError as exc:  # the HPACK bomb
            raise WireError(str(exc), ErrorCodes.ENHANCE_YOUR_CALM, "h2_header_list_too_large") from None
        except Exception as exc:  # hpack's errors, and what a broken block makes it raise
            raise WireError(f"header block: {exc}", ErrorCodes.COMPRESSION_ERROR) from None

    def _content_length(self, stream_id: int, headers: list[Any]) -> int | None:
        """The content-length of a head (-1: none); None, and the stream reset, when it is no number
        or comes twice: the DATA would be counted against one, an HTTP/1.1 hop could take the other
        (a request smuggled in the body), so a second one is malformed, as nghttp2 has it."""
        length = -1
        for name, value in headers:
            if name == b"content-length":
                if length >= 0:
                    self._stream_error(stream_id, "more than one content-length")
                    return None
                if not value.isdigit() or len(value) > 19:  # int() refuses over 4300 digits
                    self._stream_error(stream_id, "content-length not a number of at most 19 digits")
                    return None
                length = int(value)
        return length

    def _trailers(self, stream_id: int, stream: WireStream, headers: list[Any], end_stream: bool, kind: Any) -> None:
        try:
            headers = checked_headers(headers, kind)
        except h2.exceptions.ProtocolError as exc:
            self._stream_error(stream_id, str(exc))
            return
        if not end_stream:
            self._stream_error(stream_id, "trailers without END_STREAM")
            return
        if stream.expected is not None and stream.expected >= 0 and stream.received != stream.expected:
            self._stream_error(stream_id, "DATA does not match content-length")
            return
        self._remote_end(stream_id, stream)
        self.on_trailers(stream_id, headers)

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise WireError("WINDOW_UPDATE not 4 bytes", ErrorCodes.FRAME_SIZE_ERROR)
        grow = int.from_bytes(payload, "big") & MAX_WINDOW
        if stream_id == 0:
            if grow == 0:
                raise WireError("WINDOW_UPDATE of 0")
            self.conn_send_window += grow
            if self.conn_send_window > MAX_WINDOW:
                raise WireError("connection window over 2^31-1", ErrorCodes.FLOW_CONTROL_ERROR)
            self.window_grown = True
            return
        self._check_known(stream_id)
        stream = self.wire_streams.get(stream_id)
        if stream is None:
            return
        if grow == 0:
            self._stream_error(stream_id, "WINDOW_UPDATE of 0")
            return
        stream.send_window += grow
        if stream.send_window > MAX_WINDOW:
            self._stream_error(stream_id, "stream window over 2^31-1", ErrorCodes.FLOW_CONTROL_ERROR)
            return
        if not stream.grown:
            stream.grown = True
            self.grown_streams.append(stream_id)

    def _settings(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id != 0:
            raise WireError("SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise WireError("SETTINGS ACK with a payload", ErrorCodes.FRAME_SIZE_ERROR)
            return
        if len(payload) % 6:
            raise WireError("SETTINGS not a multiple of 6 bytes", ErrorCodes.FRAME_SIZE_ERROR)
        if not self.writable:
            self._owe_ack()
        for at in range(0, len(payload), 6):
            code = int.from_bytes(payload[at : at + 2], "big")
            value = int.from_bytes(payload[at + 2 : at + 6], "big")
            if code == S_HEADER_TABLE_SIZE:
                self._peer_table_size(value)
            elif code == S_ENABLE_PUSH:
                if value > 1:
                    raise WireError("ENABLE_PUSH not 0 or 1")
            elif code == S_MAX_CONCURRENT:
                self.remote_max_streams = value
            elif code == S_INITIAL_WINDOW:
                if value > MAX_WINDOW:
                    raise WireError("INITIAL_WINDOW_SIZE over 2^31-1", ErrorCodes.FLOW_CONTROL_ERROR)
                delta = value - self.remote_initial_window
                self.remote_initial_window = value
                for stream in self.wire_streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise WireError("a stream window over 2^31-1", ErrorCodes.FLOW_CONTROL_ERROR)
                self.window_grown = True
            elif code == S_MAX_FRAME:
                if not 16384 <= value <= 2**24 - 1:
                    raise WireError("MAX_FRAME_SIZE out of range")
                self.remote_max_frame = value
        self.out += _head(0, SETTINGS, ACK, 0)

    def _peer_table_size(self, value: int) -> None:
        encoder = self.encoder
        encoder.header_table_size = min(value, MAX_ENCODER_TABLE)
        changes = encoder.table_size_changes
        if len(changes) > 2:
            # RFC 7541 §4.2: the smallest size since the last block, then the last one; a peer changing
            # the setting endlessly must not grow the next block (nor the list) with every change.
            encoder.table_size_changes = [min(changes), changes[-1]]

    def _depends_on_itself(self, stream_id: int) -> None:
        """A PRIORITY frame making a stream its own parent: a stream error (RFC 9113 §5.3.1). For a
        stream not open there is nothing to reset: RST_STREAM must not be sent on an idle stream
        (§6.4), and priority carries no state here, so the frame is dropped."""
        if stream_id in self.wire_streams:
            self._stream_error(stream_id, "a stream depending on itself")

    def _stream_error(self, stream_id: int, reason: str, code: int = ErrorCodes.PROTOCOL_ERROR) -> None:
        """A malformed stream (RFC 9113 §8.1.1): reset it, tell the subclass."""
        if self._forget(stream_id) is not None:
            self.out += _frame(RST_STREAM, 0, stream_id, int(code).to_bytes(4, "big"))
            self.on_stream_error(stream_id, reason)

    # -- what the subclass handles ------------------------------------------------------------------

    def _check_known(self, stream_id: int) -> None:
        raise NotImplementedError

    def _reset_done(self, stream_id: int) -> None:
        """A stream reset by either side, forgotten."""
        pass

    def _block(self, stream_id: int, block: bytes, end_stream: bool) -> None:
        raise NotImplementedError

    def last_stream_id(self) -> int:
        raise NotImplementedError

    def on_data(self, stream_id: int, data: bytes, flow_len: int, end_stream: bool) -> None:
        raise NotImplementedError

    def on_trailers(self, stream_id: int, headers: list[Any]) -> None:
        raise NotImplementedError

    def on_stream_reset(self, stream_id: int, code: int) -> None:
        raise NotImplementedError

    def on_stream_error(self, stream_id: int, reason: str) -> None:
        raise NotImplementedError

    def on_window(self, stream_id: int) -> None:
        raise NotImplementedError

    def on_goaway(self, last_stream_id: int, code: int) -> None:
        raise NotImplementedError


class ClientWire(Wire):
    """The proxy's side of a connection to an endpoint: requests out, responses in."""

    def initiate(self) -> None:
        """The preface, our SETTINGS and the connection window, queued."""
        self._initiate(
            PREFACE,
            (
                (S_ENABLE_PUSH, 0),
                (S_INITIAL_WINDOW, self.stream_window),
                (S_MAX_HEADER_LIST, self.max_header_list),
                (S_MAX_CONCURRENT, 100),
            ),
        )

    def request(self, headers: list[Header], end_stream: bool) -> int:
        """A new stream with `headers` as its head; its id."""
        stream_id = self.next_stream_id
        if stream_id > MAX_WINDOW or self.wire_closed:
            raise h2.exceptions.NoAvailableStreamIDError("no stream id left on this connection")
        self.next_stream_id += 2
        head = False
        for name, value in headers:
            if name == b":method":
                head = value == b"HEAD"
                break
        self.wire_streams[stream_id] = WireStream(self.remote_initial_window, self.stream_window, head, end_stream)
        self._headers(stream_id, headers, end_stream)
        return stream_id

    def last_stream_id(self) -> int:
        return 0  # the endpoint opens no streams (push is off)

    def _check_known(self, stream_id: int) -> None:
        if stream_id >= self.next_stream_id:
            raise WireError(f"frame on stream {stream_id}, never opened")
        if stream_id % 2 == 0:
            raise WireError(f"frame on even stream {stream_id} (push is off)")

    def _block(self, stream_id: int, block: bytes, end_stream: bool) -> None:
        self._check_known(stream_id)
        headers = self._decode(block)
        stream = self.wire_streams.get(stream_id)
        if self.self_dependent:
            self.self_dependent = False
            self._stream_error(stream_id, "a stream depending on itself")
            return
        if stream is None:
            return  # a stream already reset: the block is decoded (the HPACK state moves on) and dropped
        if stream.remote_closed:
            self._stream_error(stream_id, "HEADERS after the end of the stream", ErrorCodes.STREAM_CLOSED)
            return
        if stream.expected is not None:
            self._trailers(stream_id, stream, headers, end_stream, TRAILER)
            return
        try:
            headers = checked_headers(headers, RESPONSE)
        except h2.exceptions.ProtocolError as exc:
            self._stream_error(stream_id, str(exc))
            return
        status = headers[0][1]  # checked: the one :status, and pseudo-headers first
        if len(status) != 3 or not status.isdigit() or not b"100" <= status <= b"599":
            self._stream_error(stream_id, "a :status that is not a 3-digit code")
            return
        if status[:1] == b"1":
            if end_stream:
                self._stream_error(stream_id, "an informational response ends the stream")
            elif status != b"101":
                self.on_informational(stream_id, headers)
            else:
                self._stream_error(stream_id, "101 in HTTP/2")
            return
        if stream.head or status in (b"204", b"304"):
            expected: int | None = 0
        else:
            expected = self._content_length(stream_id, headers)
            if expected is None:
                return
        stream.expected = expected
        if end_stream:
            if expected is not None and expected > 0:
                self._stream_error(stream_id, "response ended short of its content-length")
                return
            self._remote_end(stream_id, stream)
        self.on_response(stream_id, headers, end_stream)

    def on_response(self, stream_id: int, headers: list[Any], end_stream: bool) -> None:
        raise NotImplementedError

    def on_informational(self, stream_id: int, headers: list[Any]) -> None:
        raise NotImplementedError


class ServerWire(Wire):
    """The proxy's side of a connection from the app: requests in, responses out. What it enforces
    itself: the preface, stream ids (odd, rising), `hard_max_streams` open at once (beyond: a
    connection error, `h2_too_many_streams`; the softer limit is the caller's), request fields
    (RFC 9113 §8, `h2`'s checks: a malformed request is a stream error), content-length against
    DATA, the header list size (ENHANCE_YOUR_CALM, `h2_header_list_too_large`)."""

    __slots__ = (
        "hard_max_streams",
        "highest_inbound",
        "max_streams",
        "preface_pending",
        "reset_ids",
        "reset_in_read",
        "reset_memory",
    )

    def __init__(
        self,
        *,
        stream_window: int,
        connection_window: int,
        max_header_list: int,
        max_streams: int,
        hard_max_streams: int,
        connection_buffer: int = DEFAULT_CONNECTION_BUFFER,
    ) -> None:
        super().__init__(
            stream_window=stream_window,
            connection_window=connection_window,
            max_header_list=max_header_list,
            connection_buffer=connection_buffer,
        )
        self.max_streams = max_streams
        self.hard_max_streams = hard_max_streams
        self.highest_inbound = 0
        self.preface_pending = PREFACE
        # Streams reset during the current read (by either side, or for the client's errors) still
        # count against `hard_max_streams`: the client opened them all at once, before any reset
        # could reach it.
        self.reset_in_read = 0
        # The last streams reset: a header block on one of them may have been sent before the reset
        # reached the client (ignored); on any other stream at or below `highest_inbound` it is a
        # connection error (RFC 9113 §5.1, §5.1.1). Keys only, in order.
        self.reset_ids: dict[int, None] = {}
        self.reset_memory = min(hard_max_streams, RESET_MEMORY)

    def initiate(self) -> None:
        """Our SETTINGS and the connection window, queued (the client speaks first)."""
        self._initiate(
            b"",
            (
                (S_MAX_CONCURRENT, self.max_streams),
                (S_INITIAL_WINDOW, self.stream_window),
                (S_MAX_HEADER_LIST, self.max_header_list),
            ),
        )

    def receive(self, data: bytes) -> None:
        if self.preface_pending:
            want = self.preface_pending
            got = data[: len(want)]
            if want[: len(got)] != got:
                self.send_goaway(ErrorCodes.PROTOCOL_ERROR)
                raise WireError("not the HTTP/2 connection preface")
            self.preface_pending = want[len(got) :]
            data = data[len(got) :]
            if not data:
                return
        self.reset_in_read = 0
        super().receive(data)

    def rst(self, stream_id: int, code: int) -> None:
        if stream_id in self.wire_streams:
            self._reset_by_us(stream_id)
        super().rst(stream_id, code)

    def _stream_error(self, stream_id: int, reason: str, code: int = ErrorCodes.PROTOCOL_ERROR) -> None:
        if stream_id in self.wire_streams:
            self._reset_by_us(stream_id)
        super()._stream_error(stream_id, reason, code)

    def _reset_by_us(self, stream_id: int) -> None:
        self.reset_in_read += 1
        self._reset_done(stream_id)

    def _reset_done(self, stream_id: int) -> None:
        ids = self.reset_ids
        ids[stream_id] = None
        if len(ids) > self.reset_memory:
            del ids[next(iter(ids))]

    def respond(self, stream_id: int, headers: list[Header], end_stream: bool) -> None:
        """The response head (or a trailers-only response with `end_stream`)."""
        stream = self.wire_streams.get(stream_id)
        if stream is None or stream.local_closed:
            return
        self._headers(stream_id, headers, end_stream)
        if end_stream:
            self._local_end(stream_id, stream)

    def graceful_goaway(self) -> None:
        """GOAWAY(NO_ERROR) naming the last stream taken: those finish, newer ones are not served."""
        self.out += _frame(GOAWAY, 0, 0, self.highest_inbound.to_bytes(4, "big") + bytes(4))

    def last_stream_id(self) -> int:
        return self.highest_inbound

    def _check_known(self, stream_id: int) -> None:
        if stream_id > self.highest_inbound:
            raise WireError(f"frame on stream {stream_id}, never opened")
        if stream_id % 2 == 0:
            raise WireError(f"frame on even stream {stream_id}")

    def _block(self, stream_id: int, block: bytes, end_stream: bool) -> None:
        headers = self._decode(block)
        stream = self.wire_streams.get(stream_id)
        if stream is not None:
            if self.self_dependent:
                self.self_dependent = False
                self._stream_error(stream_id, "a stream depending on itself")
                return
            if stream.remote_closed:
                self._stream_error(stream_id, "HEADERS after the end of the stream", ErrorCodes.STREAM_CLOSED)
                return
            self._trailers(stream_id, stream, headers, end_stream, REQUEST_TRAILER)
            return
        if stream_id <= self.highest_inbound:
            self.self_dependent = False
            if stream_id in self.reset_ids:
                return  # sent before our reset reached the client: the block moved the HPACK state, no more
            raise WireError(f"a header block on stream {stream_id}, closed or never opened")
        if stream_id % 2 == 0:
            raise WireError(f"a client opened even stream {stream_id}")
        if len(self.wire_streams) + self.reset_in_read + 1 > self.hard_max_streams:
            raise WireError("too many streams open at once", ErrorCodes.PROTOCOL_ERROR, "h2_too_many_streams")
        self.highest_inbound = stream_id
        stream = WireStream(self.remote_initial_window, self.stream_window, False, False)
        self.wire_streams[stream_id] = stream
        if self.self_dependent:
            self.self_dependent = False
            self._stream_error(stream_id, "a stream depending on itself")
            return
        try:
            headers = checked_headers(headers, REQUEST)
        except h2.exceptions.ProtocolError as exc:
            self._stream_error(stream_id, str(exc))
            return
        expected = self._content_length(stream_id, headers)
        if expected is None:
            return
        stream.expected = expected
        if end_stream:
            if expected > 0:
                self._stream_error(stream_id, "request ended short of its content-length")
                return
            stream.remote_closed = True
        self.on_request(stream_id, headers, end_stream)

    def on_request(self, stream_id: int, headers: list[Any], end_stream: bool) -> None:
        raise NotImplementedError


__all__ = ["ClientWire", "ServerWire", "Wire", "WireError", "WireStream"]
