"""Runs one benchmark, prints its table and writes the JSON results to benchmarks/results/NAME.json.

A benchmark is a module `benchmarks/<name>.py` with `run(quick: bool) -> Report`: it starts the
sidecar and its peer in this process tree, drives both the same way, and reports each figure beside
the peer's with the ratio. Absolute numbers vary between machines; the ratio is the result. What
several benchmarks share (starting peers, load generators, the comparison loops) is in `harness.py`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path

import benchmarks
from benchmarks.report import Report


def available() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.iter_modules(benchmarks.__path__)
        if m.name not in {"report", "harness", "__main__"} and not m.name.startswith("_")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("name", nargs="?", choices=available(), help="benchmark to run")
    parser.add_argument("--quick", action="store_true", help="short run: checks the harness, not the figures")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    if args.name is None:
        print("benchmarks:", ", ".join(available()))
        return 0
    module = importlib.import_module(f"benchmarks.{args.name}")
    report: Report = module.run(quick=args.quick)
    print(report.table())
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.name}.json"
    path.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    print(f"\nresults written to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
