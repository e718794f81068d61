"""The `tailer_*` series. Labels are small fixed vocabularies (reasons, kinds), never paths.

Errors go to the one error counter of the process (`sidecar_errors{type}`), and a drop is booked by
`records_dropped`, which counts it in the tailer's unit and writes the rate-limited line through the
core's telemetry: a call site never updates two counters by hand.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from sidecars.core.metrics import SidecarMetrics
from sidecars.core.telemetry import Telemetry
from sidecars.tailer.follower import Counts


class TailerMetrics:
    def __init__(self, base: SidecarMetrics, telemetry: Telemetry) -> None:
        r: CollectorRegistry = base.registry
        self.base = base
        self.telemetry = telemetry
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
        # Types: read, open, sink, checkpoint, checkpoint_corrupt, watch, dead_letter.
        self.errors = base.errors
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
        # What each field of the followers' counts moves into.
        self._absorbed_into: tuple[tuple[str, tuple[Any, ...]], ...] = (
            ("lines", (self.lines_read, base.events_in)),
            ("bytes", (self.bytes_read,)),
            ("invalid_utf8", (self.altered.labels(reason="invalid_utf8"),)),
            ("truncated", (self.altered.labels(reason="truncated"),)),
            ("json_errors", (self.altered.labels(reason="json_invalid"),)),
            ("multiline_cut", (self.altered.labels(reason="multiline_cut"),)),
            ("bad_timestamps", (self.altered.labels(reason="bad_timestamp"),)),
            ("skipped_bytes", (self.dropped_bytes.labels(reason="overlong_line"),)),
        )

    def records_dropped(self, reason: str, n: int, event: str, **fields: Any) -> None:
        """`n` records given up for `reason`: counted here and as the sidecar's dropped events, one
        error line per reason at most every minute."""
        self.dropped_records.labels(reason=reason).inc(n)
        self.telemetry.dropped(reason, n, event, level="error", **fields)

    def absorb(self, counts: Counts) -> None:
        """Move what the followers counted since the last call into the series."""
        last = self.absorbed
        for name, series in self._absorbed_into:
            delta = getattr(counts, name) - getattr(last, name)
            if delta:
                for counter in series:
                    counter.inc(delta)
        self.absorbed = Counts(**{k: getattr(counts, k) for k in Counts.__slots__})
