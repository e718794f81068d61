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
        epilog="environment variables (a flag wins over its env var, which wins over the config file):\n"
        + "\n".join(config.env_table(model))
        + f"\n  {config.CONFIG_ENV:<40} --config\n\n"
        "Lists take a,b or a repeated flag; mappings k=v,k2=v2; a value starting with [ or { is YAML/JSON.\n"
        "A secret option X also reads from a file: --X-file, env <VAR>_FILE or key x_file.\n"
        "Exit codes: 0 clean stop, 1 fatal error, 2 bad configuration.",
    )
    parser.add_argument("--config", type=Path, metavar="PATH", help=f"YAML file of options [env {config.CONFIG_ENV}]")
    parser.add_argument("--print-config", action="store_true", help="print the effective config (secrets redacted)")
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit")
    parser.add_argument("--version", action="version", version=f"sidecars {__version__}")
    config.add_arguments(parser, model)
    return parser


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
    problems = [config.Problem(arg, "unknown option") for arg in unknown if arg.startswith("-")]
    problems += [config.Problem(arg, "unexpected argument") for arg in unknown if not arg.startswith("-")]
    config_path = args.config or (Path(os.environ[config.CONFIG_ENV]) if os.environ.get(config.CONFIG_ENV) else None)
    try:
        loaded = config.load(model, flags=config.flags_from(args, model), config_file=config_path)
    except config.ConfigError as exc:
        problems += exc.problems
        loaded = None
    if problems or loaded is None:
        print(config.ConfigError(problems).render(), file=sys.stderr)
        return EXIT_CONFIG
    if args.print_config:
        sys.stdout.write(config.render(loaded))
        return EXIT_OK
    if args.check_config:
        print(f"{plugin_cls.name}: configuration is valid")
        return EXIT_OK
    settings = loaded.settings
    redact.register_secrets(config.secret_values(settings))
    logs.configure(settings.log_level, settings.log_format)
    logs.bind_process_context(plugin_cls.name)
    runtime = Runtime(plugin_cls, settings, config_sources=loaded.sources)
    for warning in loaded.warnings:
        runtime.log.warning(warning)
    runtime.log.info("starting", version=__version__, config_sources=sorted(loaded.sources.values()))
    try:
        return run(runtime)
    except Exception as exc:
        # A bug past the runtime's own handling: one redacted log line, not the interpreter's traceback.
        runtime.log.critical("fatal error", error=str(exc), exc_info=True)
        return EXIT_FATAL
