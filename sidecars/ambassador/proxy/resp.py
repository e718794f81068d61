"""RESP2 framing for the redis listener: the app's commands parsed in bulk, the shards' replies delimited.

Commands are parsed from whatever arrived (many pipelined commands per read); each keeps its raw
bytes, so a command routed whole to one shard is forwarded as received, never re-encoded. Replies
are only delimited (where does this reply end?), not decoded, except the few a merge needs (an MGET
fragment's elements, a DEL fragment's integer).

Every length read from the wire is checked before anything is buffered for it: a bulk string longer
than `max_value` or a command longer than `max_command` is a `ProtocolError` naming the limit. An
incomplete command or reply reports how many bytes it needs at least (`need`), so a large value
arriving in many reads is scanned once, not once per read.
"""

from __future__ import annotations

from collections.abc import Sequence

CRLF = b"\r\n"
OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NIL = b"$-1\r\n"

# An inline command ("PING\r\n", as typed into telnet) may not exceed this; Redis has the same limit.
MAX_INLINE_BYTES = 64 * 1024
# Longest header line ("*<count>" or "$<length>"): anything longer is not a number we accept.
MAX_HEADER_BYTES = 32
MAX_ARGS = 1024 * 1024

_STAR, _DOLLAR, _PLUS, _MINUS, _COLON = 42, 36, 43, 45, 58


class ProtocolError(ValueError):
    """The peer broke RESP or a limit; the message is safe to show it (no data echoed beyond a few bytes)."""


Command = tuple[list[bytes], bytes | None]  # (arguments, raw bytes as received or None for inline)


def parse_commands(
    buf: bytes, pos: int, out: list[Command], max_value: int, max_command: int, max_count: int
) -> tuple[int, int, str | None]:
    """Append up to `max_count` complete commands of `buf[pos:]` to `out`.

    Returns (position after the last complete command, bytes needed from there before parsing can
    progress: 0 if it stopped at `max_count` or at the end of `buf`, and the protocol error that
    stopped it, if any: the commands before the bad one are in `out`).
    """
    try:
        pos, need = _parse(buf, pos, out, max_value, max_command, max_count)
    except ProtocolError as exc:
        return pos, 0, str(exc)
    return pos, need, None


def _parse(
    buf: bytes, pos: int, out: list[Command], max_value: int, max_command: int, max_count: int
) -> tuple[int, int]:
    end = len(buf)
    find = buf.find
    while pos < end and max_count > 0:
        start = pos
        if buf[pos] != _STAR:
            nl = find(b"\n", pos)
            if nl < 0:
                if end - pos > MAX_INLINE_BYTES:
                    raise ProtocolError("too big inline request")
                return start, end - start + 1
            args = buf[pos:nl].split()
            pos = nl + 1
            if args:
                out.append((args, None))
                max_count -= 1
            continue
        # Headers ("*<count>", "$<length>") are read digit by digit: a C loop in the compiled build.
        q = pos + 1
        count = 0
        while q < end:
            c = buf[q]
            if c < 48 or c > 57:
                break
            count = count * 10 + c - 48
            if count > MAX_ARGS:
                raise ProtocolError("invalid multibulk length")
            q += 1
        if q + 1 >= end:
            if q - pos > MAX_HEADER_BYTES:
                raise ProtocolError("invalid multibulk length")
            return start, q + 2 - start
        if buf[q] != 13 or buf[q + 1] != 10 or q == pos + 1:
            if buf[pos + 1] == _MINUS:  # "*-1": Redis ignores it, as an empty array
                nl = find(CRLF, pos)
                if nl < 0:
                    return start, end - start + 1
                pos = nl + 2
                continue
            raise ProtocolError("invalid multibulk length")
        pos = q + 2
        if count == 0:
            continue  # Redis ignores empty arrays
        args = []
        while count:
            if pos >= end:
                return start, pos - start + 4
            if buf[pos] != _DOLLAR:
                raise ProtocolError(f"expected '$', got {chr(buf[pos])!r}")
            q = pos + 1
            size = 0
            while q < end:
                c = buf[q]
                if c < 48 or c > 57:
                    break
                size = size * 10 + c - 48
                if size > max_value:
                    while q + 1 < end and 48 <= buf[q + 1] <= 57 and q - pos < MAX_HEADER_BYTES:
                        q += 1
                        size = size * 10 + buf[q] - 48
                    raise ProtocolError(f"value of {size} bytes exceeds max_value_bytes ({max_value})")
                q += 1
            if q + 1 >= end:
                if q - pos > MAX_HEADER_BYTES:
                    raise ProtocolError("invalid bulk length")
                return start, q + 2 - start
            if buf[q] != 13 or buf[q + 1] != 10 or q == pos + 1:
                raise ProtocolError("invalid bulk length")
            data_end = q + 2 + size
            if data_end + 2 - start > max_command:
                raise ProtocolError(f"command exceeds max_command_bytes ({max_command})")
            if data_end + 2 > end:
                return start, data_end + 2 - start
            if buf[data_end] != 13 or buf[data_end + 1] != 10:
                raise ProtocolError("bulk string not terminated by CRLF")
            args.append(buf[q + 2 : data_end])
            pos = data_end + 2
            count -= 1
        out.append((args, buf[start:pos]))
        max_count -= 1
    return pos, 0


