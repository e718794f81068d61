"""HPACK and header checks done once per distinct header block, not once per stream.

A proxy sees the same few header blocks over and over: a load generator or a gRPC client repeats its
request head, an upstream its response head. Decoding, validating and encoding them again each time
is most of what HTTP/2 costs in pure Python, so each step keeps a small memo:

- `CachingDecoder`: a header block that left the dynamic table untouched decodes to the same list
  for as long as the table stays as it was; any block that changes the table empties the memo.
- `CachingEncoder`: the same for the encoder: a header list whose encoding left the table untouched
  (only indexed fields and literals without indexing) has the same bytes while the table is as it
  was. Lists with a never-indexed field are always encoded afresh.
- `checked_headers`: `h2`'s checks of received headers (RFC 9113 §8), and the request pseudo-headers
  `h2` lets through that an HTTP/1.1 request line would misread, are a pure function of the list and
  the kind of block; their result is kept per (list, kind) for every connection alike.

Every memo is bounded: at most `MEMO_ENTRIES` lists of up to `MEMO_LIST_BYTES` each, and decoder
keys (blocks) of up to `MEMO_LIST_BYTES` (larger ones are never kept); when full it is emptied, and
work goes on uncached.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from h2.exceptions import ProtocolError
from h2.utilities import HeaderValidationFlags, normalize_inbound_headers, validate_headers
from hpack import Decoder, Encoder, HeaderTuple, NeverIndexedHeaderTuple
from hpack.table import HeaderTable

MEMO_ENTRIES = 128
MEMO_LIST_BYTES = 2048


def _plain(headers: Iterable[Any]) -> bool:
    return NeverIndexedHeaderTuple not in map(type, headers)


def _memoizable(headers: Iterable[Any]) -> bool:
    """Small, and without a never-indexed field (tuple equality would not tell it from a plain one)."""
    size = 0
    for header in headers:
        if type(header) is NeverIndexedHeaderTuple or len(header) != 2:
            return False
        size += len(header[0]) + len(header[1])
    return size <= MEMO_LIST_BYTES


def _state(table: HeaderTable) -> tuple[int, tuple[object, ...]]:
    """What decoding and encoding depend on: the table's size limit and its entries, in order. A
    block is memoized only when it left both as they were. The entries are compared by value, not
    by the newest one's identity: a peer that indexes the same field in every block (nginx does with
    `content-length`) re-inserts an equal entry, which leaves a table full of it unchanged; any other
    insertion or eviction shows as a change."""
    return table.maxsize, tuple(table.dynamic_entries)


class CachingDecoder(Decoder):
    def __init__(self, max_header_list_size: int) -> None:
        super().__init__(max_header_list_size)
        self.memo: dict[bytes, list[HeaderTuple]] = {}
        self.memo_limits = (0, 0)

    def decode(self, data: bytes, raw: bool = False) -> list[HeaderTuple]:
        memo = self.memo
        limits = (self.max_header_list_size, self.max_allowed_table_size)
        if limits != self.memo_limits:
            memo.clear()
            self.memo_limits = limits
        key = bytes(data)
        if raw:
            hit = memo.get(key)
            if hit is not None:
                return list(hit)
        before = _state(self.header_table)
        headers = list(super().decode(data, raw))
        if _state(self.header_table) != before:
            memo.clear()  # the table moved: earlier blocks may now decode differently
        elif raw and len(key) <= MEMO_LIST_BYTES and _memoizable(headers):
            if len(memo) >= MEMO_ENTRIES:
                memo.clear()
            memo[key] = headers
            return list(headers)
        return headers


class CachingEncoder(Encoder):
    def __init__(self) -> None:
        super().__init__()
        self.memo: dict[tuple[Any, ...], bytes] = {}

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        if not isinstance(headers, list) or not huffman or self.header_table.resized:
            return super().encode(headers, huffman)
        key = tuple(headers)
        memo = self.memo
        hit = memo.get(key)
        if hit is not None and _plain(headers):
            return hit
        before = _state(self.header_table)
        block = super().encode(headers, huffman)
        if _state(self.header_table) != before:
            memo.clear()
        elif _memoizable(headers):
            if len(memo) >= MEMO_ENTRIES:
                memo.clear()
            memo[key] = block
        return block


_checked: dict[tuple[Any, ...], list[Any]] = {}

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2
_NO_SPACE = re.compile(rb"[^\x00-\x20\x7f]+")  # no SP, HTAB or other control


def _check_request_pseudo(headers: list[Any]) -> None:
    """What `h2` accepts but an HTTP/1.1 request line (the ambassador writes one for `protocol:
    http1`) would misread: a method that is no token, whitespace in :path or :authority (another
    request line), a :path not in origin form (absolute form: an HTTP/1.1 origin takes its host, not
    Host's; RFC 9113 §8.3.1), or "*" for another method than OPTIONS."""
    method = path = None
    for name, value in headers:
        if name[:1] != b":":
            break  # pseudo-headers come first (checked)
        if name == b":method":
            method = value
        elif name == b":path":
            path = value
        elif name == b":authority" and not _NO_SPACE.fullmatch(value):
            raise ProtocolError("whitespace or a control character in :authority")
    if method is not None and not _TOKEN.fullmatch(method):
        raise ProtocolError(":method is not a token")
    if path is not None and not (
        (path[:1] == b"/" or (path == b"*" and method == b"OPTIONS")) and _NO_SPACE.fullmatch(path)
    ):
        raise ProtocolError(":path not in origin form, or with whitespace or a control character")


def checked_headers(headers: list[Any], flags: HeaderValidationFlags) -> list[Any]:
    """`h2`'s normalization and checks of a received header list (RFC 9113 §8; ProtocolError when
    malformed), memoized per (list, kind of block)."""
    key = (*headers, flags)
    hit = _checked.get(key)
    if hit is not None and _plain(headers):
        return list(hit)
    checked = list(validate_headers(normalize_inbound_headers(headers, flags), flags))
    if not (flags.is_client or flags.is_trailer):
        _check_request_pseudo(checked)
    if _memoizable(checked):
        if len(_checked) >= MEMO_ENTRIES:
            _checked.clear()
        _checked[key] = checked
        return list(checked)
    return checked


__all__ = ["MEMO_ENTRIES", "CachingDecoder", "CachingEncoder", "checked_headers"]
