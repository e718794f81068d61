"""The demo: a small app to put sidecars beside, helpers for the examples, and `sidecars demo`.

`sidecars demo` (see `launcher`) starts on localhost the demo app, two upstream servers, a log
receiver and the three sidecars as subprocesses, prints where to look, and stops on Ctrl-C. It is
a command plugin (entry-point group `sidecars.commands`) like any company's.
"""

from __future__ import annotations

from sidecars.core import Command


class Demo(Command):
    name = "demo"
    description = "start a demo app and the three sidecars on localhost"

    @staticmethod
    def main(argv: list[str]) -> int:
        from sidecars.demo.launcher import main as launch

        return launch(argv)
