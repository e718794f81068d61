"""The hand-framed client side of upstream connections, against `h2` as the server, well-behaved and
not: every frame it must refuse is refused with the right error, every window holds."""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.events
import hpack
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from sidecars.ambassador.cluster.http2_wire import MAX_CONTINUATIONS, ClientWire, ServerWire, Wire, WireError

REQUEST = [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http"), (b":authority", b"a")]
OK = [(b":status", b"200")]


class Recorder(ClientWire):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            stream_window=kwargs.get("stream_window", 65535),
            connection_window=kwargs.get("connection_window", 65535),
            max_header_list=kwargs.get("max_header_list", 16384),
            connection_buffer=kwargs.get("connection_buffer", 1 << 20),
        )
        self.seen: list[tuple[Any, ...]] = []

    def on_response(self, stream_id: int, headers: list[Any], end_stream: bool) -> None:
        self.seen.append(("response", stream_id, [tuple(h) for h in headers], end_stream))

    def on_informational(self, stream_id: int, headers: list[Any]) -> None:
        self.seen.append(("informational", stream_id, [tuple(h) for h in headers]))

    def on_data(self, stream_id: int, data: bytes, flow_len: int, end_stream: bool) -> None:
        self.seen.append(("data", stream_id, data, flow_len, end_stream))

    def on_trailers(self, stream_id: int, headers: list[Any]) -> None:
        self.seen.append(("trailers", stream_id, [tuple(h) for h in headers]))

    def on_stream_reset(self, stream_id: int, code: int) -> None:
        self.seen.append(("reset", stream_id, code))

    def on_stream_error(self, stream_id: int, reason: str) -> None:
        self.seen.append(("error", stream_id, reason))

    def on_window(self, stream_id: int) -> None:
        self.seen.append(("window", stream_id))

    def on_goaway(self, last_stream_id: int, code: int) -> None:
        self.seen.append(("goaway", last_stream_id, code))


def server() -> h2.connection.H2Connection:
    return h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
    )


def pair(**kwargs: Any) -> tuple[Recorder, h2.connection.H2Connection]:
    wire, srv = Recorder(**kwargs), server()
    wire.initiate()
    srv.initiate_connection()
    srv.receive_data(wire.data_to_send())
    wire.receive(srv.data_to_send())
    srv.receive_data(wire.data_to_send())  # our SETTINGS ACK
    wire.seen.clear()
    return wire, srv


def exchange(wire: Recorder, srv: h2.connection.H2Connection) -> list[h2.events.Event]:
    events = srv.receive_data(wire.data_to_send())
    wire.receive(srv.data_to_send())
    return events


def sent_frames(wire: Wire) -> list[Any]:
    """The frames the wire queued, parsed by hyperframe."""

    data, frames = wire.data_to_send(), []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(frame)
        data = data[9 + length :]
    return frames


def test_a_request_and_its_response_body_and_trailers_pass_through() -> None:
    wire, srv = pair()
    stream_id = wire.request(REQUEST, end_stream=True)
    events = srv.receive_data(wire.data_to_send())
    assert [tuple(h) for h in next(e for e in events if isinstance(e, h2.events.RequestReceived)).headers] == REQUEST
    srv.send_headers(stream_id, [*OK, (b"content-length", b"5")])
    srv.send_data(stream_id, b"hello")
    srv.send_headers(stream_id, [(b"grpc-status", b"0")], end_stream=True)
    wire.receive(srv.data_to_send())
    assert wire.seen == [
        ("response", 1, [(b":status", b"200"), (b"content-length", b"5")], False),
        ("data", 1, b"hello", 5, False),
        ("trailers", 1, [(b"grpc-status", b"0")]),
    ]
    assert stream_id not in wire.wire_streams  # both ends closed: forgotten


def test_request_body_goes_within_the_servers_window_and_resumes_on_its_update() -> None:
    wire, srv = pair()
    srv.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 10})
    exchange(wire, srv)
    stream_id = wire.request([(b":method", b"POST"), *REQUEST[1:]], end_stream=False)
    assert wire.send(stream_id, b"x" * 25) == 10
    events = srv.receive_data(wire.data_to_send())
    got = [e for e in events if isinstance(e, h2.events.DataReceived)]
    assert sum(len(e.data) for e in got) == 10
    srv.acknowledge_received_data(10, stream_id)
    srv.increment_flow_control_window(100, stream_id)
    wire.receive(srv.data_to_send())
    assert ("window", stream_id) in wire.seen
    assert wire.send(stream_id, b"x" * 15, end_stream=True) == 15
    events = srv.receive_data(wire.data_to_send())
    assert any(isinstance(e, h2.events.StreamEnded) for e in events)


