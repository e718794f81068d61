"""`sidecars inject`: adds the sidecars to workload YAML, the way the admission webhook does.

Reads one YAML stream (a file, or `-` for stdin), writes it to stdout with every Pod template that
asks for sidecars injected, and says on stderr what it did to each. Documents it did not change are
written back byte for byte. `--dry-run` prints a unified diff instead. Exit codes: 0 done, 2 input it
cannot handle (every problem listed, each naming its document and field; nothing is written).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from sidecars import __version__
from sidecars.core import Command
from sidecars.injector import annotations as ann
from sidecars.injector import yamlio
from sidecars.injector.catalog import CATALOG
from sidecars.injector.errors import InjectionError, Problem
from sidecars.injector.inject import Options
from sidecars.injector.workloads import inject_documents

EXIT_OK = 0
EXIT_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidecars inject",
        description="Add the sidecars to every Pod template whose annotations ask for them "
        "(Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, List).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="annotations (on the Pod template's metadata):\n"
        + "\n".join(line for line in (ann.__doc__ or "").splitlines() if line.startswith("    sidecars.io/"))
        + "\n\nInjecting again updates what an earlier run added (the marker annotation sidecars.io/injected "
        "records it);\nremoving sidecars.io/inject and injecting again removes the sidecars.\n"
        "Exit codes: 0 done, 2 input that cannot be handled (nothing is written).",
    )
    parser.add_argument("-f", "--filename", default="-", metavar="FILE", help="YAML to read; - for stdin (default)")
    parser.add_argument(
        "--classic",
        action="store_true",
        help="ordinary containers instead of native sidecars (initContainers with restartPolicy: Always), "
        "for clusters before Kubernetes 1.29",
    )
    parser.add_argument("--dry-run", action="store_true", help="print a unified diff instead of the YAML")
    parser.add_argument(
        "--image-prefix", default="sidecars", metavar="REPO", help="images are REPO/<sidecar>:TAG (default: sidecars)"
    )
    parser.add_argument("--image-tag", default=__version__, metavar="TAG", help=f"default: {__version__}")
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="NAME=REF",
        help="one sidecar's image by tag or digest (repository@sha256:...); repeatable; "
        "a template's sidecars.io/<name>-image annotation wins",
    )
    return parser


def parse_images(items: Sequence[str]) -> tuple[dict[str, str], list[Problem]]:
    images, problems = {}, []
    for item in items:
        name, _, ref = item.partition("=")
        if name not in CATALOG:
            problems.append(Problem("--image", item[:80], f"unknown sidecar {name!r} (known: {', '.join(CATALOG)})"))
        elif not ann.IMAGE.fullmatch(ref[: ann.MAX_VALUE]) or len(ref) > ann.MAX_VALUE:
            problems.append(Problem("--image", item[:80], "not an image reference (repository:tag or @sha256:...)"))
        else:
            images[name] = ref
    return images, problems


def main(argv: Sequence[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    images, problems = parse_images(args.image)
    if not ann.IMAGE.fullmatch(f"{args.image_prefix}/x:{args.image_tag}"[: ann.MAX_VALUE]):
        problems.append(Problem("--image-prefix/--image-tag", "", "do not make an image reference"))
    source = "stdin" if args.filename == "-" else args.filename
    try:
        text = _read_stdin(stdin) if args.filename == "-" else _read(Path(args.filename))
        chunks = yamlio.split(text, source)
        options = Options(classic=args.classic, image_prefix=args.image_prefix, image_tag=args.image_tag, images=images)
        try:
            results = inject_documents(yamlio.documents(chunks), options)
        except InjectionError as exc:
            problems += exc.problems
        if problems:
            raise InjectionError(problems)
    except InjectionError as exc:
        print(f"sidecars inject: {source}: {exc.render()}", file=sys.stderr)
        return EXIT_INPUT
    except (OSError, UnicodeDecodeError) as exc:
        print(f"sidecars inject: {source}: cannot read: {exc}", file=sys.stderr)
        return EXIT_INPUT
    replaced = {i: r.document for i, r in enumerate(results) if r.changed}
    output = yamlio.join(chunks, replaced)
    mode = "classic" if args.classic else "native"
    for result in results:
        for report in result.reports:
            o = report.outcome
            if o.injected and o.changed:
                line = f"{', '.join(o.injected)} injected ({mode})"
            elif o.injected:
                line = f"{', '.join(o.injected)} already injected, unchanged"
            else:
                line = "sidecars removed" if o.changed else "no sidecars asked for"
            print(f"{report.where}: {line}", file=sys.stderr)
            for note in o.notes:
                print(f"{report.where}: note: {note}", file=sys.stderr)
    if args.dry_run:
        diff = difflib.unified_diff(
            text.splitlines(keepends=True), output.splitlines(keepends=True), source, f"{source} (injected)"
        )
        stdout.writelines(diff)
    else:
        stdout.write(output)
    return EXIT_OK


def _read(path: Path) -> str:
    with path.open("rb") as f:
        data = f.read(yamlio.MAX_INPUT_BYTES + 1)
    return data.decode("utf-8")


def _read_stdin(stdin: TextIO) -> str:
    # The bytes, decoded strictly: a text stream may have decoded them with surrogate escapes.
    buffer = getattr(stdin, "buffer", None)
    if buffer is not None:
        data: bytes = buffer.read(yamlio.MAX_INPUT_BYTES + 1)
        return data.decode("utf-8")
    return stdin.read(yamlio.MAX_INPUT_BYTES + 1)


inject = main  # the class below has a `main` of its own


class Inject(Command):
    """`sidecars inject`, registered in the entry-point group `sidecars.commands`."""

    name = "inject"
    description = "add the sidecars to workload YAML: sidecars inject -f FILE"

    @staticmethod
    def main(argv: list[str]) -> int:
        return inject(argv)
