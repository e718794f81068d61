"""Reading and writing YAML streams so that what the injector did not change stays as it was.

The stream is cut into documents at their `---` lines; each is parsed on its own with ruamel.yaml's
round-trip loader, which keeps comments, key order and quoting. A document the injector did not
change is written back byte for byte; a changed one is dumped with the indentation its text used.
Containers and volumes the injector adds are plain dicts: small all-scalar mappings and lists among
them are written in flow style (`{cpu: 50m, memory: 96Mi}`), as people write them by hand.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from sidecars.injector.errors import InjectionError, Problem

MAX_INPUT_BYTES = 16 * 1024 * 1024  # far above any manifest; bounds memory on a wrong file
MAX_DOCUMENTS = 10_000
_SEPARATOR = re.compile(r"^---(?:[ \t].*)?$")
_KEY_LINE = re.compile(r"^( *)[^\s#-][^#]*:\s*(?:#.*)?$")
FLOW_MAX_ITEMS = 4
FLOW_MAX_CHARS = 60


@dataclass
class Chunk:
    separator: str  # the `---` line that starts it (with its newline), or "" for a first document without one
    text: str  # the document's text, comments included
    document: Any  # the parsed document; None for a chunk holding only comments


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096  # never re-wrap long strings
    return y


def split(text: str, source: str) -> list[Chunk]:
    """The documents of a stream; a syntax error is reported with its document and line."""
    if len(text.encode()) > MAX_INPUT_BYTES:
        raise InjectionError([Problem(source, "", f"larger than {MAX_INPUT_BYTES // 2**20} MiB")])
    pieces: list[tuple[str, list[str], int]] = [("", [], 1)]
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if _SEPARATOR.match(line.rstrip("\r\n")):
            pieces.append((line, [], number + 1))
            if len(pieces) > MAX_DOCUMENTS:
                raise InjectionError([Problem(source, "", f"more than {MAX_DOCUMENTS} documents")])
        else:
            pieces[-1][1].append(line)
    chunks: list[Chunk] = []
    problems: list[Problem] = []
    y = _yaml()
    for separator, lines, first_line in pieces:
        body = "".join(lines)
        if not separator and not body:
            continue
        try:
            document = y.load(body) if body.strip() else None
        except YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            number = first_line + mark.line if mark is not None else first_line
            what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            where = f"{source}, document {len(chunks) + 1}"
            problems.append(Problem(where, f"line {number}", f"not valid YAML: {what}"))
            document = None
        chunks.append(Chunk(separator, body, document))
    if problems:
        raise InjectionError(problems)
    return chunks


def documents(chunks: Sequence[Chunk]) -> list[Any]:
    return [c.document for c in chunks if c.document is not None]


def join(chunks: Sequence[Chunk], replaced: dict[int, Any]) -> str:
    """The stream again; `replaced` maps a document's index (among documents) to its new content."""
    out = []
    index = 0
    for chunk in chunks:
        out.append(chunk.separator)
        if chunk.document is None:
            out.append(chunk.text)
            continue
        if index in replaced:
            out.append(dump(replaced[index], chunk.text))
        else:
            out.append(chunk.text)
        index += 1
    return "".join(out)


def dump(document: object, like: str = "") -> str:
    """One document as YAML, indented the way `like` (its original text) was."""
    y = _yaml()
    mapping, offset = guess_indent(like)
    y.indent(mapping=mapping, sequence=mapping + offset, offset=offset)
    buf = io.StringIO()
    y.dump(_styled(document), buf)
    return buf.getvalue()


def guess_indent(text: str) -> tuple[int, int]:
    """(mapping indent, offset of a list's dash under its key): (2, 0) unless the text says otherwise."""
    mapping: int | None = None
    offset: int | None = None
    lines = [ln.rstrip("\r\n") for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    for line, following in itertools.pairwise(lines):
        m = _KEY_LINE.match(line)
        if not m:
            continue
        parent = len(m.group(1))
        child = len(following) - len(following.lstrip(" "))
        if child < parent:
            continue
        if following.lstrip(" ").startswith("- "):
            offset = child - parent if offset is None else offset
        elif child > parent and mapping is None:
            mapping = child - parent
        if mapping is not None and offset is not None:
            break
    return mapping or 2, offset or 0


def _styled(value: object, in_list: bool = False) -> Any:
    """Plain dicts and lists (what the injector added) as ruamel nodes; small scalar ones in flow style.

    A mapping that is a list item stays in block style (`- name: x`), as in hand-written Pod specs.
    """
    if isinstance(value, CommentedMap):
        for key, item in list(value.items()):
            value[key] = _styled(item)
        return value
    if isinstance(value, CommentedSeq):
        for i, item in enumerate(list(value)):
            value[i] = _styled(item, in_list=True)
        return value
    if isinstance(value, dict):
        node = CommentedMap((k, _styled(v)) for k, v in value.items())
        chars = sum(len(str(k)) + len(str(v)) + 4 for k, v in value.items())
        if not in_list and _small(list(value.values()), chars):
            node.fa.set_flow_style()
        return node
    if isinstance(value, list):
        seq = CommentedSeq(_styled(v, in_list=True) for v in value)
        if value and _small(value, sum(len(str(v)) + 2 for v in value)):
            seq.fa.set_flow_style()
        return seq
    return value


def _small(values: list[Any], chars: int) -> bool:
    scalars = all(isinstance(v, str | int | float | bool) for v in values)
    return scalars and len(values) <= FLOW_MAX_ITEMS and chars <= FLOW_MAX_CHARS
