"""In-memory sample storage for rule evaluation: per series one timestamp array and one value array.

Staleness follows Prometheus: a series scraped last time but missing from this scrape gets a staleness
marker (a special NaN) at the scrape's timestamp, and a failed scrape marks every series of the previous
scrape stale. Series exposed with explicit timestamps are not tracked for staleness, as in Prometheus.
Samples older than the retention are dropped in amortised batches, so memory stays bounded by the number
of series times the points retained.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left
from collections.abc import Iterable

from sidecars.adapter.promql.nodes import Matcher, MatchType
from sidecars.adapter.promql.values import Labels

STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
_STALE_BYTES = struct.pack("<d", STALE_NAN)

ScrapedSample = tuple[str, Labels, float, int | None]


def is_stale(value: float) -> bool:
    return value != value and struct.pack("<d", value) == _STALE_BYTES


def with_name(name: str, labels: Labels) -> Labels:
    """`labels` (sorted, without `__name__`) with the metric name inserted in sorted position."""
    if not labels or labels[-1][0] < "__name__":
        return (*labels, ("__name__", name))
    if labels[0][0] > "__name__":
        return (("__name__", name), *labels)
    return tuple(sorted((*labels, ("__name__", name))))


class Series:
    """One series: its labels (with `__name__`) and its samples in two parallel arrays."""

    __slots__ = ("key", "label_map", "labels", "last_gen", "name", "stale_count", "ts", "unnamed", "vs")

    def __init__(self, name: str, labels: Labels) -> None:
        self.name = name
        self.key = (name, labels)
        # Done once per series, so the per-sample path stays lean: empty values are no labels (as in
        # Prometheus), a stray `__name__` is dropped, and the pairs are sorted if they came unsorted.
        if any(not value or key == "__name__" for key, value in labels):
            labels = tuple(p for p in labels if p[1] and p[0] != "__name__")
        if any(labels[i][0] > labels[i + 1][0] for i in range(len(labels) - 1)):
            labels = tuple(sorted(labels))
        self.labels: Labels = with_name(name, labels)
        self.unnamed: Labels = labels  # what most functions and operators return: the labels without the name
        self.label_map: dict[str, str] | None = None
        self.ts = array("q")
        self.vs = array("d")
        self.stale_count = 0  # staleness markers held: lets range reads skip the filtering when zero
        self.last_gen = -1  # the scrape generation that last contained this series (staleness tracking)

    def get(self, label: str) -> str:
        m = self.label_map
        if m is None:
            m = self.label_map = dict(self.labels)
        return m.get(label, "")

    def append(self, t: int, v: float) -> bool:
        ts = self.ts
        if ts and ts[-1] >= t:
            return False  # out of order or duplicate timestamp: Prometheus rejects it too
        ts.append(t)
        self.vs.append(v)
        if v != v and is_stale(v):
            self.stale_count += 1
        return True

    def trim(self, cutoff: int) -> None:
        i = bisect_left(self.ts, cutoff)
        if i:
            if self.stale_count:
                self.stale_count -= sum(1 for v in self.vs[:i] if v != v and is_stale(v))
            del self.ts[:i]
            del self.vs[:i]


class History:
    """Samples of every scraped series for the last `retention_ms`, with Prometheus' staleness handling.

    Not thread-safe: append and evaluate from one thread (or hand the whole History between threads).
    """

    def __init__(self, retention_ms: int, lookback_delta_ms: int = 300_000) -> None:
        if retention_ms <= 0:
            raise ValueError("retention_ms must be positive")
        self.retention_ms = retention_ms
        self.lookback_delta_ms = lookback_delta_ms
        self._series: dict[tuple[str, Labels], Series] = {}
        self._by_name: dict[str, dict[tuple[str, Labels], Series]] = {}
        self._last_scrape: list[Series] = []
        self._gen = 0
        self._version = 0  # bumped whenever a series is added or removed: selector caches key on it
        self._select_cache: dict[tuple[Matcher, ...], tuple[int, list[Series]]] = {}
        self._last_sweep_ms: int | None = None
        self.latest_ms: int | None = None

    @property
    def series_count(self) -> int:
        return len(self._series)

    def set_retention_ms(self, retention_ms: int) -> None:
        if retention_ms <= 0:
            raise ValueError("retention_ms must be positive")
        self.retention_ms = retention_ms

    def _slack_ms(self) -> int:
        # Trimming waits until this much extra history piled up, so each series is trimmed once in a while
        # rather than on every scrape.
        return max(self.retention_ms // 4, 1000)

    def append_scrape(self, t_ms: int, samples: Iterable[ScrapedSample]) -> None:
        """Store one scrape taken at `t_ms`; series missing since the previous scrape become stale."""
        self._gen += 1
        gen = self._gen
        series_map = self._series
        cutoff = t_ms - self.retention_ms
        trim_below = cutoff - self._slack_ms()
        scraped: list[Series] = []
        for name, labels, value, explicit_ts in samples:
            key = (name, labels)
            s = series_map.get(key)
            if s is None:
                s = self._add_series(name, labels)
            ts = s.ts
            if explicit_ts is None:
                if s.last_gen == gen:
                    continue  # a duplicate in the same page: Prometheus keeps the first
                s.last_gen = gen
                scraped.append(s)
                # Series.append inlined: this loop runs once per sample of every scrape.
                if ts and ts[-1] >= t_ms:
                    continue
                ts.append(t_ms)
                s.vs.append(value)
                if value != value and is_stale(value):
                    s.stale_count += 1
            else:
                s.append(explicit_ts, value)
            if ts and ts[0] < trim_below:
                s.trim(cutoff)
        for s in self._last_scrape:
            if s.last_gen != gen:
                s.append(t_ms, STALE_NAN)
        self._last_scrape = scraped
        self._advance(t_ms)

    def mark_stale(self, t_ms: int) -> None:
        """The scrape at `t_ms` failed: every series of the previous scrape becomes stale.

        To keep a synthetic `up` series as Prometheus does, record the failure instead as a scrape holding
        only it, `append_scrape(t_ms, [("up", labels, 0.0, None)])`: every other series goes stale the same way.
        """
        for s in self._last_scrape:
            s.append(t_ms, STALE_NAN)
        self._last_scrape = []
        self._gen += 1
        self._advance(t_ms)

    def _advance(self, t_ms: int) -> None:
        if self.latest_ms is None or t_ms > self.latest_ms:
            self.latest_ms = t_ms
        if self._last_sweep_ms is None:
            self._last_sweep_ms = t_ms
        elif t_ms - self._last_sweep_ms >= self._slack_ms():
            self._last_sweep_ms = t_ms
            self.sweep(t_ms - self.retention_ms)

    def sweep(self, cutoff: int) -> None:
        """Drop samples older than `cutoff`, and series left with none."""
        dead = []
        for key, s in self._series.items():
            ts = s.ts
            if not ts or ts[-1] < cutoff:
                dead.append(key)
            elif ts[0] < cutoff:
                s.trim(cutoff)
        for key in dead:
            del self._series[key]
            by_name = self._by_name[key[0]]
            del by_name[key]
            if not by_name:
                del self._by_name[key[0]]
        if dead:
            self._version += 1
            self._select_cache.clear()

    def _add_series(self, name: str, labels: Labels) -> Series:
        s = Series(name, labels)
        self._series[s.key] = s
        self._by_name.setdefault(name, {})[s.key] = s
        self._version += 1
        if self._select_cache:
            self._select_cache.clear()
        return s

    def select(self, matchers: tuple[Matcher, ...]) -> list[Series]:
        """The series matching every matcher; cached until the set of series changes."""
        cached = self._select_cache.get(matchers)
        if cached is not None and cached[0] == self._version:
            return cached[1]
        name = None
        rest = []
        for m in matchers:
            if name is None and m.name == "__name__" and m.type is MatchType.EQUAL:
                name = m.value
            else:
                rest.append(m)
        if name is not None:
            candidates: Iterable[Series] = self._by_name.get(name, {}).values()
        else:
            candidates = self._series.values()
        # Creation order, as Prometheus' head index returns series: it decides ties in topk/bottomk.
        result = [s for s in candidates if all(m.matches(s.get(m.name)) for m in rest)]
        self._select_cache[matchers] = (self._version, result)
        return result

    def all_series(self) -> list[Series]:
        return list(self._series.values())


def stale_free(
    ts: array[int], vs: array[float], has_stale: bool
) -> tuple[list[int] | array[int], list[float] | array[float]]:
    """The points of a window with staleness markers removed (they never enter a range)."""
    if not has_stale:
        return ts, vs
    keep = [i for i, v in enumerate(vs) if not (v != v and is_stale(v))]
    return [ts[i] for i in keep], [vs[i] for i in keep]


__all__ = ["STALE_NAN", "History", "Series", "is_stale", "stale_free", "with_name"]