def test_received_bytes_are_given_back_once_half_a_window_is_owed() -> None:
    wire, srv = pair(stream_window=65535, connection_window=1 << 20)
    stream_id = wire.request(REQUEST, end_stream=True)
    srv.receive_data(wire.data_to_send())
    srv.send_headers(stream_id, OK)
    wire.receive(srv.data_to_send())
    for _ in range(3):
        srv.send_data(stream_id, b"y" * 16000)
    wire.receive(srv.data_to_send())
    wire.credit(stream_id, 16000)
    assert not wire.out  # under half a window owed: no WINDOW_UPDATE yet
    wire.credit(stream_id, 32000)
    updates = [f for f in sent_frames(wire) if isinstance(f, WindowUpdateFrame)]
    assert [(f.stream_id, f.window_increment) for f in updates] == [(stream_id, 48000)]


def test_the_connection_window_comes_back_as_data_arrives_a_streams_only_once_passed_on() -> None:
    wire, srv = pair(stream_window=65535, connection_window=65535)
    held, other = wire.request(REQUEST, end_stream=True), wire.request(REQUEST, end_stream=True)
    srv.receive_data(wire.data_to_send())
    for stream_id in (held, other):
        srv.send_headers(stream_id, OK)
    for _ in range(4):
        srv.send_data(held, b"y" * 16000)  # nearly the whole connection window, never passed on
    wire.receive(srv.data_to_send())
    srv.receive_data(wire.data_to_send())
    # The connection's window came back as the bytes arrived (batched by half a window), the held
    # stream's did not: the other stream may send, where without it 1535 bytes would be left to share.
    assert srv.local_flow_control_window(other) >= 65535 // 2
    assert srv.local_flow_control_window(held) == 65535 - 64000
    wire.credit(held, 64000)  # passed on at last
    srv.receive_data(wire.data_to_send())
    assert srv.streams[held].outbound_flow_control_window == 65535


def test_past_its_buffer_the_connection_window_comes_back_only_as_bytes_are_passed_on() -> None:
    wire, srv = pair(stream_window=65535, connection_window=65535, connection_buffer=32000)
    a, b, c = (wire.request(REQUEST, end_stream=True) for _ in range(3))
    srv.receive_data(wire.data_to_send())
    for stream_id in (a, b, c):
        srv.send_headers(stream_id, OK)
    srv.send_data(a, b"y" * 16000)
    srv.send_data(a, b"y" * 16000)  # the buffer's worth, held: its connection window is given back
    srv.send_data(b, b"y" * 16000)
    srv.send_data(c, b"y" * 16000)  # past the buffer: theirs is not
    wire.receive(srv.data_to_send())
    assert (wire.conn_held, wire.conn_owed) == (64000, 32000)
    srv.receive_data(wire.data_to_send())
    assert srv.outbound_flow_control_window == 65535 - 64000  # 32000 owed to the peer, not yet told
    wire.credit(b, 16000)  # passed on: the buffer has room again, as much comes back
    srv.receive_data(wire.data_to_send())
    assert (wire.conn_held, wire.conn_owed) == (48000, 16000)
    assert srv.outbound_flow_control_window == 65535 - 64000 + 48000
    wire.rst(c, ErrorCodes.CANCEL)  # a stream's end drops what it held from the count
    assert (wire.conn_held, wire.conn_owed) == (32000, 0)
    wire.credit(a, 32000)
    assert (wire.conn_held, wire.conn_owed) == (0, 0)


def test_data_past_the_stream_window_resets_that_stream_only() -> None:
    wire, srv = pair()
    stream_id = wire.request(REQUEST, end_stream=True)
    srv.receive_data(wire.data_to_send())
    srv.send_headers(stream_id, OK)
    wire.receive(srv.data_to_send())
    wire.wire_streams[stream_id].recv_window = 3  # as if the rest of the window were spent
    wire.receive(DataFrame(stream_id, data=b"four").serialize())
    assert wire.seen[-1][0] == "error"
    rst = [f for f in sent_frames(wire) if isinstance(f, RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in rst] == [(stream_id, ErrorCodes.FLOW_CONTROL_ERROR)]


def test_data_that_does_not_match_content_length_is_a_stream_error() -> None:
    wire, srv = pair()
    stream_id = wire.request(REQUEST, end_stream=True)
    srv.receive_data(wire.data_to_send())
    srv.send_headers(stream_id, [*OK, (b"content-length", b"3")])
    srv.send_data(stream_id, b"toolong", end_stream=True)
    wire.receive(srv.data_to_send())
    assert wire.seen[-1] == ("error", stream_id, "DATA does not match content-length")


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ([(b"content-type", b"text/plain")], "no :status"),
        ([*OK, (b"Upper", b"1")], "upper-case name"),
        ([*OK, (b"connection", b"close")], "connection-specific field"),
        ([*OK, (b":path", b"/")], "request pseudo-header in a response"),
    ],
)
def test_a_malformed_response_head_resets_its_stream(headers: list[tuple[bytes, bytes]], why: str) -> None:
    wire, srv = pair()
    stream_id = wire.request(REQUEST, end_stream=True)
    srv.receive_data(wire.data_to_send())
    srv.send_headers(stream_id, headers, end_stream=True)
    wire.receive(srv.data_to_send())
    assert [s[0] for s in wire.seen] == ["error"], why
    assert stream_id not in wire.wire_streams


