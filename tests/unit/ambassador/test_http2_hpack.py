"""The memoized HPACK coder and header checks: the same results as `hpack` and `h2` without memos."""

from __future__ import annotations

import h2.exceptions
import pytest
from hpack import Decoder, Encoder, HeaderTuple, NeverIndexedHeaderTuple

from sidecars.ambassador.cluster import http2_hpack
from sidecars.ambassador.cluster.http2_hpack import (
    MEMO_ENTRIES,
    MEMO_LIST_BYTES,
    CachingDecoder,
    CachingEncoder,
    checked_headers,
)
from sidecars.ambassador.cluster.http2_wire import REQUEST as REQUEST_FLAGS

REQUEST = [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http"), (b":authority", b"a")]
LISTS = [
    REQUEST,
    REQUEST,  # all indexed now: memoized
    REQUEST,  # answered from the memos
    [*REQUEST, (b"x-new", b"1")],  # inserts: the memos are emptied
    REQUEST,
    [*REQUEST, (b"x-new", b"1")],
    [*REQUEST, (b"x-new", b"1")],
    [*REQUEST, NeverIndexedHeaderTuple(b"authorization", b"secret")],
    [*REQUEST, NeverIndexedHeaderTuple(b"authorization", b"secret")],
    [*REQUEST, (b"authorization", b"secret")],
    [*REQUEST, (b"authorization", b"secret")],
    [*REQUEST, (b"authorization", b"secret")],
    [*REQUEST, NeverIndexedHeaderTuple(b"authorization", b"secret")],
    [*REQUEST, (b"x-big", b"v" * (MEMO_LIST_BYTES + 1))],
    [*REQUEST, (b"x-big", b"v" * (MEMO_LIST_BYTES + 1))],
]


def kinds(headers: list[HeaderTuple]) -> list[tuple[type, bytes, bytes]]:
    return [(type(h), h[0], h[1]) for h in headers]


def test_the_caching_encoder_writes_the_bytes_a_plain_one_writes() -> None:
    plain, caching = Encoder(), CachingEncoder()
    hits = 0
    for headers in LISTS:
        memoized = tuple(headers) in caching.memo
        assert caching.encode(list(headers)) == plain.encode(list(headers))
        hits += memoized
    assert hits >= 3  # the repeats
    assert len(caching.memo) <= MEMO_ENTRIES
    assert all(sum(len(n) + len(v) for n, v in key) <= MEMO_LIST_BYTES for key in caching.memo)


def test_a_never_indexed_field_is_never_answered_from_the_encoders_memo() -> None:
    caching = CachingEncoder()
    plain = [*REQUEST, (b"authorization", b"secret")]
    caching.encode(list(plain))
    caching.encode(list(plain))
    assert tuple(plain) in caching.memo  # tuple equality: the sensitive list has the same key
    sensitive = [*REQUEST, NeverIndexedHeaderTuple(b"authorization", b"secret")]
    caching.memo[tuple(plain)] = b"memoized"
    assert caching.encode(sensitive) != b"memoized"


def test_the_caching_decoder_reads_what_a_plain_one_reads() -> None:
    encoder, plain, caching = Encoder(), Decoder(), CachingDecoder(65536)
    hits = 0
    for headers in LISTS:
        block = encoder.encode(list(headers))
        hits += block in caching.memo
        assert kinds(caching.decode(block, raw=True)) == kinds(plain.decode(block, raw=True))
    assert hits >= 3
    assert len(caching.memo) <= MEMO_ENTRIES


def test_a_block_that_changes_the_table_empties_the_decoders_memo() -> None:
    encoder, caching = Encoder(), CachingDecoder(65536)
    caching.decode(encoder.encode(REQUEST), raw=True)
    caching.decode(encoder.encode(REQUEST), raw=True)
    assert caching.memo
    caching.decode(encoder.encode([*REQUEST, (b"x-new", b"1")]), raw=True)
    assert not caching.memo


def test_the_header_list_bound_holds_on_a_memoized_block() -> None:
    encoder, caching = Encoder(), CachingDecoder(65536)
    caching.decode(encoder.encode(REQUEST), raw=True)
    block = encoder.encode(REQUEST)
    caching.decode(block, raw=True)
    assert block in caching.memo
    caching.max_header_list_size = 10
    with pytest.raises(Exception, match="larger than 10"):
        caching.decode(block, raw=True)


def test_received_headers_are_checked_every_time_even_after_a_valid_list_was_memoized() -> None:
    assert checked_headers(list(REQUEST), REQUEST_FLAGS) == REQUEST
    assert checked_headers(list(REQUEST), REQUEST_FLAGS) == REQUEST
    assert http2_hpack._checked
    # The same fields, one name upper-case: RFC 9113 §8.2.1 makes it malformed, memo or not.
    with pytest.raises(h2.exceptions.ProtocolError):
        checked_headers([*REQUEST, (b"X-Upper", b"1")], REQUEST_FLAGS)
    # The same list is a malformed response: the kind of block is part of the memo's key.
    with pytest.raises(h2.exceptions.ProtocolError):
        checked_headers(list(REQUEST), REQUEST_FLAGS._replace(is_client=True, is_response_header=True))


def literal(name: bytes, value: bytes) -> bytes:
    """A literal field with incremental indexing and a new name (RFC 7541 §6.2.1), without Huffman."""
    return b"\x40" + bytes([len(name)]) + name + bytes([0x7F]) + _integer(len(value) - 127) + value


def _integer(rest: int) -> bytes:
    out = bytearray()
    while rest >= 128:
        out.append(rest % 128 + 128)
        rest //= 128
    out.append(rest)
    return bytes(out)


def test_a_table_change_that_keeps_its_size_and_its_first_entry_still_empties_the_decoders_memo() -> None:
    # Re-inserting the newest entry into a full table evicts the oldest: same size, same first entry
    # (an equal tuple), other contents. A block naming the second entry must now decode to it.
    name = b"x-a"
    a, b = literal(name, b"a" * 2013), literal(name, b"b" * 2013)  # 2048 bytes each in the table
    second = bytes([0x80 | 63])  # indexed field 63: the second-newest dynamic entry
    plain, caching = Decoder(), CachingDecoder(65536)
    for block in (b, a, second, a, second):
        assert kinds(caching.decode(block, raw=True)) == kinds(plain.decode(block, raw=True))


def test_a_peer_that_indexes_the_same_field_every_time_keeps_the_decoders_memo() -> None:
    # nginx indexes `content-length` in every response: once the table is full of that one entry,
    # each re-insertion leaves the table as it was, so the block stays memoized and decodes alike.
    value = b"1" * 200  # `literal` writes values of 127 bytes or more
    block = literal(b"content-length", value)
    plain, caching = Decoder(), CachingDecoder(65536)
    plain.header_table.maxsize = caching.header_table.maxsize = 2 * (32 + 14 + len(value))  # two entries
    for _ in range(3):  # fills the table with the one entry
        caching.decode(block, raw=True)
        plain.decode(block, raw=True)
    assert caching.memo
    for _ in range(5):
        assert kinds(caching.decode(block, raw=True)) == kinds(plain.decode(block, raw=True))
        assert list(caching.header_table.dynamic_entries) == list(plain.header_table.dynamic_entries)
    assert caching.memo


def test_the_decoders_memo_keeps_no_block_longer_than_its_bound() -> None:
    # Table size updates (RFC 7541 §6.3) decode to nothing: a long block of them and one small field
    # would be kept whole as a key.
    caching = CachingDecoder(65536)
    for n in range(MEMO_ENTRIES):
        resize = b"\x3f\xe1\x1f" * 5000  # 4096, the size the table has: 15 kB of no change
        caching.decode(resize + bytes([0x80 | (n % 60 + 2), 0x80 | (n // 60 + 2)]), raw=True)
    assert sum(len(key) for key in caching.memo) <= MEMO_ENTRIES * MEMO_LIST_BYTES


@pytest.mark.parametrize(
    ("pseudo", "why"),
    [
        ({b":path": b"/a b"}, "a space in the path: another request line over HTTP/1.1"),
        ({b":path": b"/a\tb"}, "a tab in the path"),
        ({b":path": b"http://other.example/"}, "absolute form: an HTTP/1.1 origin takes its host, not Host"),
        ({b":path": b"a"}, "not origin form"),
        ({b":path": b"*"}, "asterisk form other than for OPTIONS"),
        ({b":method": b"G T"}, "a method that is no token"),
        ({b":method": b"GET\x7f"}, "DEL in the method"),
        ({b":authority": b"a b"}, "a space in the authority"),
    ],
)
def test_request_pseudo_headers_an_http1_request_line_would_misread_are_malformed(
    pseudo: dict[bytes, bytes], why: str
) -> None:
    headers = [(name, pseudo.get(name, value)) for name, value in REQUEST]
    with pytest.raises(h2.exceptions.ProtocolError):
        checked_headers(headers, REQUEST_FLAGS)
    with pytest.raises(h2.exceptions.ProtocolError):
        checked_headers(headers, REQUEST_FLAGS)  # and again, memo or not


def test_request_targets_of_every_allowed_form_pass() -> None:
    options = [(b":method", b"OPTIONS"), (b":path", b"*"), (b":scheme", b"http"), (b":authority", b"a")]
    assert checked_headers(options, REQUEST_FLAGS) == options
    query = [
        (b":method", b"PATCH"),
        (b":path", b"/a/%20b?c=d&e=\xc3\xa9"),
        (b":scheme", b"http"),
        (b":authority", b"a:8080"),
    ]
    assert checked_headers(query, REQUEST_FLAGS) == query
    connect = [(b":method", b"CONNECT"), (b":authority", b"a:443")]
    assert checked_headers(connect, REQUEST_FLAGS) == connect
