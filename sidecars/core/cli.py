"""One sidecar's command line: options from flags, env and file, then the run (`run_main`).

`python -m sidecars.<name>` and `sidecars run NAME` (the umbrella command, `sidecars.cli`) both end here.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sidecars import __version__
from sidecars.core import config, logs, redact
from sidecars.core.plugin import Sidecar
from sidecars.core.runtime import EXIT_CONFIG, EXIT_FATAL, EXIT_OK, Runtime, run

PluginClass = type[Sidecar[Any]]


def build_parser(plugin_cls: PluginClass, prog: str) -> argparse.ArgumentParser:
    model = plugin_cls.Settings
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"{plugin_cls.name}: {plugin_cls.description}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # Each setting's help names its env var: the epilog only says how the sources combine.
        epilog="A flag wins over its env var, which wins over the key in the --config file.\n"
        "Lists take a,b or a repeated flag; mappings k=v,k2=v2; a value starting with [ or { is YAML/JSON.\n"
        "A secret option X also reads from a file: --X-file, env <VAR>_FILE or key x_file.\n"
        f"`sidecars schema {plugin_cls.name}` prints the JSON Schema of the --config file.\n"
        "Exit codes: 0 clean stop, 1 fatal error, 2 bad configuration.",
        add_help=False,  # -h goes in `general`: argparse's own `options` section would be a second one
    )
    general = parser.add_argument_group("general")
    general.add_argument("-h", "--help", action="help", help="show this help and exit")
    general.add_argument("--config", type=Path, metavar="PATH", help=f"YAML file of options [env {config.CONFIG_ENV}]")
    general.add_argument("--print-config", action="store_true", help="print the effective config (secrets redacted)")
    general.add_argument(
        "--check-config",
        action="store_true",
        help="validate the config and exit: 0 valid, 2 problems, also what start-up would only warn about",
    )
    general.add_argument("-V", "--version", action="version", version=f"sidecars {__version__}")
    config.add_arguments(parser, model)
    return parser


def unknown_arguments(parser: argparse.ArgumentParser, unknown: Sequence[str]) -> list[config.Problem]:
    """What `parse_known_args` left over, each a problem; a misspelt flag with the one it resembles."""
    flags = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
    problems = []
    after_unknown_flag = False
    for arg in unknown:
        if not arg.startswith("-"):
            if not after_unknown_flag:  # else the misspelt flag's value: the flag's problem says it
                problems.append(config.Problem(arg, "unexpected argument"))
            after_unknown_flag = False
            continue
        after_unknown_flag = "=" not in arg
        close = config.closest(arg.partition("=")[0], flags)
        problems.append(config.Problem(arg, "unknown option" + (f" (did you mean {close}?)" if close else "")))
    return problems


def run_main(plugin_cls: PluginClass, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse options, then run the sidecar until it stops; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = plugin_cls.commands()
    if argv and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    model = plugin_cls.Settings
    parser = build_parser(plugin_cls, prog or f"python -m sidecars.{plugin_cls.name}")
    if commands:
        parser.usage = f"{parser.prog} [options] | {parser.prog} {{{','.join(commands)}}} ..."
    args, unknown = parser.parse_known_args(argv)
    problems = unknown_arguments(parser, unknown)
    config_path = args.config or (Path(os.environ[config.CONFIG_ENV]) if os.environ.get(config.CONFIG_ENV) else None)
    try:
        loaded = config.load(model, flags=config.flags_from(args, model), config_file=config_path)
    except config.ConfigError as exc:
        problems += exc.problems
        if args.check_config:
            problems += _typos(exc.warnings)
        loaded = None
    if problems and loaded is not None and args.check_config:
        problems += _typos(loaded.warnings)
    if problems or loaded is None:
        print(config.ConfigError(problems).render(), file=sys.stderr)
        return EXIT_CONFIG
    if args.print_config:
        sys.stdout.write(config.render(loaded))
        return EXIT_OK
    if args.check_config:
        return _check_config(plugin_cls, loaded)
    settings = loaded.settings
    redact.register_secrets(config.secret_values(settings))
    logs.configure(settings.log_level, settings.log_format)
    logs.bind_process_context(plugin_cls.name)
    runtime = Runtime(plugin_cls, settings, config_sources=loaded.sources)
    for warning in loaded.warnings:
        if warning.kind is config.WarningKind.SERVICE_LINK:
            runtime.log.warning(
                "env var holds a Kubernetes Service link: ignored", env=warning.env, why=warning.message
            )
        else:
            runtime.log.warning("env var matches no option: ignored", env=warning.env, why=warning.message)
    runtime.log.info("starting", version=__version__, config_sources=sorted(loaded.sources.values()))
    try:
        return run(runtime)
    except Exception as exc:
        # A bug past the runtime's own handling: one redacted log line, not the interpreter's traceback.
        runtime.log.critical("fatal error", error=str(exc), exc_info=True)
        return EXIT_FATAL


def _check_config(plugin_cls: PluginClass, loaded: config.Loaded) -> int:
    """Valid is not enough: what start-up would warn about is a problem here, but for Service links."""
    problems = _typos(loaded.warnings)
    problems += [config.Problem(plugin_cls.name, text) for text in plugin_cls.config_warnings(loaded.settings)]
    for warning in loaded.warnings:
        if warning.kind is config.WarningKind.SERVICE_LINK:
            print(f"note: {warning}", file=sys.stderr)
    if problems:
        print(config.ConfigError(problems).render(), file=sys.stderr)
        return EXIT_CONFIG
    print(f"{plugin_cls.name}: configuration is valid")
    return EXIT_OK


def _typos(warnings: Sequence[config.ConfigWarning]) -> list[config.Problem]:
    return [config.Problem(f"env {w.env}", w.message) for w in warnings if w.kind is config.WarningKind.UNKNOWN_ENV]