def test_an_early_hint_is_reported_and_101_is_refused() -> None:
    wire, srv = pair()
    first = wire.request(REQUEST, end_stream=True)
    second = wire.request(REQUEST, end_stream=True)
    srv.receive_data(wire.data_to_send())
    srv.send_headers(first, [(b":status", b"103"), (b"link", b"</a.css>; rel=preload")])
    srv.send_headers(first, OK, end_stream=True)
    wire.receive(srv.data_to_send())
    wire.receive(HeadersFrame(second, data=wire_block(srv, [(b":status", b"101")]), flags=["END_HEADERS"]).serialize())
    assert wire.seen[0] == ("informational", first, [(b":status", b"103"), (b"link", b"</a.css>; rel=preload")])
    assert wire.seen[1] == ("response", first, OK, True)
    assert wire.seen[2][:2] == ("error", second)


def wire_block(srv: h2.connection.H2Connection, headers: list[tuple[bytes, bytes]]) -> bytes:
    return srv.encoder.encode(headers)


def raw(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """A frame as bytes, whatever hyperframe would allow."""
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream_id.to_bytes(4, "big") + payload


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (raw(0, 0, 0, b"x"), ErrorCodes.PROTOCOL_ERROR),  # DATA on stream 0
        (raw(0, 0, 99, b"x"), ErrorCodes.PROTOCOL_ERROR),  # DATA on a stream never opened
        (PushPromiseFrame(1, promised_stream_id=2, data=b"").serialize(), ErrorCodes.PROTOCOL_ERROR),
        (raw(8, 0, 0, (0).to_bytes(4, "big")), ErrorCodes.PROTOCOL_ERROR),  # WINDOW_UPDATE of 0
        (WindowUpdateFrame(0, window_increment=2**31 - 1).serialize(), ErrorCodes.FLOW_CONTROL_ERROR),
        (SettingsFrame(0, settings={4: 2**31}).serialize(), ErrorCodes.FLOW_CONTROL_ERROR),
        (SettingsFrame(0, settings={5: 100}).serialize(), ErrorCodes.PROTOCOL_ERROR),
        (raw(4, 0, 0, b"\x00\x01\x00"), ErrorCodes.FRAME_SIZE_ERROR),  # SETTINGS not 6-byte entries
        (raw(6, 0, 0, b"1234"), ErrorCodes.FRAME_SIZE_ERROR),  # PING not 8 bytes
        (raw(3, 0, 0, b"\x00\x00\x00\x00"), ErrorCodes.FRAME_SIZE_ERROR),  # RST_STREAM on stream 0
        (ContinuationFrame(1, data=b"").serialize(), ErrorCodes.PROTOCOL_ERROR),  # no header block open
        (raw(1, 0x4, 1, b"\xff\xff\xff\xff"), ErrorCodes.COMPRESSION_ERROR),  # an HPACK index past the table
        (raw(0, 0x8, 1, b"\x05ab"), ErrorCodes.PROTOCOL_ERROR),  # padding longer than the frame
    ],
)
def test_connection_errors_send_goaway_with_their_code_and_stop_reading(frame: bytes, code: int) -> None:
    wire, _ = pair()
    wire.request(REQUEST, end_stream=True)
    wire.data_to_send()
    with pytest.raises(WireError) as raised:
        wire.receive(frame)
    assert raised.value.error_code == code
    goaway = [f for f in sent_frames(wire) if isinstance(f, GoAwayFrame)]
    assert [f.error_code for f in goaway] == [code]
    wire.receive(PingFrame(0, opaque_data=b"12345678").serialize())
    assert not wire.out  # nothing more is read after the GOAWAY


def test_a_frame_larger_than_the_proxy_accepts_is_a_frame_size_error() -> None:
    wire, _ = pair()
    with pytest.raises(WireError) as raised:
        wire.receive((16385).to_bytes(3, "big") + b"\x00\x00" + (1).to_bytes(4, "big"))
    assert raised.value.error_code == ErrorCodes.FRAME_SIZE_ERROR


def test_a_continuation_flood_from_an_endpoint_is_cut() -> None:
    wire, srv = pair()
    stream_id = wire.request(REQUEST, end_stream=True)
    srv.receive_data(wire.data_to_send())
    wire.receive(HeadersFrame(stream_id, data=b"").serialize())
    with pytest.raises(WireError) as raised:
        for _ in range(MAX_CONTINUATIONS + 1):
            wire.receive(ContinuationFrame(stream_id, data=b"\x00").serialize())
    assert raised.value.error_code == ErrorCodes.ENHANCE_YOUR_CALM


