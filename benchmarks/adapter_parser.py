"""The adapter's exposition parser versus prometheus_client's (`text_string_to_metric_families`).

Two pages: a generated one with 10k series (counters, gauges, histograms with the labels a web app
has) and a real node_exporter page (saved under tests/data/adapter, refreshed from a live
node_exporter when the binary is installed). For each: a full parse from cold (no cache), the full
parse of a new page in a running process (metric names and label-name sets validated before are
remembered), the full parse as the scraper does it in steady state (the label cache of the previous
scrape of the same page), and the parse filtered to the families a typical rules file reads. Each figure is the best
of several interleaved rounds, in MB/s; the ratios are ours over prometheus_client's.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.report import Report
from sidecars.adapter.exposition import LabelCache, SeriesSeen, family_names, parse, parse_pieces, reset_memos

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
SAVED_PAGE = Path(__file__).parents[1] / "tests" / "data" / "adapter" / "node_exporter.prom"


def generated_page(series: int = 10_000, seed: int = 1) -> str:
    rnd = random.Random(seed)
    out: list[str] = []
    count = family = 0
    while count < series:
        family += 1
        kind = rnd.choice(["counter", "gauge", "histogram"])
        name = f"app_metric_{family}" + ("_total" if kind == "counter" else "")
        out += [f"# HELP {name} What {name} measures.", f"# TYPE {name} {kind}"]
        for i in range(rnd.randint(5, 50)):
            labels = (
                f'method="{rnd.choice(["GET", "POST"])}",path="/api/v1/items/{i}",code="{rnd.choice([200, 404, 500])}"'
            )
            if kind == "histogram":
                total = 0
                for le in ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"):
                    total += rnd.randint(0, 100)
                    out.append(f'{name}_bucket{{{labels},le="{le}"}} {total}')
                out.append(f"{name}_sum{{{labels}}} {rnd.random() * 1000}")
                out.append(f"{name}_count{{{labels}}} {total}")
                count += 14
            else:
                out.append(f"{name}{{{labels}}} {rnd.random() * 1e6}")
                count += 1
    return "\n".join(out) + "\n"


def node_exporter_page() -> tuple[str, str]:
    """A live page when node_exporter is installed, else the saved one; and where it came from."""
    if Path(NODE_EXPORTER).exists():
        from sidecars.testing import free_port

        port = free_port()
        proc = subprocess.Popen(
            [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                        return response.read().decode(), "live node_exporter"
                except OSError:
                    time.sleep(0.1)
        finally:
            proc.terminate()
            proc.wait(10)
    return SAVED_PAGE.read_text(), "saved node_exporter page"


def _best(fn: Callable[[], object], rounds: int, repeat: int = 1) -> float:
    """The best time of one call over `rounds` timings of `repeat` calls each."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(repeat):
            fn()
        times.append((time.perf_counter() - started) / repeat)
    return min(times)


def _measure(report: Report, label: str, page: str, wanted: list[str], rounds: int) -> None:
    mb = len(page.encode()) / 1e6
    families = family_names(wanted)
    cache: LabelCache = {}
    seen: SeriesSeen = {}

    def first_page() -> object:  # nothing validated before, nothing cached
        reset_memos()
        return parse(page)

    def steady() -> object:  # as the scraper parses: caches kept from the previous scrape
        return parse_pieces([page], label_cache=cache, series_seen=seen)

    steady()
    # Small pages are timed over several calls at once, so that each timing lasts some 50 ms.
    started = time.perf_counter()
    parse(page)
    repeat = max(1, int(0.05 / max(time.perf_counter() - started, 1e-6) / 5))
    theirs: list[float] = []
    cold: list[float] = []
    fresh: list[float] = []
    warm: list[float] = []
    filtered: list[float] = []
    # Interleaved so that load from elsewhere on the machine hits both sides alike.
    for _ in range(rounds):
        theirs.append(_best(lambda: [f.samples for f in text_string_to_metric_families(page)], 2, repeat))
        cold.append(_best(first_page, 2, repeat))
        fresh.append(_best(lambda: parse(page), 2, repeat))
        warm.append(_best(steady, 2, repeat))
        filtered.append(_best(lambda: parse(page, families=families), 2, repeat * 5))
    peer, c, n, w, f = min(theirs), min(cold), min(fresh), min(warm), min(filtered)
    samples = len(parse(page).samples)
    report.add(f"pc {label}", mb_per_s=mb / peer, ms=peer * 1000, samples=samples)
    report.add(f"ours {label}", mb_per_s=mb / c, ms=c * 1000, samples=samples)
    report.add(f"ours {label} n", mb_per_s=mb / n, ms=n * 1000)
    report.add(f"ours {label} w", mb_per_s=mb / w, ms=w * 1000)
    report.add(f"ours {label} f", mb_per_s=mb / f, ms=f * 1000)
    report.ratio(f"{label} full parse, first page of a process (nothing cached) speed-up", peer, c)
    report.ratio(f"{label} full parse, a new page (names and label sets validated before) speed-up", peer, n)
    report.ratio(f"{label} full parse (steady state, label cache) speed-up", peer, w)
    report.ratio(f"{label} filtered to {len(wanted)} families speed-up", peer, f)
    report.notes.append(
        f"{label}: {mb:.2f} MB, {samples} samples; spread of prometheus_client "
        f"{statistics.pstdev(theirs) / statistics.mean(theirs):.0%} over {rounds} rounds"
    )


def run(quick: bool) -> Report:
    report = Report(name="adapter_parser", peer="prometheus_client 0.26 text parser")
    rounds = 2 if quick else 7
    _measure(report, "10k", generated_page(), ["app_metric_3_bucket", "app_metric_7_total", "app_metric_12"], rounds)
    page, source = node_exporter_page()
    _measure(
        report,
        "node",
        page,
        ["node_cpu_seconds_total", "node_filesystem_avail_bytes", "node_memory_MemAvailable_bytes", "node_load1"],
        rounds,
    )
    report.notes.append(f"node page: {source}")
    report.notes.append(
        "ours = first page of a process; n = a new page, names and label-name sets already validated; "
        "w = steady state (label cache of the previous scrape); f = filtered to the rules' families"
    )
    return report
