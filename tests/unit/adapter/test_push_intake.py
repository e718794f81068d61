"""A page entering a push output: converted without full collections, its previous series map freed piecewise."""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator

import pytest

from sidecars.adapter.exposition import parse
from sidecars.adapter.outputs.remote_write import RemoteWriteOutput
from sidecars.adapter.scraper import Scrape
from sidecars.adapter.settings import AdapterSettings
from sidecars.adapter.state import State
from sidecars.core import heap

SERIES = 60_000


def page(series: int, offset: int = 0) -> str:
    lines = "".join(f'app_items_total{{i="{i + offset}"}} {i}\n' for i in range(series))
    return "# TYPE app_items_total counter\n" + lines


def output() -> RemoteWriteOutput:
    settings = AdapterSettings(outputs=["remote_write"], push_url="http://127.0.0.1:9/api/v1/write")
    return RemoteWriteOutput(State(), settings)


@pytest.fixture
def full_collections() -> Iterator[list[int]]:
    """The generations collected meanwhile, under thresholds that make a full collection due at once."""
    saved = gc.get_threshold()
    collected: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collected.append(info["generation"])

    gc.freeze()  # the old generation almost empty: promoting a few thousand objects makes a full pass due
    gc.set_threshold(100, 1, 1)
    gc.callbacks.append(record)
    try:
        yield collected
    finally:
        gc.callbacks.remove(record)
        gc.set_threshold(*saved)
        heap.unfreeze()
        gc.unfreeze()


def test_a_big_page_is_converted_without_full_collections_and_frozen_after(full_collections: list[int]) -> None:
    push = output()
    result = parse(page(SERIES))
    frozen_before = gc.get_freeze_count()
    full_collections.clear()
    points = push._convert(Scrape(t_ms=1_000, duration_secs=0.0, result=result))
    assert len(points) == SERIES
    # A full pass would walk every point built so far, GIL held.
    assert 0 in full_collections and 2 not in full_collections
    assert gc.get_freeze_count() > frozen_before + SERIES  # the points are out of later passes


def test_the_previous_pages_series_map_is_emptied_piecewise_and_vanished_series_go_stale() -> None:
    push = output()
    push._convert(Scrape(t_ms=1_000, duration_secs=0.0, result=parse(page(SERIES))))
    previous = push._live
    assert len(previous) == SERIES
    points = push._convert(Scrape(t_ms=2_000, duration_secs=0.0, result=parse(page(SERIES, offset=10))))
    # Emptied by heap.release in the converting thread, not dropped whole (one C call freeing it all).
    assert previous == {}
    stale = [p for p in points if math.isnan(p[2])]
    assert len(stale) == 10 and {p[1] for p in stale} == {2_000}
    heap.unfreeze()


def test_a_failed_scrape_turns_every_live_series_stale_in_the_converting_step() -> None:
    push = output()
    push._convert(Scrape(t_ms=1_000, duration_secs=0.0, result=parse(page(100))))
    failed = Scrape(t_ms=2_000, duration_secs=0.0)
    push.on_scrape_failed(failed)
    assert push._pending == [failed] and len(push.queue) == 0  # nothing built on the loop
    points = push._convert(failed)
    assert len(points) == 100 and all(math.isnan(p[2]) and p[1] == 2_000 for p in points)
    assert push._live == {}