def test_an_interrupted_header_block_is_a_protocol_error() -> None:
    wire, srv = pair()
    stream_id = wire.request(REQUEST, end_stream=True)
    srv.receive_data(wire.data_to_send())
    wire.receive(HeadersFrame(stream_id, data=b"").serialize())
    with pytest.raises(WireError):
        wire.receive(PingFrame(0, opaque_data=b"12345678").serialize())


def test_a_header_list_over_the_bound_is_enhance_your_calm() -> None:
    wire, srv = pair(max_header_list=1024)
    stream_id = wire.request(REQUEST, end_stream=True)
    srv.receive_data(wire.data_to_send())
    block = srv.encoder.encode([*OK, *[(b"x-%d" % n, b"v" * 100) for n in range(3)]] * 1)
    block += srv.encoder.encode([(b"x-0", b"v" * 100)]) * 20  # indexed: small on the wire, big decoded
    with pytest.raises(WireError) as raised:
        wire.receive(HeadersFrame(stream_id, data=block, flags=["END_HEADERS"]).serialize())
    assert raised.value.error_code == ErrorCodes.ENHANCE_YOUR_CALM


def test_ping_settings_goaway_and_reset_from_the_server() -> None:
    wire, srv = pair()
    one = wire.request(REQUEST, end_stream=True)
    three = wire.request(REQUEST, end_stream=True)
    srv.receive_data(wire.data_to_send())
    srv.ping(b"abcdefgh")
    srv.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 7})
    wire.receive(srv.data_to_send())
    events = srv.receive_data(wire.data_to_send())
    srv.reset_stream(one, ErrorCodes.REFUSED_STREAM)
    srv.close_connection(last_stream_id=one)
    wire.receive(srv.data_to_send())
    assert any(isinstance(e, h2.events.PingAckReceived) and e.ping_data == b"abcdefgh" for e in events)
    assert any(isinstance(e, h2.events.SettingsAcknowledged) for e in events)
    assert wire.remote_max_streams == 7
    assert ("reset", one, ErrorCodes.REFUSED_STREAM) in wire.seen
    assert ("goaway", one, 0) in wire.seen
    assert three in wire.wire_streams


# -- the serving side, against h2 as the app's client ----------------------------------------------


class Serving(ServerWire):
    def __init__(self, max_streams: int = 100, refuse_after: int = 1000, **kwargs: Any) -> None:
        super().__init__(
            stream_window=65535,
            connection_window=65535,
            max_header_list=kwargs.get("max_header_list", 16384),
            max_streams=max_streams,
            hard_max_streams=2 * max_streams,
        )
        self.refuse_after = refuse_after
        self.seen: list[tuple[Any, ...]] = []

    def on_request(self, stream_id: int, headers: list[Any], end_stream: bool) -> None:
        self.seen.append(("request", stream_id, [tuple(h) for h in headers], end_stream))
        if len(self.wire_streams) > self.refuse_after:
            self.rst(stream_id, ErrorCodes.REFUSED_STREAM)

    def on_data(self, stream_id: int, data: bytes, flow_len: int, end_stream: bool) -> None:
        self.seen.append(("data", stream_id, data, end_stream))

    def on_trailers(self, stream_id: int, headers: list[Any]) -> None:
        self.seen.append(("trailers", stream_id, [tuple(h) for h in headers]))

    def on_stream_reset(self, stream_id: int, code: int) -> None:
        self.seen.append(("reset", stream_id, code))

    def on_stream_error(self, stream_id: int, reason: str) -> None:
        self.seen.append(("error", stream_id, reason))

    def on_window(self, stream_id: int) -> None:
        pass

    def on_goaway(self, last_stream_id: int, code: int) -> None:
        self.seen.append(("goaway", last_stream_id, code))


def app_client() -> h2.connection.H2Connection:
    return h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False, normalize_outbound_headers=False
        )
    )


def serving(**kwargs: Any) -> tuple[Serving, h2.connection.H2Connection]:
    wire, app = Serving(**kwargs), app_client()
    wire.initiate()
    app.initiate_connection()
    wire.receive(app.data_to_send())
    app.receive_data(wire.data_to_send())
    wire.receive(app.data_to_send())
    app.receive_data(wire.data_to_send())
    return wire, app


