"""The limits that keep a hostile HTTP/2 client from costing more than its own connection.

`InboundGuard.feed` reads the frame headers of every byte a client sends, before the connection's
framing (`http2_wire`) sees them, and says when the client crossed a line:

- CONTINUATION flood (2024): a header block that goes on in more than `max_continuation_frames`
  frames, or whose encoded size passes `max_header_list_bytes`, is never decoded.
- rapid reset (CVE-2023-44487), SETTINGS and PING floods: RST_STREAM, SETTINGS (not its ACK) and
  PING (not its ACK) frames each spend from a token bucket refilled at the configured rate, holding
  up to twice that; an empty bucket is a flood. Each of those frames makes the server work (cancel
  an upstream stream, answer an ACK) for a few bytes of the client's.

Every violation ends the connection with GOAWAY(ENHANCE_YOUR_CALM), RFC 9113 §7's code for "a peer
exhibiting a behavior that might be generating excessive load". The other limits live where they
act: the header list size (HPACK bombs) in the HPACK decoder (the code is again ENHANCE_YOUR_CALM),
too many streams in the framing and `http2_server`, zero-window stalls in `http2_server`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sidecars.ambassador.settings import Http2Config

FRAME_HEADER = 9
DATA, HEADERS, RST_STREAM, SETTINGS, PING, CONTINUATION = 0x0, 0x1, 0x3, 0x4, 0x6, 0x9
END_HEADERS = 0x4
ACK = 0x1


class Bucket:
    """A token bucket: `rate` tokens a second, at most `2 * rate` held; `take()` is False when empty."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = 2.0 * rate
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        tokens = self.tokens + (now - self.stamp) * self.rate
        self.stamp = now
        if tokens > self.burst:
            tokens = self.burst
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


class InboundGuard:
    """Walks the frame headers of a client's byte stream; `feed` returns a violation's reason or ''."""

    __slots__ = (
        "block_bytes",
        "block_frames",
        "header",
        "max_block_bytes",
        "max_block_frames",
        "pings",
        "resets",
        "settings",
        "skip",
    )

    def __init__(self, config: Http2Config) -> None:
        self.skip = 0  # payload bytes of the current frame still to come
        self.header = b""  # a frame header split across reads (under 9 bytes)
        self.block_frames = 0  # frames of the header block being received; 0: none open
        self.block_bytes = 0
        self.max_block_frames = config.max_continuation_frames + 1  # the HEADERS frame itself
        self.max_block_bytes = config.max_header_list_bytes
        self.resets = Bucket(config.max_resets_per_sec)
        self.pings = Bucket(config.max_pings_per_sec)
        self.settings = Bucket(config.max_settings_per_sec)

    def feed(self, data: bytes, start: int = 0) -> str:
        """Account for `data[start:]`; the preface, if any, is already past `start`."""
        size = len(data)
        pos = start + self.skip
        if pos >= size:
            self.skip = pos - size
            return ""
        if self.header:
            need = FRAME_HEADER - len(self.header)
            head = self.header + data[pos : pos + need]
            if len(head) < FRAME_HEADER:
                self.header = head
                self.skip = 0
                return ""
            self.header = b""
            pos += need
            reason = self._frame(head, 0)
            if reason:
                return reason
            pos += int.from_bytes(head[:3], "big")
        while pos + FRAME_HEADER <= size:
            reason = self._frame(data, pos)
            if reason:
                return reason
            pos += FRAME_HEADER + int.from_bytes(data[pos : pos + 3], "big")
        if pos < size:
            self.header = data[pos:]
            self.skip = 0
        else:
            self.skip = pos - size
        return ""

    def _frame(self, data: bytes, at: int) -> str:
        kind = data[at + 3]
        if kind == DATA:
            return ""
        flags = data[at + 4]
        if kind in (HEADERS, CONTINUATION):
            length = int.from_bytes(data[at : at + 3], "big")
            if kind == HEADERS:
                self.block_frames = 0
                self.block_bytes = 0
            self.block_frames += 1
            self.block_bytes += length
            if self.block_frames > self.max_block_frames:
                return "h2_continuation_flood"
            if self.block_bytes > self.max_block_bytes:
                return "h2_header_block_too_large"
            if flags & END_HEADERS:
                self.block_frames = 0
        elif kind == RST_STREAM:
            if not self.resets.take():
                return "h2_rapid_reset"
        elif kind == PING:
            if not flags & ACK and not self.pings.take():
                return "h2_ping_flood"
        elif kind == SETTINGS:
            if not flags & ACK and not self.settings.take():
                return "h2_settings_flood"
        return ""


__all__ = ["Bucket", "InboundGuard"]
