"""Big, short-lived, acyclic structures without event-loop stalls: the garbage collector's side of it.

A sidecar that turns a page of 100k series into tuples, or those into requests, builds hundreds of
thousands of objects in a worker thread. Two things would then hold the GIL, and so the event loop
and its probes, for tens of milliseconds in one go:

- CPython's full collections, which walk every tracked object that is not frozen. Building a big
  structure promotes its objects and triggers them again and again, whichever thread allocates.
  `full_collections_held()` holds them back while one is built (young collections stay on: they
  untrack acyclic tuples as they are made), and `freeze()` then moves what exists out of the
  collector's sight (O(1); reference counting still frees it). Every `FREEZES_PER_UNFREEZE`
  freezes the frozen objects are handed back once, so cyclic garbage that happened to be alive at a
  freeze is still collected eventually.
- Freeing one: the last reference to a list of 100k tuples dropped is a single C call that frees
  them all. `release()` empties containers a slice at a time instead, in the thread it is called in,
  so the GIL changes hands between slices.

Both are process-wide and thread-safe: the holds of overlapping threads nest, and thresholds are
restored when the last one ends.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import threading
from collections.abc import Iterable, Iterator
from typing import Any

FREEZES_PER_UNFREEZE = 100
FREEZE_MIN_OBJECTS = 50_000  # below it a structure is cheap to walk: not worth a freeze
RELEASE_SLICE = 20_000  # items freed per step: well under a millisecond of C

_lock = threading.Lock()
_holds = 0
_held_thresholds: tuple[int, int, int] | None = None
_freezes = 0


@contextlib.contextmanager
def full_collections_held() -> Iterator[None]:
    """No automatic full collection within (in any thread); young collections as usual."""
    global _holds, _held_thresholds
    with _lock:
        if _holds == 0:
            _held_thresholds = gc.get_threshold()
            gc.set_threshold(_held_thresholds[0], _held_thresholds[1], 1 << 30)
        _holds += 1
    try:
        yield
    finally:
        with _lock:
            _holds -= 1
            if _holds == 0 and _held_thresholds is not None:
                gc.set_threshold(*_held_thresholds)
                _held_thresholds = None


def freeze() -> None:
    """Everything alive now is left out of later collections (call it once a big structure is built)."""
    global _freezes
    with _lock:
        if _freezes >= FREEZES_PER_UNFREEZE:
            gc.unfreeze()
            _freezes = 0
        gc.freeze()
        _freezes += 1


def unfreeze() -> None:
    """Hands frozen objects back to the collector (at shutdown, or when big structures are done)."""
    global _freezes
    with _lock:
        if _freezes:
            gc.unfreeze()
            _freezes = 0


def release(containers: Iterable[list[Any] | dict[Any, Any] | set[Any] | collections.deque[Any]]) -> None:
    """Empties each container a slice at a time (lists from the end, the others item by item)."""
    for items in containers:
        if isinstance(items, list):
            while items:
                del items[-RELEASE_SLICE:]
        elif isinstance(items, dict):
            while items:
                for _ in range(min(RELEASE_SLICE, len(items))):
                    items.popitem()
        else:
            while items:
                items.pop()