def test_a_request_with_body_and_trailers_is_served_and_answered() -> None:
    wire, app = serving()
    app.send_headers(1, [(b":method", b"POST"), *REQUEST[1:], (b"content-length", b"4")])
    app.send_data(1, b"body")
    app.send_headers(1, [(b"x-sum", b"1")], end_stream=True)
    wire.receive(app.data_to_send())
    assert [s[0] for s in wire.seen] == ["request", "data", "trailers"]
    wire.respond(1, [*OK], end_stream=False)
    assert wire.send(1, b"done", end_stream=True) == 4
    events = app.receive_data(wire.data_to_send())
    assert [type(e).__name__ for e in events] == ["ResponseReceived", "DataReceived", "StreamEnded"]
    assert 1 not in wire.wire_streams


def test_a_malformed_request_resets_its_stream_and_the_connection_goes_on() -> None:
    wire, app = serving()
    app.send_headers(1, [*REQUEST, (b"Upper", b"1")], end_stream=True)
    app.send_headers(3, REQUEST, end_stream=True)
    wire.receive(app.data_to_send())
    assert wire.seen[0][:2] == ("error", 1)
    assert wire.seen[1][:2] == ("request", 3)
    events = app.receive_data(wire.data_to_send())
    resets = [e for e in events if isinstance(e, h2.events.StreamReset)]
    assert [(e.stream_id, e.error_code) for e in resets] == [(1, ErrorCodes.PROTOCOL_ERROR)]


def test_request_data_that_does_not_match_content_length_is_a_stream_error() -> None:
    wire, app = serving()
    app.send_headers(1, [(b":method", b"POST"), *REQUEST[1:], (b"content-length", b"2")])
    app.send_data(1, b"three", end_stream=True)
    wire.receive(app.data_to_send())
    assert wire.seen[-1] == ("error", 1, "DATA does not match content-length")


def test_a_wrong_preface_is_a_protocol_error() -> None:
    wire = Serving()
    with pytest.raises(WireError):
        wire.receive(b"GET / HTTP/1.1\r\n\r\n")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (raw(1, 0x5, 2, b"\x82"), ErrorCodes.PROTOCOL_ERROR),  # a client opening an even stream
        (raw(0, 0, 5, b"x"), ErrorCodes.PROTOCOL_ERROR),  # DATA on a stream never opened
        (raw(8, 0, 7, (1).to_bytes(4, "big")), ErrorCodes.PROTOCOL_ERROR),  # WINDOW_UPDATE on an idle stream
    ],
)
def test_stream_ids_the_client_may_not_use_end_its_connection(frame: bytes, code: int) -> None:
    wire, _ = serving()
    with pytest.raises(WireError) as raised:
        wire.receive(frame)
    assert raised.value.error_code == code


def test_twice_the_streams_at_once_end_the_connection_and_the_read_is_answered_by_goaway_alone() -> None:
    wire, _ = serving(max_streams=2, refuse_after=2)
    encoder = hpack.Encoder()
    burst = b"".join(raw(1, 0x5, 2 * n + 1, encoder.encode(REQUEST)) for n in range(5))
    with pytest.raises(WireError) as raised:
        wire.receive(burst)
    assert raised.value.reason == "h2_too_many_streams"
    frames = sent_frames(wire)
    assert [type(f).__name__ for f in frames] == ["GoAwayFrame"]  # none of the refusals of that read


def test_streams_refused_in_earlier_reads_no_longer_count() -> None:
    wire, _ = serving(max_streams=2, refuse_after=2)
    encoder = hpack.Encoder()
    for n in range(8):
        wire.receive(raw(1, 0x5, 2 * n + 1, encoder.encode(REQUEST)))
    assert len(wire.seen) == 8


def test_the_graceful_goaway_names_the_last_stream_taken() -> None:
    wire, app = serving()
    app.send_headers(1, REQUEST, end_stream=True)
    app.send_headers(3, REQUEST, end_stream=True)
    wire.receive(app.data_to_send())
    wire.graceful_goaway()
    events = app.receive_data(wire.data_to_send())
    ended = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert [(e.last_stream_id, e.error_code) for e in ended] == [(3, 0)]


def test_an_hpack_bomb_from_the_app_is_enhance_your_calm() -> None:
    wire, _ = serving(max_header_list=4096)
    encoder = hpack.Encoder()
    block = encoder.encode([*REQUEST, (b"x-big", b"v" * 3000)]) + bytes([0x80 | 62]) * 10
    with pytest.raises(WireError) as raised:
        wire.receive(raw(1, 0x5, 1, block))
    assert (raised.value.error_code, raised.value.reason) == (ErrorCodes.ENHANCE_YOUR_CALM, "h2_header_list_too_large")


# -- what a hostile peer tries beyond single malformed frames ---------------------------------------


def head_frame(encoder: hpack.Encoder, stream_id: int, headers: list[tuple[bytes, bytes]], flags: int = 0x5) -> bytes:
    return raw(1, flags, stream_id, encoder.encode(headers))


