"""The JSON Schema of the rules file (`sidecars schema adapter-rules`), for editors and CI.

It mirrors what `rules.parse_rules` accepts, key by key; `tests/unit/adapter/test_rules_schema.py`
holds the two together. What only the parser can judge (an expression's PromQL, a regex's RE2
syntax, a name used twice) is left to `adapter check`.
"""

from __future__ import annotations

from typing import Any

from sidecars.adapter.rules import _GROUP, _NAME, NO_DATA, SEVERITIES

# A PromQL duration (`30s`, `1h30m`, `500ms`), or seconds as a number.
_DURATION = {
    "anyOf": [
        {"type": "string", "pattern": r"^\s*(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?\s*$", "minLength": 2},
        {"type": "number", "minimum": 0},
    ],
    "description": "A PromQL duration (30s, 5m, 1h30m) or seconds.",
}
_SEVERITY = {
    "enum": list(SEVERITIES),
    "default": "fail",
    "description": "fail: the group answers 503; warn: listed, 200.",
}
_GROUP_NAME = {
    "type": "string",
    "pattern": f"^{_GROUP.pattern}$",
    "not": {"const": "health"},
    "default": "readiness",
    "description": "liveness -> /livez, readiness -> /readyz, startup -> /startupz, any other x -> /xz.",
}

RULES_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "adapter rules file",
    "type": ["object", "null"],
    "additionalProperties": False,
    "properties": {
        "rules": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "expr"],
                "properties": {
                    "name": {
                        "type": "string",
                        "pattern": f"^{_NAME.pattern}$",
                        "not": {"const": "scrape"},
                        "description": "Served at /healthz/<name>; letters, digits, _ . - (not 'scrape').",
                    },
                    "expr": {
                        "type": "string",
                        "pattern": r"\S",
                        "description": "PromQL; a non-empty result (a scalar: non-zero) means the condition holds.",
                    },
                    "for": {**_DURATION, "default": "0s"},
                    "severity": _SEVERITY,
                    "group": _GROUP_NAME,
                    "no_data": {
                        "enum": list(NO_DATA),
                        "default": "ok",
                        "description": "When none of the metrics the rule reads is on the page.",
                    },
                    "keep_firing_for": {
                        **_DURATION,
                        "default": "0s",
                        "description": "Once failing, stays failing (recovering) this long after the condition "
                        "stops holding.",
                    },
                    "recover": {
                        "type": ["string", "null"],
                        "pattern": r"\S",
                        "description": "PromQL; once failing, the check stays failing until this holds (hysteresis).",
                    },
                    "description": {"type": ["string", "null"]},
                },
            },
        },
        "scrape": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "description": "The built-in check 'scrape': the last scrape failed.",
            "properties": {"group": _GROUP_NAME, "for": {**_DURATION, "default": "0s"}, "severity": _SEVERITY},
        },
        "export": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "description": "The prometheus output's filters.",
            "properties": {
                "keep": {"type": ["array", "null"], "items": {"type": "string"}, "description": "RE2, anchored."},
                "drop": {"type": ["array", "null"], "items": {"type": "string"}, "description": "Series selectors."},
                "rename": {
                    "type": ["array", "null"],
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["match", "replace"],
                        "properties": {"match": {"type": "string"}, "replace": {"type": "string"}},
                    },
                },
            },
        },
    },
}
