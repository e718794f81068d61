"""The tailer's options: what to follow, how to frame records, how to batch and deliver them."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from sidecars.core import SidecarSettings
from sidecars.core.config import fold_choices
from sidecars.tailer.confine import FORBIDDEN_TREES

if TYPE_CHECKING:
    from sidecars.tailer.sinks.base import Sink

KiB = 1024
MiB = 1024 * KiB


class SinkConfig(dict[str, Any]):
    """`sink_config` as given (what `--print-config` shows), with the sink's settings validated from it."""

    __slots__ = ("settings",)

    def __init__(self, given: dict[str, Any], settings: BaseModel) -> None:
        super().__init__(given)
        self.settings = settings


class TailerSettings(SidecarSettings):
    env_prefix = "TAILER_"

    admin_port: int = Field(9801, ge=0, le=65535, description="Port of the admin server; 0 picks a free one.")

    # ---- discovery
    include: list[str] = Field(
        ["/var/log/app/*.log"],
        min_length=1,
        description="Glob patterns of the files to follow (absolute; `*` and `?` stay within one directory "
        "level, `**` spans any number). `*.log` does not match rotated siblings such as `app.log.1`.",
    )
    exclude: list[str] = Field(
        ["*.gz", "*.zip", "*.bz2", "*.xz", "*.zst"],
        description="Glob patterns of files never followed; a pattern without `/` matches the file name.",
    )
    follow_symlinks: bool = Field(
        False,
        description="Follow symlinks (to files and directories) found below the include patterns' base "
        "directories, but only to targets inside those directories; off: a symlink is never followed. "
        "Files of /proc and /sys are never read.",
    )
    max_depth: int = Field(
        32,
        ge=1,
        le=1024,
        description="How many directory levels below a pattern's base directory discovery descends (`**`).",
    )
    watch_mode: Literal["inotify", "poll"] = Field(
        "inotify",
        description="inotify: change notification (one watcher per process) plus polling as a safety net; "
        "poll: only periodic stat() calls, for volumes where inotify does not work (NFS, some FUSE).",
    )
    poll_interval_secs: float = Field(
        1.0, gt=0, description="How often open files are stat()ed for growth, truncation and deletion."
    )
    rescan_interval_secs: float = Field(
        10.0, gt=0, description="How often the include globs are expanded again to find new files."
    )
    start_at: Literal["beginning", "end"] = Field(
        "beginning",
        description="Where to start in files found on the very first start (no checkpoints yet). Files that "
        "appear later, or while the tailer was down, are always read from the beginning.",
    )
    close_inactive_secs: float = Field(
        300.0,
        gt=0,
        description="Close the handle of a file fully read and unchanged for this long; it is reopened "
        "when it changes (keeps open files bounded with many idle files).",
    )
    rotate_wait_secs: float = Field(
        5.0,
        ge=0,
        description="Keep reading a file renamed away (rotated) for this long after its last growth, for "
        "writers that reopen their file late.",
    )
    deleted_max_secs: float = Field(
        300.0,
        gt=0,
        description="A deleted file not read to its end (or not yet delivered) within this time is closed "
        "and its rest dropped (counted and logged), so it stops pinning disk space.",
    )
    deleted_max_bytes: int = Field(
        1024 * MiB,
        gt=0,
        description="A deleted file with more unread bytes than this is closed at once; its rest is dropped.",
    )
    max_open_files: int | None = Field(
        None,
        ge=1,
        description="Most file handles held for followed files; beyond, files are read in turn (handles of "
        "files read to their end and acknowledged are closed for the waiting ones). Unset: the soft "
        "RLIMIT_NOFILE less a quarter (at least 64) kept for sockets and the rest.",
    )
    fingerprint_bytes: int = Field(
        1024,
        ge=16,
        le=64 * KiB,
        description="Length of the file head whose hash, with device and inode, identifies a file.",
    )
    read_chunk_bytes: int = Field(256 * KiB, ge=4 * KiB, description="Largest single read from a file.")

    # ---- records
    max_line_bytes: int = Field(
        256 * KiB,
        ge=64,
        description="Longer lines are truncated to this (the rest skipped and counted) instead of stalling.",
    )
    partial_line_flush_secs: float = Field(
        5.0,
        gt=0,
        description="A last line without its newline is sent after this long without growth (and at shutdown).",
    )
    parse_json: bool = Field(
        False, description="Parse lines that are JSON objects; their fields go with the line to the sink."
    )
    json_timestamp_key: str | None = Field(
        None,
        description="With parse_json: the field holding a record's own time (RFC 3339 text, or Unix time in "
        "s/ms/us/ns told apart by magnitude); records without it keep the time they were read.",
    )
    multiline: Literal["off", "java", "python", "pattern"] = Field(
        "off",
        description="Group multi-line records: java or python stack traces, or `pattern`: a line matching "
        "multiline_start_pattern begins a new record, every other line continues it.",
    )
    multiline_start_pattern: str | None = Field(
        None, description="Regex (Python syntax, searched from the line start) of the first line of a record."
    )
    multiline_flush_secs: float = Field(
        1.0, gt=0, description="A multi-line record with no new line for this long is complete."
    )
    multiline_max_lines: int = Field(500, ge=1, description="A multi-line record is cut after this many lines.")
    multiline_max_bytes: int = Field(
        512 * KiB, ge=64, description="A multi-line record is cut once it reaches this size."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Static labels added to every record (besides Pod metadata and path)."
    )
    pod_labels: bool = Field(
        True,
        description="Add the Pod metadata the Downward API puts in the environment (POD_NAME, "
        "POD_NAMESPACE, NODE_NAME, ...) as labels.",
    )

    # ---- delivery
    sink: str = Field(
        "stdout",
        description="Where records go: stdout, http, loki, elasticsearch, otlp, syslog, "
        "file, or a sink registered by a package.",
    )
    sink_config: dict[str, Any] = Field(
        default_factory=dict, description="Options of the chosen sink (validated against that sink's settings)."
    )
    batch_max_lines: int = Field(1000, ge=1, description="A batch is sent once it holds this many records.")
    batch_max_bytes: int = Field(1 * MiB, ge=1024, description="A batch is sent once it holds this many bytes.")
    batch_wait_secs: float = Field(
        1.0, ge=0, description="A batch is sent at the latest this long after its first record."
    )
    max_in_flight_batches: int = Field(
        4, ge=1, description="Sealed batches waiting or being sent; beyond it, reading pauses (the files buffer)."
    )
    max_buffer_bytes: int = Field(
        16 * MiB, ge=64 * KiB, description="Bytes read but not yet acknowledged; beyond it, reading pauses."
    )
    send_concurrency: int = Field(1, ge=1, le=64, description="Batches sent at the same time.")
    retry_initial_secs: float = Field(0.5, gt=0, description="First delay before sending a failed batch again.")
    retry_max_secs: float = Field(30.0, gt=0, description="Largest delay between retries (doubling, jittered).")
    on_permanent_error: Literal["drop", "dead_letter", "retry"] = Field(
        "dead_letter",
        description="A batch the sink rejects for good (e.g. HTTP 400): drop it, write it to dead_letter_dir "
        "as NDJSON, or retry forever. Dropped and dead-lettered lines are counted either way.",
    )
    dead_letter_dir: Path | None = Field(
        None, description="Directory of the dead-letter files (default: <checkpoint_dir>/dead-letter)."
    )
    dead_letter_max_bytes: int = Field(
        16 * MiB,
        gt=0,
        description="Dead-letter files stop growing at this total size; beyond, lines are dropped and counted "
        "(reason dead_letter_full). The default stays well below the 64Mi state volume the injector gives the "
        "tailer (checkpoints share it): a receiver that refuses everything must not fill the volume and get "
        "the Pod evicted. Raise it only with the volume's sizeLimit.",
    )
    unhealthy_after_secs: float = Field(
        60.0,
        gt=0,
        description="Readiness fails while batches have been failing to deliver for this long.",
    )

    # ---- checkpoints
    checkpoint_dir: Path = Field(
        Path("/var/lib/sidecars/tailer"),
        description="Directory of the checkpoint file (offsets per file identity); use a volume that "
        "outlives the container (an emptyDir outlives container restarts).",
    )
    checkpoint_interval_secs: float = Field(
        1.0, gt=0, description="Acknowledged offsets are written at most this often (and at shutdown)."
    )
    checkpoint_retention_secs: float = Field(
        3600.0, gt=0, description="Checkpoints of files not seen for this long are forgotten."
    )

    @field_validator("include", "exclude")
    @classmethod
    def _globs(cls, patterns: list[str]) -> list[str]:
        from sidecars.tailer.discovery import compile_glob

        for p in patterns:
            compile_glob(p)  # raises ValueError naming the pattern
        return patterns

    @field_validator("multiline_start_pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _check(self) -> TailerSettings:
        if self.json_timestamp_key and not self.parse_json:
            raise ValueError("json_timestamp_key needs parse_json: true")
        if self.multiline == "pattern" and not self.multiline_start_pattern:
            raise ValueError("multiline=pattern needs multiline_start_pattern")
        for p in self.include:
            if not p.startswith("/"):
                raise ValueError(f"include pattern {p!r} must be an absolute path")
            if any(p == t or p.startswith(t + "/") for t in FORBIDDEN_TREES):
                raise ValueError(f"include pattern {p!r}: files of /proc and /sys are never read")
        return self

    @field_validator("sink")
    @classmethod
    def _known_sink(cls, name: str) -> str:
        try:
            _sink_class(name)
        except (LookupError, ImportError, TypeError) as exc:
            raise ValueError(str(exc)) from None
        return name

    @field_validator("sink_config")
    @classmethod
    def _sink_config(cls, config: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("sink")
        if name is None:  # the sink itself was invalid, and reported so
            return config
        # The sink's ValidationError passes through as it is: pydantic files each of its problems
        # under this field (`sink_config.url`), so the config file's line of the inner key is found.
        model = _sink_class(name).Settings
        return SinkConfig(config, model.model_validate(fold_choices(model, config)))  # `format: RAW` too

    @classmethod
    def nested_settings(cls) -> Mapping[str, tuple[str, Mapping[str, type[BaseModel]]]]:
        from sidecars.tailer.sinks.base import SINKS

        models = {}
        for name in SINKS.names():
            with contextlib.suppress(LookupError, ImportError, TypeError):  # reported when chosen
                models[name] = _sink_class(name).Settings
        return {"sink_config": ("sink", models)}

    def sink_settings(self) -> BaseModel:
        """The chosen sink's settings, validated from `sink_config` with the rest of these settings."""
        config = self.sink_config
        if not isinstance(config, SinkConfig):  # only model_construct() skips the validators
            raise TypeError("sink_config was never validated: build TailerSettings with validation")
        return config.settings


def _sink_class(name: str) -> type[Sink[Any]]:
    from sidecars.tailer.sinks.base import load_sink

    return load_sink(name)
