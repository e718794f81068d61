"""The `sidecars` command's help and version, as a person types them: real processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from sidecars import __version__

SIDECARS = ("tailer", "ambassador", "adapter", "injector", "portwatch")
HEADING = re.compile(r"^(?!usage:)(\S[^:]*):\s*$", re.M)


def sidecars(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecars", *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_the_version(flag: str) -> None:
    for args in ((flag,), ("run", "tailer", flag)):
        result = sidecars(*args)
        assert (result.returncode, result.stdout) == (0, f"sidecars {__version__}\n"), args


@pytest.mark.parametrize("command", ["list", "run", "schema"])
def test_a_built_in_command_prints_its_help(command: str) -> None:
    result = sidecars(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: sidecars {command}")
    assert "[portwatch:PortWatch]" not in result.stdout and '"$schema"' not in result.stdout  # not the output


def _sections(text: str) -> list[str]:
    """Each heading of a help page, without its parenthesised note: `options (flag, ...)` is `options`."""
    return [title.split(" (")[0].strip().lower() for title in HEADING.findall(text)]


def test_the_headings_are_found() -> None:
    """A guard: the heading pattern sees argparse's sections, else the next test proves nothing."""
    assert _sections("usage: x\n\npositional arguments:\n  a\n\noptions:\n  -h\n\noptions (flag):\n") == [
        "positional arguments",
        "options",
        "options",
    ]


HELP_PAGES = [
    (),
    *((c,) for c in ("list", "run", "schema", "docs-options", "demo", "inject")),
    *(("run", name) for name in SIDECARS),
    ("run", "adapter", "check"),
    ("run", "adapter", "test"),
]


@pytest.mark.parametrize("args", HELP_PAGES, ids=lambda a: " ".join(a) or "sidecars")
def test_no_help_page_has_a_section_twice(args: tuple[str, ...]) -> None:
    result = sidecars(*args, "--help")
    assert result.returncode == 0, result.stderr
    sections = _sections(result.stdout)
    assert sections, result.stdout
    assert len(sections) == len(set(sections)), sections


@pytest.mark.parametrize("args", [("schema", "ambassador"), ("docs-options", "ambassador"), ("list",)])
def test_a_reader_that_left_is_no_traceback(args: tuple[str, ...]) -> None:
    """`sidecars schema ambassador | head -1`: the pipe closes before the output is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "sidecars", *args], stdout=write_end, stderr=subprocess.PIPE, timeout=60, check=False
        )
    finally:
        os.close(write_end)
    assert result.stderr == b"" and result.returncode == 1
