"""The `tailer_*` series. Labels are small fixed vocabularies (reasons, kinds), never paths."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from sidecars.core.metrics import SidecarMetrics
from sidecars.tailer.follower import Counts


class TailerMetrics:
    def __init__(self, base: SidecarMetrics) -> None:
        r: CollectorRegistry = base.registry
        self.base = base
        self.files_watched = Gauge("tailer_files_watched", "Files followed now (open or known).", registry=r)
        self.open_files = Gauge("tailer_open_files", "File handles held now.", registry=r)
        self.files_waiting = Gauge(
            "tailer_files_waiting", "Matching files waiting for a file handle (max_open_files reached).", registry=r
        )
        self.lines_read = Counter("tailer_lines_read", "Lines read from files.", registry=r)
        self.bytes_read = Counter("tailer_bytes_read", "Bytes read from files.", registry=r)
        self.records_sent = Counter("tailer_records_sent", "Records the sink acknowledged.", registry=r)
        self.bytes_sent = Counter(
            "tailer_bytes_sent", "Bytes of file content whose records the sink acknowledged.", registry=r
        )
        self.dropped_records = Counter(
            "tailer_dropped_records",
            "Records given up, by reason (permanent, rejected, dead_letter_full).",
            ["reason"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "tailer_dead_lettered_records", "Records written to the dead-letter directory.", registry=r
        )
        self.dropped_bytes = Counter(
            "tailer_dropped_bytes",
            "File bytes never read, by reason (deleted_file, overlong_line).",
            ["reason"],
            registry=r,
        )
        self.altered = Counter(
            "tailer_records_altered",
            "Records kept but changed, by reason (invalid_utf8, truncated, json_invalid, multiline_cut, "
            "bad_timestamp: the read time used instead).",
            ["reason"],
            registry=r,
        )
        self.rotations = Counter(
            "tailer_rotations",
            "Rotations seen, by kind (renamed, truncated, copy_found, deleted).",
            ["kind"],
            registry=r,
        )
        self.refused_files = Counter(
            "tailer_refused_files",
            "Paths not read for where they lead, by reason (symlink, outside_roots, proc_sys, too_deep); "
            "each path counted once.",
            ["reason"],
            registry=r,
        )
        self.retries = Counter("tailer_retries", "Batches sent again after a failure.", registry=r)
        self.batch_splits = Counter(
            "tailer_batch_splits", "Batches the receiver refused as too large (413), sent again in halves.", registry=r
        )
        self.errors = Counter("tailer_errors", "Errors by type (read, sink, checkpoint, watch).", ["type"], registry=r)
        self.bytes_behind = Gauge(
            "tailer_bytes_behind", "Bytes written to followed files but not yet acknowledged (lag).", registry=r
        )
        self.buffered_bytes = Gauge(
            "tailer_buffered_bytes", "Bytes read and not yet acknowledged (bounded by max_buffer_bytes).", registry=r
        )
        self.checkpoint_age = Gauge(
            "tailer_checkpoint_age_seconds", "Seconds since the checkpoint file was last written.", registry=r
        )
        self.checkpoint_writes = Counter(
            "tailer_checkpoint_writes", "Checkpoint file writes (at most one per checkpoint interval).", registry=r
        )
        self.sink_failing = Gauge(
            "tailer_sink_failing_seconds", "Seconds batches have been failing to deliver (0 when healthy).", registry=r
        )
        self.absorbed = Counts()

    def absorb(self, counts: Counts) -> None:
        """Move what the followers counted since the last call into the series."""
        last = self.absorbed
        if counts.lines != last.lines:
            self.lines_read.inc(counts.lines - last.lines)
            self.base.events_in.inc(counts.lines - last.lines)
        if counts.bytes != last.bytes:
            self.bytes_read.inc(counts.bytes - last.bytes)
        if counts.invalid_utf8 != last.invalid_utf8:
            self.altered.labels(reason="invalid_utf8").inc(counts.invalid_utf8 - last.invalid_utf8)
        if counts.truncated != last.truncated:
            self.altered.labels(reason="truncated").inc(counts.truncated - last.truncated)
        if counts.json_errors != last.json_errors:
            self.altered.labels(reason="json_invalid").inc(counts.json_errors - last.json_errors)
        if counts.multiline_cut != last.multiline_cut:
            self.altered.labels(reason="multiline_cut").inc(counts.multiline_cut - last.multiline_cut)
        if counts.bad_timestamps != last.bad_timestamps:
            self.altered.labels(reason="bad_timestamp").inc(counts.bad_timestamps - last.bad_timestamps)
        if counts.skipped_bytes != last.skipped_bytes:
            self.dropped_bytes.labels(reason="overlong_line").inc(counts.skipped_bytes - last.skipped_bytes)
        self.absorbed = Counts(**{k: getattr(counts, k) for k in Counts.__slots__})
