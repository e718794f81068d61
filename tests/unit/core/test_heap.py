"""The garbage-collector side of big structures: holds that nest across threads, freezes, piecewise frees."""

from __future__ import annotations

import collections
import gc
import threading
from collections.abc import Iterator

import pytest

from sidecars.core import heap


@pytest.fixture(autouse=True)
def _thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)
    heap.unfreeze()


def test_overlapping_holds_of_two_threads_restore_the_thresholds_once_both_end() -> None:
    gc.set_threshold(700, 10, 10)
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with heap.full_collections_held():
            first_in.set()
            second_in.wait(10)
        first_out.set()

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(10)
    with heap.full_collections_held():
        second_in.set()
        first_out.wait(10)
        # The first hold ended inside the second: full collections are still held back.
        assert gc.get_threshold() == (700, 10, 1 << 30)
    thread.join(10)
    # Saving and restoring per hold would leave (700, 10, 1 << 30) here: full collections off for good.
    assert gc.get_threshold() == (700, 10, 10)


def test_no_full_collection_runs_within_a_hold_while_young_ones_do() -> None:
    collected: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collected.append(info["generation"])

    gc.freeze()  # an almost empty old generation: a full collection is due as soon as objects are promoted
    gc.set_threshold(100, 1, 1)
    gc.callbacks.append(record)
    try:
        with heap.full_collections_held():
            kept = [[i] for i in range(100_000)]  # lists: tracked, never untracked, promoted to the old generation
        assert 2 not in collected
        assert 0 in collected
        collected.clear()
        more = [[i] for i in range(100_000)]
        assert 2 in collected  # the same work outside a hold: full collections
    finally:
        gc.callbacks.remove(record)
        gc.unfreeze()
    assert len(kept) == len(more)


def test_freeze_hands_the_frozen_objects_back_every_so_many_freezes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "FREEZES_PER_UNFREEZE", 3)
    heap.unfreeze()
    unfreezes = []
    real_unfreeze = gc.unfreeze
    monkeypatch.setattr(heap.gc, "unfreeze", lambda: (unfreezes.append(gc.get_freeze_count()), real_unfreeze()))
    for _ in range(7):
        heap.freeze()
        assert gc.get_freeze_count() > 0
    assert len(unfreezes) == 2  # before the 4th and the 7th freeze
    assert all(count > 0 for count in unfreezes)
    heap.unfreeze()
    assert gc.get_freeze_count() == 0


def test_release_empties_lists_dicts_sets_and_deques_in_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "RELEASE_SLICE", 7)
    items: list[int] = list(range(100))
    mapping = {i: str(i) for i in range(50)}
    members = set(range(30))
    queue = collections.deque(range(20))
    heap.release([items, mapping, members, queue])
    assert (items, mapping, members, len(queue)) == ([], {}, set(), 0)