@pytest.mark.parametrize("status", [b"abc", b"", b"2_00", b"99", b"1000", b"020", b"600"])
def test_a_response_status_that_is_not_three_digits_resets_its_stream_only(status: bytes) -> None:
    wire, srv = pair()
    bad = wire.request(REQUEST, end_stream=True)
    good = wire.request(REQUEST, end_stream=True)
    srv.receive_data(wire.data_to_send())
    encoder = hpack.Encoder()
    wire.receive(head_frame(encoder, bad, [(b":status", status)]) + head_frame(encoder, good, OK))
    assert [s[:2] for s in wire.seen] == [("error", bad), ("response", good)]


def test_two_content_lengths_in_a_response_are_a_stream_error() -> None:
    wire, srv = pair()
    stream_id = wire.request(REQUEST, end_stream=True)
    srv.receive_data(wire.data_to_send())
    srv.send_headers(stream_id, [*OK, (b"content-length", b"0"), (b"content-length", b"5")])
    wire.receive(srv.data_to_send())
    assert wire.seen == [("error", stream_id, "more than one content-length")]


def test_a_huge_header_table_size_from_the_peer_does_not_grow_the_proxys_encoder() -> None:
    # The peer's SETTINGS_HEADER_TABLE_SIZE is the most the proxy's encoder may use, not what it must
    # hold: 4 GiB of the peer's would be kept, and searched for every field sent.
    wire, _ = pair()
    wire.receive(SettingsFrame(0, settings={1: 2**32 - 1}).serialize())
    wire.data_to_send()
    for n in range(300):
        wire.request([*REQUEST, (b"x-request-id", b"%040d" % n)], end_stream=True)
    assert wire.encoder.header_table.maxsize <= 4096
    assert sum(len(n) + len(v) + 32 for n, v in wire.encoder.header_table.dynamic_entries) <= 4096
    decoder = hpack.Decoder()  # a peer holding its own decoder to the default 4096 bytes
    for frame in sent_frames(wire):
        if isinstance(frame, HeadersFrame):
            decoder.decode(frame.data)


def test_a_peer_that_does_not_read_cannot_make_the_proxy_queue_acknowledgements_without_bound() -> None:
    wire, _ = pair()
    wire.writable = False  # the transport's buffer is full: the peer is not reading
    ping = PingFrame(0, opaque_data=b"12345678").serialize()
    with pytest.raises(WireError) as raised:
        for _ in range(2000):
            wire.receive(ping * 5 + SettingsFrame(0).serialize())
    assert (raised.value.error_code, raised.value.reason) == (ErrorCodes.ENHANCE_YOUR_CALM, "h2_ack_flood")


def test_acknowledgements_to_a_peer_that_reads_are_not_limited() -> None:
    wire, _ = pair()
    ping = PingFrame(0, opaque_data=b"12345678").serialize()
    for _ in range(2000):
        wire.receive(ping * 5)
        wire.data_to_send()


def test_window_updates_of_the_connection_tell_the_streams_once_per_read() -> None:
    # Each connection-level WINDOW_UPDATE would otherwise make every open stream try to send: 13 bytes
    # of the peer's for a pass over all streams.
    wire, srv = pair()
    for _ in range(3):
        wire.request(REQUEST, end_stream=False)
    srv.receive_data(wire.data_to_send())
    update = WindowUpdateFrame(0, window_increment=1).serialize()
    settings = SettingsFrame(0, settings={4: 70000}).serialize()
    wire.receive(update * 500 + settings * 100)
    assert wire.seen == [("window", 0)]


def test_a_header_block_on_a_lower_stream_never_opened_is_a_protocol_error() -> None:
    # RFC 9113 §5.1.1: opening stream 5 closed 1 and 3 unopened; a HEADERS frame on 3 now is an
    # unexpected stream identifier, a connection error.
    wire, _ = serving()
    encoder = hpack.Encoder()
    wire.receive(head_frame(encoder, 5, REQUEST))
    with pytest.raises(WireError) as raised:
        wire.receive(head_frame(encoder, 3, REQUEST))
    assert raised.value.error_code == ErrorCodes.PROTOCOL_ERROR
    goaway = [f for f in sent_frames(wire) if isinstance(f, GoAwayFrame)]
    assert [(f.last_stream_id, f.error_code) for f in goaway] == [(5, ErrorCodes.PROTOCOL_ERROR)]


def test_a_header_block_on_a_stream_that_ended_both_ways_is_a_connection_error() -> None:
    wire, _ = serving()
    encoder = hpack.Encoder()
    wire.receive(head_frame(encoder, 1, REQUEST))
    wire.respond(1, OK, end_stream=True)
    assert 1 not in wire.wire_streams
    with pytest.raises(WireError):
        wire.receive(head_frame(encoder, 1, [(b"x-late", b"1")]))


