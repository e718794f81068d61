"""The options tables of the docs, generated from the settings models: `sidecars docs-options`.

A table sits between two marker comments in a Markdown file, and is rewritten from the model the
first one names:

    <!-- options: ambassador -->                                     a sidecar: its flags, env vars
    <!-- options: sidecars.ambassador.settings:Http2Config http2 -->  a nested model, its keys as http2.x
    <!-- end options -->

A table lists the fields its model declares itself, not those it inherits: the options every
sidecar shares are described once (README), a sink's shared HTTP options once. A field's text is
its `description`, so `--help`, the schema and the docs say the same (a default the model computes
is spelt by `json_schema_extra={"doc_default": ...}`); a test fails when a doc's
tables differ from what the models give (`sidecars docs-options --check docs/*.md`).
"""

from __future__ import annotations

import argparse
import enum
import importlib
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from sidecars.core.config import options
from sidecars.core.plugins import SIDECARS
from sidecars.core.settings import SidecarSettings

# `[^\n]` and a lazy body: a marker's key is one line, a table ends at the first end marker.
_TAG_LIKE = re.compile(r"<(?=[A-Za-z/!?])")
MARKER = re.compile(r"<!-- options: (?P<key>[^\n]{1,200}?) -->\n(?P<body>.*?)<!-- end options -->", re.S)


def own_fields(model: type[BaseModel]) -> list[str]:
    """The fields `model`'s own class body declares (an override of an inherited one included)."""
    declared = model.__dict__.get("__annotations__", {})
    return [name for name in model.model_fields if name in declared]


def model_for(key: str) -> type[BaseModel]:
    """The model a marker names: a sidecar (`ambassador`) or `module:Class`."""
    if ":" in key:
        module, _, name = key.partition(":")
        found = getattr(importlib.import_module(module), name, None)
        if not (isinstance(found, type) and issubclass(found, BaseModel)):
            raise LookupError(f"{key}: not a settings model")
        return found
    settings: type[BaseModel] = SIDECARS.load(key).Settings
    return settings


def table(key: str) -> str:
    """The Markdown table of the model `key` names (then, optionally, the path its keys sit at)."""
    name_key, _, prefix = key.partition(" ")
    model = model_for(name_key)
    at = f"{prefix}." if prefix else ""
    names = set(own_fields(model))
    if issubclass(model, SidecarSettings):
        lines = ["| option | flag | env var | default | meaning |", "|---|---|---|---|---|"]
        for opt in options(model):
            if opt.name not in names:
                continue
            flags, envs = f"`{opt.flag}`", f"`{opt.env}`"
            if opt.secret:
                flags, envs = f"{flags}, `{opt.flag}-file`", f"{envs}, `{opt.env}_FILE`"
            lines.append(f"| `{opt.name}` | {flags} | {envs} | {_default(opt.info, opt.name)} | {_meaning(opt.info)} |")
    else:
        lines = ["| option | default | meaning |", "|---|---|---|"]
        for name, info in model.model_fields.items():
            if name in names:
                lines.append(f"| `{at}{name}` | {_default(info, name)} | {_meaning(info)} |")
    return "\n".join(lines) + "\n"


def _default(info: FieldInfo, name: str) -> str:
    if info.is_required():
        return "required"
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if "doc_default" in extra:  # a default the model computes, or a value better spelt otherwise (0o640)
        return str(extra["doc_default"])
    if extra.get("secret"):
        return "unset" if info.default is None else "(secret)"
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return "see below"
    if hasattr(value, "get_secret_value"):
        return "(secret)"  # a compiled-in secret is not published
    if isinstance(value, dict | list | tuple | frozenset | set) and not value:
        return "none"
    if value == "":
        return '`""`'
    text = f"`{_text(value)}`"
    if name.endswith("_bytes") and isinstance(value, int) and value >= 1024:
        text += _size(value)
    return text


def _size(value: int) -> str:
    """`8388608` as ` (8 MiB)`: the largest binary unit the value is a whole multiple of; else nothing."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value % size == 0:
            return f" ({value // size} {unit})"
    return ""  # 10000000 is clearer as it is than as 9765.6 KiB


def _text(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return _text(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"  # as YAML spells them
    if isinstance(value, list | tuple | frozenset | set):
        items = sorted(value, key=str) if isinstance(value, frozenset | set) else value
        return "[" + ", ".join(_text(v) for v in items) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def _meaning(info: FieldInfo) -> str:
    text = " ".join((info.description or "").split()).replace("|", "\\|")
    return _TAG_LIKE.sub("&lt;", text)  # `<image_prefix>` would be read as an HTML tag and vanish


def rewrite(text: str, render: Callable[[str], str] = table) -> str:
    """`text` with the body of every marked table rendered anew."""
    return MARKER.sub(lambda m: f"<!-- options: {m['key']} -->\n{render(m['key'])}<!-- end options -->", text)


def keys(text: str) -> Iterator[str]:
    for match in MARKER.finditer(text):
        yield match["key"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sidecars docs-options",
        description="Print the options table of a settings model, or rewrite the tables between "
        "`<!-- options: KEY -->` and `<!-- end options -->` in Markdown files. KEY is a sidecar "
        "(`tailer`) or a nested model as module:Class, then optionally the path of its keys "
        "(`sidecars.ambassador.settings:Http2Config http2`).",
    )
    parser.add_argument("key", nargs="?", metavar="KEY", help="print this table")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", nargs="+", type=Path, metavar="FILE", help="rewrite the tables of these files")
    mode.add_argument("--check", nargs="+", type=Path, metavar="FILE", help="exit 1 if a table differs")
    args = parser.parse_args(argv)
    files: list[Path] = args.write or args.check or []
    if (args.key is None) == (not files):
        parser.error("give KEY, --write FILE... or --check FILE...")
    where = args.key
    try:
        if args.key is not None:
            sys.stdout.write(table(args.key))
            return 0
        stale = []
        for path in files:
            where = str(path)
            text = path.read_text(encoding="utf-8")
            fresh = rewrite(text)
            if fresh != text:
                stale.append(where)
                if args.write:
                    path.write_text(fresh, encoding="utf-8")
    except BrokenPipeError:
        raise  # the reader left (`| head`): the command line's concern, not a file's error
    except (LookupError, ImportError, OSError) as exc:
        print(f"sidecars docs-options: {where}: {exc}", file=sys.stderr)
        return 2
    if args.check and stale:
        names = ", ".join(stale)
        print(f"sidecars docs-options: tables differ from the models in {names}: run --write", file=sys.stderr)
        return 1
    return 0
