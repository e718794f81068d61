"""`python -m benchmarks._looplag ADAPTER-ARGS...`: the adapter with an event-loop lag probe beside it.

A task sleeps 1 ms in a loop and records how late each wake-up is; at exit the percentiles of the
lateness go to the JSON file named by `LOOP_LAG_OUT`. A stall of the loop (a long C call, a full
garbage collection, a thread keeping the GIL) shows as one late wake-up of about its length. Full
collections are counted and timed too.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import json
import os
import time
from collections.abc import Callable

from sidecars.adapter import plugin
from sidecars.core.cli import run_main

TICK_SECS = 0.001
_lags_ms: list[float] = []
_full_gc_ms: list[float] = []
_gc_started = 0.0
_run = plugin.Adapter.run


async def _probe() -> None:
    while True:
        started = time.perf_counter()
        await asyncio.sleep(TICK_SECS)
        _lags_ms.append((time.perf_counter() - started - TICK_SECS) * 1000)


async def _run_with_probe(self: plugin.Adapter, ready: Callable[[], None]) -> None:
    self.context.spawn("loop-lag-probe", _probe)
    await _run(self, ready)


def lag_figures(lags_ms: list[float]) -> dict[str, float]:
    ordered = sorted(lags_ms)
    n = len(ordered)
    if n == 0:
        return {}
    return {
        "lag_p50_ms": ordered[n // 2],
        "lag_p99_ms": ordered[min(n - 1, int(n * 0.99))],
        "lag_p999_ms": ordered[min(n - 1, int(n * 0.999))],
        "lag_max_ms": ordered[-1],
        "lag_over_10ms": float(sum(1 for x in ordered if x > 10)),
    }


def _time_full_collections(phase: str, info: dict[str, int]) -> None:
    global _gc_started
    if info["generation"] != 2:
        return
    if phase == "start":
        _gc_started = time.perf_counter()
    else:
        _full_gc_ms.append((time.perf_counter() - _gc_started) * 1000)


def _dump() -> None:
    out = os.environ.get("LOOP_LAG_OUT")
    if out:
        with open(out, "w") as f:
            figures = lag_figures(_lags_ms)
            figures["full_gcs"] = float(len(_full_gc_ms))
            figures["full_gc_max_ms"] = max(_full_gc_ms, default=0.0)
            json.dump(figures, f)


def mark() -> None:
    """Forgets the lateness seen so far (start-up, the first scrape): called on SIGUSR1."""
    _lags_ms.clear()
    _full_gc_ms.clear()


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGUSR1, lambda *_: mark())
    plugin.Adapter.run = _run_with_probe  # type: ignore[method-assign]
    gc.callbacks.append(_time_full_collections)
    atexit.register(_dump)
    raise SystemExit(run_main(plugin.Adapter))