def test_a_header_block_on_a_stream_the_proxy_reset_is_decoded_and_ignored() -> None:
    # The client may have sent trailers before our RST_STREAM reached it (RFC 9113 §5.1): ignored, but
    # decoded, so that the HPACK state moves on.
    wire, _ = serving(max_streams=1, refuse_after=0)
    encoder = hpack.Encoder()
    wire.receive(head_frame(encoder, 1, REQUEST, flags=0x4))  # refused at once (refuse_after=0)
    wire.receive(head_frame(encoder, 1, [(b"x-trailer", b"1")], flags=0x5))
    wire.receive(head_frame(encoder, 3, [*REQUEST, (b"x-trailer", b"1")], flags=0x4))
    assert [s[:2] for s in wire.seen] == [("request", 1), ("request", 3)]
    assert wire.seen[1][2][-1] == (b"x-trailer", b"1")


def test_two_content_lengths_in_a_request_are_a_stream_error() -> None:
    # The framing would count DATA against the first one, an HTTP/1.1 upstream the last one: a request
    # smuggled inside the body.
    wire, _ = serving()
    encoder = hpack.Encoder()
    post = [(b":method", b"POST"), *REQUEST[1:]]
    wire.receive(head_frame(encoder, 1, [*post, (b"content-length", b"40"), (b"content-length", b"1")], flags=0x4))
    assert wire.seen == [("error", 1, "more than one content-length")]


def test_streams_the_proxy_resets_for_the_clients_errors_count_against_the_streams_of_one_read() -> None:
    # Without a RST_STREAM of its own the client can make the proxy reset streams (WINDOW_UPDATE of 0,
    # DATA past content-length): each one still started its request upstream.
    wire, _ = serving(max_streams=2)
    encoder = hpack.Encoder()
    burst = b"".join(
        head_frame(encoder, 2 * n + 1, REQUEST, flags=0x4) + raw(8, 0, 2 * n + 1, bytes(4)) for n in range(5)
    )
    with pytest.raises(WireError) as raised:
        wire.receive(burst)
    assert raised.value.reason == "h2_too_many_streams"


def test_a_peer_changing_its_header_table_size_endlessly_costs_the_next_block_two_updates() -> None:
    wire, _ = pair()
    flips = b"".join(SettingsFrame(0, settings={1: n % 2 * 4096}).serialize() for n in range(1000))
    wire.receive(flips)
    assert len(wire.encoder.table_size_changes) <= 2
    wire.data_to_send()
    wire.request(REQUEST, end_stream=True)
    (head,) = sent_frames(wire)
    assert head.data[:2] == b"\x20\x3f"  # size 0 (the smallest), then 4096 (the last): RFC 7541 §4.2
    assert hpack.Decoder().decode(head.data, raw=True) == REQUEST


def test_repeated_goaways_are_told_once_unless_they_say_more() -> None:
    # Each GOAWAY makes the connection look through all its streams: a flood of the same one is told
    # once; a lower last stream id or a first error code is news.
    wire, _ = pair()
    for _ in range(5):
        wire.request(REQUEST, end_stream=True)
    wire.receive(GoAwayFrame(0, last_stream_id=7).serialize() * 1000)
    wire.receive(GoAwayFrame(0, last_stream_id=9).serialize())  # may not grow (RFC 9113 §6.8)
    wire.receive(GoAwayFrame(0, last_stream_id=3).serialize() * 10)
    wire.receive(GoAwayFrame(0, last_stream_id=3, error_code=ErrorCodes.INTERNAL_ERROR).serialize() * 10)
    assert wire.seen == [("goaway", 7, 0), ("goaway", 3, 0), ("goaway", 3, ErrorCodes.INTERNAL_ERROR)]


