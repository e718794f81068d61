"""The demo: a small app to put sidecars beside, helpers for the examples, and `sidecars demo`.

`sidecars demo` (see `launcher`) starts on localhost the demo app, two upstream servers, a log
receiver and the three sidecars as subprocesses, prints where to look, and stops on Ctrl-C.
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    """Entry point of `sidecars demo`."""
    from sidecars.demo.launcher import main as launch

    return launch(argv)
