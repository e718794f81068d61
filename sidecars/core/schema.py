"""The JSON Schema of a sidecar's config file, from its settings model: `sidecars schema NAME`.

Editors with yaml-language-server complete and check a config file against it
(`# yaml-language-server: $schema=tailer.schema.json` on its first line), and CI can validate a
fleet's files before a rollout. It describes the YAML file only: every option as a key, a secret
option `x` also as `x_file`, unknown keys refused (a typo is an error, as at start-up), and a
free-form field chosen by another (`sink_config` by `sink`) as the chosen model's schema.

Fixed choices are offered in their own spelling (`info`, what an editor completes) and accepted in
any case and with the aliases the sidecar takes (`INFO`, `WARN`), as the sidecar does: a file the
sidecar runs with is never flagged.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from sidecars.core.config import CHOICE_ALIASES, options
from sidecars.core.settings import SidecarSettings

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def config_schema(name: str, model: type[SidecarSettings]) -> dict[str, Any]:
    """The schema of the `--config` file of the sidecar `name`."""
    schema = model.model_json_schema(mode="validation")
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    properties: dict[str, Any] = schema["properties"]
    for opt in options(model):
        if opt.secret:
            properties[opt.name + "_file"] = {
                "type": "string",
                "description": f"File holding {opt.name} (a mounted Secret); its trailing newline is removed.",
            }
    branches = []
    for field, (chooser, models) in model.nested_settings().items():
        default = model.model_fields[chooser].default
        for value, sub in sorted(models.items()):
            chosen: dict[str, Any] = {"properties": {chooser: {"const": value}}}
            if value != default:  # `properties` holds when the key is absent: the default's branch
                chosen["required"] = [chooser]
            branches.append({"if": chosen, "then": {"properties": {field: _embedded(sub, defs)}}})
    if branches:
        schema["allOf"] = branches
    if not defs:
        del schema["$defs"]
    _publishable(schema)
    return {"$schema": DIALECT, **schema, "title": f"{name} config file"}


def _any_case(node: dict[str, Any]) -> None:
    """A choice of texts (a `Literal`) also matched in any case and by its aliases, as `fold_choices` does."""
    choices = node.get("enum")
    if not choices or not all(isinstance(c, str) for c in choices):
        return
    spellings = [*choices, *(alias for alias, choice in CHOICE_ALIASES.items() if choice in choices)]
    pattern = "|".join(_any_case_pattern(s) for s in spellings)
    del node["enum"]
    node["anyOf"] = [{"enum": choices}, {"type": "string", "pattern": rf"^\s*(?:{pattern})\s*$"}]


def _any_case_pattern(text: str) -> str:
    # ECMA-262 has no (?i), and in its `u` mode (editors') escaping a non-syntax character is an error.
    return "".join(
        f"[{c.lower()}{c.upper()}]" if c.lower() != c.upper() else "\\" + c if c in "^$\\.*+?()[]{}|/" else c
        for c in text
    )


def _publishable(node: Any) -> None:
    """The schema as published, wherever a field is nested: secrets' defaults dropped, choices in any case.

    A schema travels (an editor, a CI job, a wiki): a default token compiled into a model must not
    go with it, as `--print-config` would not show it either.
    """
    if isinstance(node, dict):
        for value in list(node.values()):
            _publishable(value)
        node.pop("doc_default", None)  # the docs tables' spelling of a default, not a JSON Schema keyword
        branches = [node, *(b for b in node.get("anyOf", ()) if isinstance(b, dict))]
        if node.get("secret") is True or any(b.get("writeOnly") for b in branches):
            node.pop("default", None)
            node.pop("examples", None)
        _any_case(node)  # last: the branches it adds are not walked again
    elif isinstance(node, list):
        for value in node:
            _publishable(value)


def _embedded(model: type[BaseModel], defs: dict[str, Any]) -> dict[str, Any]:
    """`model`'s schema to place inside another, its definitions moved to the root's `$defs`."""
    sub = model.model_json_schema(mode="validation")
    for key, definition in sub.pop("$defs", {}).items():
        if defs.setdefault(key, definition) != definition:
            raise ValueError(f"two models define {key!r} differently in one schema")
    return sub
