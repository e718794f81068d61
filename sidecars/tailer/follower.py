"""Following one file: big reads, framing of complete lines in blocks, over-long and partial lines.

A follower holds the file open by descriptor, so a rename (rotation) or a delete does not stop it:
it reads the same content to its end. Bytes are read in chunks of up to `read_chunk_bytes` (in a
thread when the read is big, directly when it is small and cheap) and framed per block: one
`rfind`/`count` over the chunk, one decode, one split; never an await per line.

A read is never larger than `max_line_bytes`, so a line longer than that can only be the first line
of the buffer: it is the only one checked, truncated (the rest skipped up to its newline) and counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any

from sidecars.tailer.checkpoint import Track
from sidecars.tailer.identity import Fingerprint, read_head
from sidecars.tailer.records import Grouper, decode_block, parse_json_fields, record_times
from sidecars.tailer.settings import TailerSettings

# Reads up to this size are done on the event loop: a page-cache copy of a few KiB is cheaper than
# a hop to a thread.
DIRECT_READ_BYTES = 64 * 1024
# The last bytes read, kept and read again with each next read: contents that all start alike (a
# banner longer than the fingerprint) share the head, not what lies just before the offset.
TAIL_BYTES = 64


@dataclass(slots=True)
class Options:
    """What framing needs from the settings."""

    max_line_bytes: int = 256 * 1024
    read_chunk_bytes: int = 256 * 1024
    fingerprint_bytes: int = 1024
    partial_line_flush_secs: float = 5.0
    parse_json: bool = False
    json_timestamp_key: str | None = None
    multiline: str = "off"
    multiline_start_pattern: str | None = None
    multiline_flush_secs: float = 1.0
    multiline_max_lines: int = 500
    multiline_max_bytes: int = 512 * 1024

    @classmethod
    def from_settings(cls, settings: TailerSettings) -> Options:
        """Each option copied from the setting of the same name."""
        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)})


@dataclass(slots=True)
class Counts:
    """Plain counters the pipeline moves into Prometheus series in bulk."""

    lines: int = 0
    bytes: int = 0
    invalid_utf8: int = 0
    truncated: int = 0
    skipped_bytes: int = 0
    json_errors: int = 0
    multiline_cut: int = 0
    bad_timestamps: int = 0


@dataclass(slots=True)
class Chunk:
    """Records of one file ready for a batch; `end` is where the checkpoint may move once delivered."""

    follower: Follower
    track: Track
    lines: list[str]
    fields: list[dict[str, Any]] | None
    end: int | None  # None: no complete record boundary moved (a record is still being built)
    nbytes: int
    ts_ns: int
    timestamps_ns: list[int] | None = None  # the records' own times, when taken from a JSON field


class Follower:
    """One open file content: where reading stands, the unframed bytes, the checkpoint track."""

    def __init__(
        self,
        *,
        path: str,
        fd: int,
        st: os.stat_result,
        fingerprint: Fingerprint,
        track: Track,
        offset: int,
        labels: dict[str, str],
        options: Options,
        counts: Counts,
        tail: bytes | None = None,
    ) -> None:
        self.path = path  # where the file is now (it may have been renamed)
        self.label_path = path  # where it was found: the `path` label stays stable across rotation
        self.fd: int | None = fd
        self.key = f"{st.st_dev}:{st.st_ino}"
        self.dev, self.ino = st.st_dev, st.st_ino
        self.fingerprint = fingerprint
        self.track = track
        self.labels = labels
        self.opt = options
        self.counts = counts
        self.buf = b""
        self.pos = 0  # first unframed byte in buf
        self.buf_offset = offset  # file offset of buf[0]
        self.skipping = False  # discarding the rest of an over-long line
        self.at_eof = False
        self.size = st.st_size
        now = time.monotonic()
        self.last_growth = now
        self.deleted_at: float | None = None
        self.rotated_at: float | None = None  # its path now names another file (or nothing)
        self.replaced = False  # a read found other content under our offset: a truncation to handle
        self.generation = 0  # counts restarts at zero, so a read begun before one is dropped
        self.grouper = self._new_grouper()
        self._read_size = min(options.read_chunk_bytes, options.max_line_bytes)
        # The file's bytes just before read_offset, as read. Resuming at a checkpoint they are taken
        # from the file as it is now (the head matched), so the first read after a restart is checked
        # against its head only.
        self.tail = tail if tail is not None else _read_tail(fd, offset)

    def _new_grouper(self) -> Grouper | None:
        o = self.opt
        if o.multiline == "off":
            return None
        return Grouper(o.multiline, o.multiline_start_pattern, o.multiline_max_lines, o.multiline_max_bytes)

    # ------------------------------------------------------------------------------------ state

    @property
    def read_offset(self) -> int:
        """The next byte to read from the file."""
        return self.buf_offset + len(self.buf)

    @property
    def unread_bytes(self) -> int:
        return max(self.size - self.read_offset, 0)

    @property
    def has_unframed(self) -> bool:
        return self.pos < len(self.buf)

    @property
    def settled(self) -> bool:
        """Everything read and framed, nothing held back (partial line, multi-line record)."""
        return self.at_eof and not self.has_unframed and (self.grouper is None or self.grouper.pending_since is None)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    # ------------------------------------------------------------------------------------ reading

    async def fill(self) -> bool:
        """Read the next chunk into the buffer; False at end of file."""
        if self.fd is None:
            return False
        if self.pos:
            self.buf_offset += self.pos
            self.buf = self.buf[self.pos :]
            self.pos = 0
        offset = self.read_offset
        want = self._read_size
        generation = self.generation
        tail = self.tail
        # The tail is read again in the same pread as the new bytes: if it changed, so did the content.
        start = offset - len(tail)
        if self.size - offset > DIRECT_READ_BYTES:
            data = await asyncio.get_running_loop().run_in_executor(None, os.pread, self.fd, want + len(tail), start)
            if generation != self.generation or self.fd is None:
                return True  # restarted at a truncation meanwhile: this read belongs to the old content
        else:
            data = os.pread(self.fd, want + len(tail), start)
        k = len(tail)
        if k and not data.startswith(tail):
            return self._replaced()
        n = len(data) - k  # new bytes, after the tail read again (not sliced off: no copy of the read)
        if not n:
            self.at_eof = True
            return False
        # From offset 0 the data is the head, unless the fingerprint is longer than one read.
        whole = offset == 0 and (n >= self.opt.fingerprint_bytes or n < want)
        if not self._same_content(data if whole else read_head(self.fd, self.opt.fingerprint_bytes)):
            return self._replaced()
        self.tail = data[-TAIL_BYTES:]
        if n < want:
            self.at_eof = True
        self.counts.bytes += n
        self.last_growth = time.monotonic()
        if offset + n > self.size:
            self.size = offset + n
        if self.skipping and not self.buf and data.find(b"\n", k) < 0:
            self.counts.skipped_bytes += n
            self.buf_offset = offset + n
            return True
        if self.buf:
            self.buf = self.buf + memoryview(data)[k:]
        else:  # the tail stays in front, as bytes already framed
            self.buf, self.buf_offset, self.pos = data, start, k
        return True

    def _replaced(self) -> bool:
        """Truncated (and written again up to or past our offset) since the last look: the bytes read
        are the new content's, and the old content's rest is in its copy from `read_offset` on."""
        self.replaced = True
        self.at_eof = True
        return False

    def tail_matches(self) -> bool:
        """Whether the bytes before `read_offset` are still those read (a look between two reads)."""
        if not self.tail or self.fd is None:
            return True
        return os.pread(self.fd, len(self.tail), self.read_offset - len(self.tail)) == self.tail

    def _same_content(self, head: bytes) -> bool:
        """Whether `head` (read after the data) still starts the content the fingerprint names; a
        fingerprint shorter than the configured size is extended to the head as read, so the lines
        read from a young file always identify it (an empty one would match any later content)."""
        fp = self.fingerprint
        if fp.length and not fp.matches(head):
            return False
        head = head[: self.opt.fingerprint_bytes]
        if len(head) > fp.length:
            self.fingerprint = self.track.entry.fingerprint = Fingerprint.of(head)
            self.track.store.changed()
        return True

    def frame(self, room_lines: int, room_bytes: int) -> Chunk | None:
        """Complete lines from the buffer (at most `room_lines`, about `room_bytes`), or None."""
        buf, pos = self.buf, self.pos
        if pos >= len(buf):
            return None
        if self.skipping:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                self.counts.skipped_bytes += len(buf) - pos
                self.pos = len(buf)
                return None
            self.counts.skipped_bytes += nl - pos
            self.skipping = False
            self.pos = nl + 1
            # Only now does the truncated line's checkpoint move past it.
            return self._chunk([], self.buf_offset + nl + 1, 0)
        max_line = self.opt.max_line_bytes
        first_nl = buf.find(b"\n", pos, pos + max_line + 1)
        if first_nl < 0:
            if len(buf) - pos > max_line:
                return self._truncate()
            return None  # a partial line: wait for its newline
        limit = min(len(buf), pos + max(room_bytes, 1))
        cut = buf.rfind(b"\n", pos, limit)
        if cut < first_nl:
            cut = first_nl  # one line bigger than the room left: it goes alone
        else:
            n = buf.count(b"\n", pos, cut + 1)
            if room_lines < n:
                cut = _nth_newline(buf, pos, cut + 1, n, max(room_lines, 1))
        block = buf[pos:cut]
        self.pos = cut + 1
        return self._records(block, self.buf_offset + pos, self.buf_offset + cut + 1)

    def _truncate(self) -> Chunk:
        pos, max_line = self.pos, self.opt.max_line_bytes
        line = self.buf[pos : pos + max_line].decode("utf-8", "replace")
        self.counts.truncated += 1
        self.counts.lines += 1
        self.skipping = True
        self.pos = pos + max_line
        # The checkpoint stays at the line's start until its newline is found: a restart meanwhile
        # sends the truncated line again rather than the line's tail as a line of its own.
        records = [line]
        if self.grouper is not None and (held := self.grouper.flush()) is not None:
            records.insert(0, held[0])  # the record being built ends where the long line begins
        return self._chunk(records, None, max_line)

    def _records(self, block: bytes, start: int, end: int) -> Chunk:
        lines, bad = decode_block(block)
        self.counts.invalid_utf8 += bad
        self.counts.lines += len(lines)
        nbytes = end - start
        if self.grouper is None:
            return self._chunk(lines, end, nbytes)
        starts: list[int] = []
        ends: list[int] = []
        at = start
        for raw in block.split(b"\n"):
            starts.append(at)
            at += len(raw) + 1
            ends.append(at)
        cut_before = self.grouper.cut
        records, _done = self.grouper.feed(lines, starts, ends)
        self.counts.multiline_cut += self.grouper.cut - cut_before
        pending = self.grouper.pending_start
        return self._chunk(records, end if pending is None else pending, nbytes)

    def flush_partial(self, now: float, force: bool = False) -> Chunk | None:
        """The last line without a newline, once the file stopped growing for a while (or at shutdown)."""
        if not self.has_unframed or self.skipping or not (self.at_eof or force):
            return None
        if not force and now - self.last_growth < self.opt.partial_line_flush_secs:
            return None
        if not force and self.buf.find(b"\n", self.pos) >= 0:
            return None  # whole lines wait for the reader's next turn, framed within the batch limits
        block = self.buf[self.pos :]
        start = self.buf_offset + self.pos
        self.pos = len(self.buf)
        end = start + len(block)
        if block.endswith(b"\n"):  # forced (at a truncation) with whole lines still unframed
            block = block[:-1]
        return self._records(block, start, end)

    def flush_multiline(self, now: float, force: bool = False) -> Chunk | None:
        """The multi-line record being built, once no line came for `multiline_flush_secs`."""
        g = self.grouper
        if g is None or g.pending_since is None:
            return None
        if not force and now - g.pending_since < self.opt.multiline_flush_secs:
            return None
        done = g.flush()
        assert done is not None
        record, end = done
        return self._chunk([record], end, 0)

    def _chunk(self, lines: list[str], end: int | None, nbytes: int) -> Chunk:
        fields: list[dict[str, Any]] | None = None
        now = time.time_ns()
        stamps: list[int] | None = None
        if self.opt.parse_json:
            fields, bad = parse_json_fields(lines)
            self.counts.json_errors += bad
            if self.opt.json_timestamp_key:
                stamps, bad = record_times(fields, self.opt.json_timestamp_key, now)
                self.counts.bad_timestamps += bad
        return Chunk(self, self.track, lines, fields, end, nbytes, now, stamps)

    # ------------------------------------------------------------------------------------ rotation

    def restart_at_zero(self, track: Track, fingerprint: Fingerprint) -> None:
        """The content was replaced in place (truncated): start over with a new track."""
        self.track = track
        self.fingerprint = fingerprint
        self.generation += 1
        self.replaced = False
        self.buf = b""
        self.pos = 0
        self.buf_offset = 0
        self.tail = b""
        self.skipping = False
        self.at_eof = False
        self.last_growth = time.monotonic()
        self.grouper = self._new_grouper()


def _read_tail(fd: int, offset: int) -> bytes:
    """The bytes before `offset` in the open file `fd`, for checking the next read against."""
    size = min(offset, TAIL_BYTES)
    try:
        return os.pread(fd, size, offset - size) if size else b""
    except OSError:
        return b""  # unknown: reads are checked against the head only


def _nth_newline(buf: bytes, start: int, end: int, total: int, nth: int) -> int:
    """Index of the `nth` newline in buf[start:end] (which holds `total`): a guess from the mean line
    length, corrected a few lines either way, instead of `nth` searches from the start."""
    guess = start + (end - start) * nth // total
    before = buf.count(b"\n", start, guess)
    if before >= nth:
        idx = guess
        for _ in range(before - nth + 1):
            idx = buf.rfind(b"\n", start, idx)
        return idx
    idx = guess - 1
    for _ in range(nth - before):
        idx = buf.find(b"\n", idx + 1)
    return idx
