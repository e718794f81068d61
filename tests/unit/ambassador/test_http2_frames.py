"""The proxy's `h2` connection: its cheaper count of open streams keeps `h2`'s limit and bounds what
it tracks."""

from __future__ import annotations

from collections import deque

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from h2.settings import SettingCodes

from sidecars.ambassador.cluster import http2_frames

REQUEST = [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http"), (b":authority", b"a")]


def pair(max_streams: int) -> tuple[h2.connection.H2Connection, h2.connection.H2Connection]:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    proxy = http2_frames.connection(client=False, stream_window=65535, max_header_list=65536, max_streams=max_streams)
    client.initiate_connection()
    http2_frames.start(proxy, 65535)
    proxy.receive_data(client.data_to_send())
    client.receive_data(proxy.data_to_send())
    proxy.receive_data(client.data_to_send())
    client.receive_data(proxy.data_to_send())
    return client, proxy


def answer(proxy: h2.connection.H2Connection, events: list[h2.events.Event]) -> None:
    for event in events:
        if isinstance(event, h2.events.RequestReceived):
            proxy.send_headers(event.stream_id, [(b":status", b"200")], end_stream=True)


def test_sequential_streams_are_swept_out_of_the_tracked_set() -> None:
    client, proxy = pair(100)
    for n in range(2000):
        client.send_headers(2 * n + 1, REQUEST, end_stream=True)
        answer(proxy, proxy.receive_data(client.data_to_send()))
        client.receive_data(proxy.data_to_send())
    assert len(proxy.streams) <= 100
    assert len(proxy.streams) <= http2_frames.SWEEP_AT


@pytest.mark.parametrize("closed_first", [0, 7, 40])
def test_the_stream_past_the_limit_is_refused_however_many_closed_ones_linger(closed_first: int) -> None:
    limit = 10
    client, proxy = pair(limit)
    stream_id = 1
    for _ in range(closed_first):
        client.send_headers(stream_id, REQUEST, end_stream=True)
        answer(proxy, proxy.receive_data(client.data_to_send()))
        client.receive_data(proxy.data_to_send())
        stream_id += 2
    # `limit` streams open at once are taken; one more is past h2's limit.
    for _ in range(limit):
        client.send_headers(stream_id, REQUEST, end_stream=False)
        stream_id += 2
    proxy.receive_data(client.data_to_send())
    # The client's own h2 would not send it: let it think the limit is higher.
    client.remote_settings._settings[SettingCodes.MAX_CONCURRENT_STREAMS] = deque([limit + 1])
    client.send_headers(stream_id, REQUEST, end_stream=False)
    with pytest.raises(h2.exceptions.TooManyStreamsError):
        proxy.receive_data(client.data_to_send())
