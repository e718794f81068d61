"""The `sidecars` command: `sidecars list`, `sidecars run NAME ...`, and every installed command.

Sidecars come from the entry-point group `sidecars.plugins`, commands (`demo`, `inject`, a company's
own) from `sidecars.commands`, both through the core's registries: this module imports none of them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sidecars import __version__
from sidecars.core.cli import run_main
from sidecars.core.plugins import COMMANDS, SIDECARS, PluginError
from sidecars.core.runtime import EXIT_CONFIG, EXIT_OK


def build_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The parser, and its `run` subparser (for its usage line)."""
    parser = argparse.ArgumentParser(
        prog="sidecars",
        description="Sidecar containers for Kubernetes Pods: run one, or list those installed.",
    )
    parser.add_argument("--version", action="version", version=f"sidecars {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("list", help="installed sidecars, one line each")
    run_parser = sub.add_parser("run", help="run an installed sidecar: sidecars run NAME [options]", add_help=False)
    run_parser.add_argument("name")
    for name in COMMANDS.names():
        try:
            description = COMMANDS.load(name).description
        except PluginError as exc:
            description = f"(cannot be loaded: {exc})"
        sub.add_parser(name, help=description, add_help=False)
    return parser, run_parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        parser, _ = build_parser()  # loads every command for its description: only for help
        if not argv:
            parser.print_help()
            return EXIT_CONFIG
        parser.parse_args(argv)  # prints help, the version or the usage error
        return EXIT_CONFIG
    command, rest = argv[0], argv[1:]
    if command == "list":
        return _list()
    if command == "run":
        if not rest or rest[0].startswith("-"):
            build_parser()[1].print_usage(sys.stderr)
            print("sidecars run: name the sidecar to run (see `sidecars list`)", file=sys.stderr)
            return EXIT_CONFIG
        try:
            plugin_cls = SIDECARS.load(rest[0])
        except PluginError as exc:
            print(f"sidecars run: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        return run_main(plugin_cls, rest[1:], prog=f"sidecars run {rest[0]}")
    try:
        program = COMMANDS.load(command)
    except PluginError as exc:
        print(f"sidecars: {exc} (or list, run)", file=sys.stderr)
        return EXIT_CONFIG
    return program.main(rest)


def _list() -> int:
    found = SIDECARS.providers()
    if not found:
        print("no sidecars installed")
        return EXIT_OK
    width = max(len(name) for name in found)
    for name, providers in sorted(found.items()):
        try:
            line = SIDECARS.load(name).description
        except PluginError as exc:
            line = f"(cannot be loaded: {exc})"
        print(f"{name:<{width}}  {line}   [{', '.join(p.target for p in providers)}]")
    return EXIT_OK
