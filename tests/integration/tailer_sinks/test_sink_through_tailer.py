"""Each sink behind the real tailer: lines written to files arrive, in order, through every sink."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from sidecars.tailer.plugin import Tailer
from sidecars.testing import free_port, run_sidecar
from tests.integration.tailer_sinks.sink_receivers import (
    ack_204,
    bulk_answer,
    otlp_answer,
    validate_bulk,
    validate_loki,
    validate_ndjson,
    validate_otlp,
)
from tests.integration.tailer_sinks.syslog_ng_receiver import running
from tests.support.nginx import running_nginx

FAST: dict[str, Any] = {
    "start_at": "beginning",
    "batch_wait_secs": 0.05,
    "batch_max_lines": 50,
    "rescan_interval_secs": 0.5,
    "checkpoint_interval_secs": 0.1,
    "retry_initial_secs": 0.05,
    "retry_max_secs": 0.2,
    "shutdown_timeout_secs": 10.0,
}
LINES = {
    "a.log": [f"a {i:04d} ünïcødé €" for i in range(120)],
    "nested/b.log": [f'b {i:04d} "quoted" \\ back' for i in range(80)],
}


def write_files(logs: Path) -> None:
    for name, lines in LINES.items():
        path = logs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in lines))


async def until(predicate: Callable[[], bool], timeout_secs: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_secs
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def loki_lines(parsed: list[Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for streams in parsed:
        for s in streams:
            out.setdefault(s["stream"]["path"], []).extend(v[1] for v in s["values"])
    return out


def bulk_lines(parsed: list[Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for pairs in parsed:
        for _, _, doc in pairs:
            out.setdefault(doc["labels"]["path"], []).append(doc["message"])
    return out


def otlp_lines(parsed: list[Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for records in parsed:
        for r in records:
            path = next(a["value"]["stringValue"] for a in r["attributes"] if a["key"] == "log.file.path")
            out.setdefault(path, []).append(r["body"]["stringValue"])
    return out


CASES = {
    "loki": (validate_loki, ack_204, "/loki/api/v1/push", loki_lines),
    "elasticsearch": (validate_bulk, bulk_answer(lambda doc: (201, None)), "", bulk_lines),
    "otlp": (validate_otlp, otlp_answer(), "/v1/logs", otlp_lines),
}


def expected(logs: Path) -> dict[str, list[str]]:
    return {str(logs / name): lines for name, lines in LINES.items()}


@pytest.mark.parametrize("sink", sorted(CASES))
async def test_http_sinks_behind_the_tailer(sink: str, tmp_path: Path, start_receiver) -> None:
    validate, answer, path, collect = CASES[sink]
    rx = await start_receiver(validate, answer)
    logs = tmp_path / "logs"
    write_files(logs)
    settings = {"include": [f"{logs}/**/*.log"], "checkpoint_dir": str(tmp_path / "cp"), **FAST}
    want = expected(logs)
    async with run_sidecar(Tailer, sink=sink, sink_config={"url": rx.url + path, "gzip": True}, **settings):
        await until(lambda: sum(map(len, collect(rx.parsed).values())) >= 200)
    assert rx.violations == []
    assert collect(rx.parsed) == want


async def test_syslog_behind_the_tailer(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    write_files(logs)
    port = free_port()
    settings = {"include": [f"{logs}/**/*.log"], "checkpoint_dir": str(tmp_path / "cp"), **FAST}
    with running(tmp_path / "sng", port) as sng:
        config = {"port": port, "app_name": "shop"}
        async with run_sidecar(Tailer, sink="syslog", sink_config=config, labels={"team": "payments"}, **settings):
            got = await sng.wait_for(200)
    by_path: dict[str, list[str]] = {}
    for m in got:
        sd = m["_SDATA"]["labels@32473"]
        assert sd["team"] == "payments" and m["program"] == "shop"
        by_path.setdefault(sd["path"], []).append(m["message"])
    assert by_path == expected(logs)


async def test_file_behind_the_tailer(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    write_files(logs)
    out = tmp_path / "out" / "forwarded.ndjson"
    settings = {"include": [f"{logs}/**/*.log"], "checkpoint_dir": str(tmp_path / "cp"), **FAST}

    def received() -> list[dict[str, Any]]:
        return [orjson.loads(x) for x in out.read_bytes().splitlines()] if out.exists() else []

    async with run_sidecar(Tailer, sink="file", sink_config={"path": str(out)}, **settings):
        await until(lambda: len(received()) >= 200)
    by_path: dict[str, list[str]] = {}
    for doc in received():
        by_path.setdefault(doc["labels"]["path"], []).append(doc["message"])
    assert by_path == expected(logs)


# A real nginx in front of the receiver refuses any request body over 4 KiB with its own 413.
SIZE_LIMIT = """
        location / {{
            client_max_body_size 4k;
            proxy_pass {upstream};
        }}
"""


async def test_a_batch_the_receiver_finds_too_large_is_sent_in_halves(tmp_path: Path, start_receiver) -> None:
    rx = await start_receiver(validate_ndjson, ack_204)
    logs = tmp_path / "logs"
    write_files(logs)
    settings = {"include": [f"{logs}/**/*.log"], "checkpoint_dir": str(tmp_path / "cp"), **FAST}
    # One line alone fits; a batch of 50 (about 9 KiB of NDJSON) does not, nor does half of one.
    async with running_nginx(SIZE_LIMIT.replace("{upstream}", rx.url)) as nginx:
        config = {"url": nginx.url + "/ingest", "gzip": False}
        async with run_sidecar(Tailer, sink="http", sink_config=config, **settings) as sc:
            await until(lambda: sum(len(docs) for docs in rx.parsed) >= 200)
            splits = sc.sample("tailer_batch_splits_total")
            dropped = sc.sample("tailer_dropped_records_total", {"reason": "permanent"})
    assert rx.violations == []
    assert all(len(r.raw) <= 4096 for r in rx.requests)  # only what nginx let through reached it
    by_path: dict[str, list[str]] = {}
    for docs in rx.parsed:
        for doc in docs:
            by_path.setdefault(doc["labels"]["path"], []).append(doc["message"])
    assert by_path == expected(logs)  # every line, once, in order
    assert splits is not None and splits >= 4
    assert not dropped