def test_data_after_the_peers_end_of_stream_is_stream_closed() -> None:
    wire, app = serving()
    app.send_headers(1, [(b":method", b"POST"), *REQUEST[1:]], end_stream=True)
    wire.receive(app.data_to_send())
    wire.receive(raw(0, 0, 1, b"late"))
    rst = [f for f in sent_frames(wire) if isinstance(f, RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in rst] == [(1, ErrorCodes.STREAM_CLOSED)]  # RFC 9113 §5.1


def test_the_memory_of_reset_streams_is_bounded_by_the_streams_allowed_at_once() -> None:
    wire, _ = serving(max_streams=2, refuse_after=0)  # every stream refused: 4 at once at most
    encoder = hpack.Encoder()
    for n in range(500):
        wire.receive(head_frame(encoder, 2 * n + 1, REQUEST, flags=0x4))
    assert list(wire.reset_ids) == [993, 995, 997, 999]
    wire.receive(head_frame(encoder, 993, [(b"x-trailer", b"1")]))  # still remembered: ignored
    with pytest.raises(WireError):
        wire.receive(head_frame(encoder, 991, [(b"x-trailer", b"1")]))  # forgotten: a connection error


def test_a_content_length_of_thousands_of_digits_is_a_stream_error_not_a_crash() -> None:
    # int() refuses more than 4300 digits (ValueError): it would escape the framing's errors.
    wire, _ = serving()
    encoder = hpack.Encoder()
    post = [(b":method", b"POST"), *REQUEST[1:]]
    wire.receive(head_frame(encoder, 1, [*post, (b"content-length", b"9" * 5000)], flags=0x4))
    wire.receive(head_frame(encoder, 3, REQUEST))
    assert [s[:2] for s in wire.seen] == [("error", 1), ("request", 3)]
    client, srv = pair()
    stream_id = client.request(REQUEST, end_stream=True)
    srv.receive_data(client.data_to_send())
    client.receive(head_frame(hpack.Encoder(), stream_id, [*OK, (b"content-length", b"1" * 5000)]))
    assert [s[:2] for s in client.seen] == [("error", stream_id)]


# -- the first frame, and streams depending on themselves --------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.mark.parametrize(
    "first",
    [PingFrame(0, opaque_data=b"12345678").serialize(), SettingsFrame(0, flags=["ACK"]).serialize()],
    ids=["ping", "settings-ack"],
)
def test_a_first_frame_that_is_not_settings_ends_the_connection_either_side(first: bytes) -> None:
    upstream = Recorder()
    upstream.initiate()
    upstream.data_to_send()
    app = Serving()
    app.initiate()
    app.data_to_send()
    for wire, data in ((upstream, first), (app, PREFACE + first)):
        with pytest.raises(WireError) as raised:
            wire.receive(data)
        assert raised.value.error_code == ErrorCodes.PROTOCOL_ERROR
        (goaway,) = sent_frames(wire)
        assert isinstance(goaway, GoAwayFrame) and goaway.error_code == ErrorCodes.PROTOCOL_ERROR


def test_a_first_settings_split_across_reads_is_accepted() -> None:
    wire = Serving()
    wire.initiate()
    settings = SettingsFrame(0, settings={3: 7}).serialize()
    wire.receive(PREFACE + settings[:3])  # not yet enough to tell the frame's type
    wire.receive(settings[3:])
    assert not wire.settings_pending
    assert any(isinstance(f, SettingsFrame) and "ACK" in f.flags for f in sent_frames(wire))


def priority(stream_id: int, parent: int) -> bytes:
    return raw(2, 0, stream_id, parent.to_bytes(4, "big") + b"\x10")


def test_a_request_depending_on_itself_is_a_stream_error_and_the_connection_serves_on() -> None:
    wire, app = serving()
    block = app.encoder.encode(REQUEST)  # the app's encoder: its HPACK state stays in step with the wire's
    wire.receive(raw(1, 0x1 | 0x4 | 0x20, 1, (1).to_bytes(4, "big") + b"\x10" + block))
    app.send_headers(3, REQUEST, end_stream=True)
    wire.receive(app.data_to_send())
    assert wire.seen == [("error", 1, "a stream depending on itself"), ("request", 3, REQUEST, True)]
    rst = [f for f in sent_frames(wire) if isinstance(f, RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in rst] == [(1, ErrorCodes.PROTOCOL_ERROR)]


def test_a_priority_frame_making_a_stream_its_own_parent_resets_that_stream_only() -> None:
    wire, app = serving()
    app.send_headers(1, REQUEST, end_stream=False)
    app.send_headers(3, REQUEST, end_stream=False)
    wire.receive(app.data_to_send())
    wire.seen.clear()
    wire.data_to_send()
    wire.receive(priority(1, 1) + priority(9, 9) + priority(3, 1))  # open, idle, a valid parent
    assert wire.seen == [("error", 1, "a stream depending on itself")]
    rst = [f for f in sent_frames(wire) if isinstance(f, RstStreamFrame)]
    # Stream 9 is idle: RST_STREAM must not be sent on it (RFC 9113 §6.4).
    assert [(f.stream_id, f.error_code) for f in rst] == [(1, ErrorCodes.PROTOCOL_ERROR)]
    assert 3 in wire.wire_streams


def test_a_response_depending_on_itself_is_a_stream_error() -> None:
    wire, srv = pair()
    stream_id = wire.request(REQUEST, end_stream=True)
    other = wire.request(REQUEST, end_stream=True)
    srv.receive_data(wire.data_to_send())
    block = wire_block(srv, OK)
    wire.receive(raw(1, 0x1 | 0x4 | 0x20, stream_id, stream_id.to_bytes(4, "big") + b"\x10" + block))
    srv.send_headers(other, OK, end_stream=True)
    wire.receive(srv.data_to_send())
    assert wire.seen == [("error", stream_id, "a stream depending on itself"), ("response", other, OK, True)]
    rst = [f for f in sent_frames(wire) if isinstance(f, RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in rst] == [(stream_id, ErrorCodes.PROTOCOL_ERROR)]
