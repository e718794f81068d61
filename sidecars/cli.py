"""The `sidecars` command: `sidecars list`, `sidecars run NAME ...`, `sidecars schema NAME`,
`sidecars docs-options`, and every installed command.

Sidecars come from the entry-point group `sidecars.plugins`, commands (`demo`, `inject`, a company's
own) from `sidecars.commands`, both through the core's registries: this module imports none of them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from sidecars import __version__
from sidecars.core import options_doc
from sidecars.core.cli import run_main
from sidecars.core.plugins import COMMANDS, SIDECARS, PluginError
from sidecars.core.runtime import EXIT_CONFIG, EXIT_FATAL, EXIT_OK
from sidecars.core.schema import config_schema


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser, and its built-in subparsers by name (for their help and usage lines)."""
    parser = argparse.ArgumentParser(
        prog="sidecars",
        description="Sidecar containers for Kubernetes Pods: run one, or list those installed.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"sidecars {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    builtins = {
        "list": sub.add_parser("list", help="installed sidecars, one line each", description="Installed sidecars."),
        "run": sub.add_parser(
            "run",
            help="run an installed sidecar: sidecars run NAME [options]",
            description="Run an installed sidecar (see `sidecars list`); `sidecars run NAME --help` lists its options.",
            usage="sidecars run NAME [options]",
            add_help=False,  # `sidecars run NAME --help` is the sidecar's own help
        ),
        "schema": sub.add_parser(
            "schema",
            help="print the JSON Schema of a sidecar's config file (or of another file it reads)",
            description="Print a JSON Schema for editors (yaml-language-server) and CI: NAME is a sidecar "
            "(its --config file) or SIDECAR-FILE (adapter-rules: the adapter's rules file).",
            epilog="Without NAME: list the names.",
        ),
        "docs-options": sub.add_parser(
            "docs-options",
            help="print or rewrite the options tables of the docs, from the settings models",
            add_help=False,  # its own parser: `sidecars docs-options --help`
        ),
    }
    builtins["run"].add_argument("name", metavar="NAME", help="an installed sidecar")
    builtins["schema"].add_argument("name", nargs="?", metavar="NAME")
    for name in COMMANDS.names():
        try:
            description = COMMANDS.load(name).description
        except PluginError as exc:
            description = f"(cannot be loaded: {exc})"
        sub.add_parser(name, help=description, add_help=False)
    return parser, builtins


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
    try:
        if command in ("list", "schema"):
            # argparse prints --help and usage errors and exits; SystemExit carries its code.
            args = build_parser()[1][command].parse_args(rest)
            return _list() if command == "list" else _schema(args.name)
        if command == "docs-options":
            return options_doc.main(rest)
    except BrokenPipeError:  # `sidecars schema tailer | head`: the reader left, not an error to trace
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush must not raise again
        return EXIT_FATAL
    if command == "run":
        if rest and rest[0] in ("-h", "--help"):
            build_parser()[1]["run"].print_help()
            return EXIT_OK
        if not rest or rest[0].startswith("-"):
            build_parser()[1]["run"].print_usage(sys.stderr)
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
        print(f"sidecars: {exc} (or list, run, schema, docs-options)", file=sys.stderr)
        return EXIT_CONFIG
    return program.main(rest)


def schemas() -> dict[str, Mapping[str, Any]]:
    """Every schema `sidecars schema` can print, by name: each installed sidecar's config file and its other files."""
    found: dict[str, Mapping[str, Any]] = {}
    for name in SIDECARS.names():
        try:
            plugin_cls = SIDECARS.load(name)
        except PluginError:
            continue  # `sidecars list` says why
        found[name] = config_schema(name, plugin_cls.Settings)
        for file, schema in plugin_cls.file_schemas().items():
            found[f"{name}-{file}"] = schema
    return found


def _schema(name: str | None) -> int:
    known = schemas()
    if name is None:
        print("\n".join(sorted(known)))
        return EXIT_OK
    if name not in known:
        reason = f"no schema named {name!r}; known: {', '.join(sorted(known))}"
        if name in SIDECARS.names():
            try:
                SIDECARS.load(name)
            except PluginError as exc:
                reason = str(exc)  # installed but broken: say why
        print(f"sidecars schema: {reason}", file=sys.stderr)
        return EXIT_CONFIG
    print(json.dumps(known[name], indent=2))
    return EXIT_OK


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
