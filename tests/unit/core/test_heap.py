"""The garbage-collector side of big structures: holds that nest across threads, freezes, piecewise frees."""

from __future__ import annotations

import collections
import contextlib
import gc
import threading
import weakref
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


class Node:
    other: Node


@contextlib.contextmanager
def no_automatic_collection() -> Iterator[None]:
    gc.disable()  # the cycle below must not be collected before the freeze takes it
    try:
        yield
    finally:
        gc.enable()


def unreachable_cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_cyclic_garbage_frozen_along_is_freed_at_the_next_hand_back(monkeypatch: pytest.MonkeyPatch) -> None:
    heap.unfreeze()
    with no_automatic_collection():
        dead = unreachable_cycle()
        heap.freeze()
    gc.collect()
    assert dead() is not None  # frozen: out of every collection's reach
    heap.freeze()  # within the period: still frozen
    gc.collect()
    assert dead() is not None
    monkeypatch.setattr(heap, "HAND_BACK_SECS", 0.0)
    # Handed back, collected, then frozen again: unfreezing and refreezing alone would keep the cycle.
    heap.freeze()
    assert dead() is None
    assert gc.get_freeze_count() > 0


def test_freezing_every_scrape_for_hours_does_not_keep_the_garbage_frozen_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    heap.unfreeze()
    clock = [0.0]
    monkeypatch.setattr(heap.time, "monotonic", lambda: clock[0])
    kept: list[weakref.ref[Node]] = []
    for _ in range(360):  # an hour of 10-second scrapes, each leaving one cycle behind at its freeze
        with no_automatic_collection():
            kept.append(unreachable_cycle())
            heap.freeze()
        clock[0] += 10.0
    alive = sum(ref() is not None for ref in kept)
    assert 0 < alive <= heap.HAND_BACK_SECS / 10  # at most one period's worth, never the hour's
    assert all(ref() is None for ref in kept[:-alive])


def test_a_hold_ended_by_an_exception_restores_the_thresholds() -> None:
    gc.set_threshold(700, 10, 10)
    with pytest.raises(RuntimeError), heap.full_collections_held(), heap.full_collections_held():
        raise RuntimeError("a parse failing midway")
    assert gc.get_threshold() == (700, 10, 10)
    with heap.full_collections_held():
        assert gc.get_threshold() == (700, 10, 1 << 30)
    assert gc.get_threshold() == (700, 10, 10)


def test_release_empties_lists_dicts_sets_and_deques_in_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "RELEASE_SLICE", 7)
    items: list[int] = list(range(100))
    mapping = {i: str(i) for i in range(50)}
    members = set(range(30))
    queue = collections.deque(range(20))
    heap.release([items, mapping, members, queue])
    assert (items, mapping, members, len(queue)) == ([], {}, set(), 0)