def reply_end(buf: bytes, pos: int) -> int:
    """End of the one complete reply starting at `buf[pos]`, or -(bytes needed from pos) if incomplete.

    Nested arrays are walked without recursion: `left` counts the elements still owed.
    """
    end = len(buf)
    left = 1
    p = pos
    while left:
        if p >= end:
            return -(p - pos + 3)
        kind = buf[p]
        left -= 1
        if kind in (_DOLLAR, _STAR):  # Cython turns `in` over C ints into comparisons
            q = p + 1
            negative = q < end and buf[q] == _MINUS
            if negative:
                q += 1
            size = 0
            while q < end:
                c = buf[q]
                if c < 48 or c > 57:
                    break
                size = size * 10 + c - 48
                q += 1
                if q - p > MAX_HEADER_BYTES:
                    raise ProtocolError("invalid length in reply")
            if q + 1 >= end:
                return -(q + 2 - pos)
            if buf[q] != 13 or buf[q + 1] != 10 or q == p + 1 + negative:
                raise ProtocolError("invalid length in reply")
            p = q + 2
            if negative:
                continue  # nil bulk string or nil array
            if kind == _DOLLAR:
                p += size + 2
                if p > end:
                    return -(p - pos)
            else:
                left += size
        elif kind in (_PLUS, _MINUS, _COLON):
            nl = buf.find(CRLF, p)
            if nl < 0:
                if end - p > MAX_INLINE_BYTES:
                    raise ProtocolError("reply line too long")
                return -(end - pos + 1)
            p = nl + 2
        else:
            raise ProtocolError(f"unexpected reply type {chr(kind)!r}")
    return p


def array_elements(reply: bytes) -> list[bytes] | None:
    """The raw elements of an array reply; None when the reply is not an array (an error)."""
    if not reply or reply[0] != _STAR:
        return None
    nl = reply.find(CRLF)
    count = int(reply[1:nl])
    items = []
    pos = nl + 2
    for _ in range(max(count, 0)):
        stop = reply_end(reply, pos)
        items.append(reply[pos:stop])
        pos = stop
    return items


def integer_of(reply: bytes) -> int | None:
    """The value of an integer reply; None when it is another type (an error)."""
    if reply[:1] != b":":
        return None
    return int(reply[1:-2])


def encode(args: Sequence[bytes]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n" % len(arg))
        parts.append(arg)
        parts.append(CRLF)
    return b"".join(parts)


def error(message: str) -> bytes:
    """An error reply; `message` starts with its code ("ERR ...", "NOAUTH ...")."""
    return b"-" + message.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace") + CRLF


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def integer(value: int) -> bytes:
    return b":%d\r\n" % value


def array(raw_items: Sequence[bytes]) -> bytes:
    return b"*%d\r\n" % len(raw_items) + b"".join(raw_items)
