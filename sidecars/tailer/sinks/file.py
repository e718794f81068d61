"""`file`: append each batch to a local file and fsync it; the fsync is the acknowledgement.

Optionally rotated by size: `app.ndjson` becomes `app.ndjson.1`, older ones shift up to the limit.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Literal

from prometheus_client import CollectorRegistry
from pydantic import Field
from structlog.typing import FilteringBoundLogger

from sidecars.tailer.sinks.base import Batch, RetryableError, SendResult, Sink, SinkSettings
from sidecars.tailer.sinks.encode import ndjson, raw_lines
from sidecars.tailer.sinks.stdout import write_all


class FileSettings(SinkSettings):
    path: Path = Field(description="File to append to; its directory is created if missing.")
    format: Literal["json", "raw"] = Field(
        "json", description="json: one JSON document per line (timestamp, message, labels); raw: lines as read."
    )
    fsync: bool = Field(True, description="fsync after every batch, so an acknowledged batch survives a crash.")
    rotate_max_bytes: int | None = Field(
        None, gt=0, description="Rotate before a batch would grow the file past this size; unset: never."
    )
    rotate_keep_files: int = Field(5, ge=1, description="Rotated files kept (path.1 is the newest).")
    file_mode: int = Field(
        0o640, description="Permission bits of a newly created file.", json_schema_extra={"doc_default": "`0o640`"}
    )


class FileSink(Sink[FileSettings]):
    name = "file"
    description = "Append NDJSON (or raw lines) to a local file, fsync'd per batch, optionally rotated by size."
    Settings = FileSettings

    def __init__(self, settings: FileSettings, log: FilteringBoundLogger, registry: CollectorRegistry) -> None:
        super().__init__(settings, log, registry)
        self._fd: int | None = None
        self._size = 0
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        path = self.settings.path
        created = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, self.settings.file_mode)
        self._size = os.fstat(self._fd).st_size
        if created:
            _fsync_dir(path.parent)

    async def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            await asyncio.to_thread(os.close, fd)

    async def send(self, batch: Batch) -> SendResult:
        with self.metrics.request() as req:
            data = ndjson(batch) if self.settings.format == "json" else raw_lines(batch)
            async with self._lock:
                try:
                    await asyncio.to_thread(self._append, data)
                except OSError as e:
                    # ENOSPC, EIO...: the batch is not known to be on disk; it may fit later.
                    raise RetryableError(f"{self.settings.path}: {e}") from e
            self.metrics.add_bytes(len(data))
            req.result = SendResult()
            return req.result

    def _append(self, data: bytes) -> None:
        limit = self.settings.rotate_max_bytes
        if self._fd is None or (limit is not None and self._size > 0 and self._size + len(data) > limit):
            self._rotate()
        assert self._fd is not None
        write_all(self._fd, data)
        self._size += len(data)
        if self.settings.fsync:
            os.fsync(self._fd)

    def _rotate(self) -> None:
        path = self.settings.path
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            keep = self.settings.rotate_keep_files
            for n in range(keep - 1, 0, -1):
                older = path.with_name(f"{path.name}.{n}")
                if older.exists():
                    os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
            os.replace(path, path.with_name(f"{path.name}.1"))
        self._open()
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
