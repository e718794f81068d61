"""The cost of the remote_write output per scraped series: CPU and memory of turning one page into the
requests that carry it (selection, labels, protobuf, snappy), at 10k and 100k series.

The peer is the parse of the same page (the work every scrape already does): the ratio says how much a
push adds to a scrape. Memory is the peak traced allocation while one page's samples sit in the queue
and are encoded. What the harness does not cover yet: probe latency while a real receiver is fed.
"""

from __future__ import annotations

import time
import tracemalloc

from benchmarks.adapter_parser import generated_page
from benchmarks.report import Report
from sidecars.adapter.exposition import parse
from sidecars.adapter.outputs.push import Point, select_points
from sidecars.adapter.outputs.remote_write import RemoteWriteOutput
from sidecars.adapter.settings import AdapterSettings
from sidecars.adapter.state import State


def _encode_all(output: RemoteWriteOutput, points: list[Point]) -> int:
    return sum(len(output.encode(points[i : i + output.batch_max])) for i in range(0, len(points), output.batch_max))


def _measure(report: Report, series: int, rounds: int) -> None:
    page = generated_page(series)
    result = parse(page)
    settings = AdapterSettings(
        outputs=["remote_write"], push_url="http://127.0.0.1:9/api/v1/write", push_labels=["pod=web-0"]
    )
    output = RemoteWriteOutput(State(), settings)
    selection = output.selection
    best_parse = best_push = float("inf")
    size = 0
    for _ in range(rounds):
        started = time.process_time()
        parse(page)
        best_parse = min(best_parse, time.process_time() - started)
        started = time.process_time()
        points = select_points(result, 1_700_000_000_000, selection)
        size = _encode_all(output, points)
        best_push = min(best_push, time.process_time() - started)
    tracemalloc.start()
    points = select_points(result, 1_700_000_000_000, selection)
    _encode_all(RemoteWriteOutput(State(), settings), points)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = len(result.samples)
    report.add(f"parse {series // 1000}k", us_per_series=best_parse / n * 1e6)
    report.add(
        f"remote_write {series // 1000}k",
        us_per_series=best_push / n * 1e6,
        bytes_per_series=peak / n,
        wire_bytes_per_series=size / n,
    )
    report.ratio(f"remote_write CPU per series / parse CPU per series ({series // 1000}k)", best_push, best_parse)


def run(quick: bool) -> Report:
    report = Report("adapter_push", peer="parse")
    for series in (10_000, 100_000):
        _measure(report, series, 1 if quick else 5)
    report.notes.append("CPU: process time, best of the rounds; memory: tracemalloc peak while one page is encoded")
    return report
