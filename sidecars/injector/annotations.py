"""The Pod template's annotations that ask for sidecars, read into one validated request.

    sidecars.io/inject: tailer,adapter          which sidecars (any order; `none` or empty: none)
    sidecars.io/<name>-config: my-configmap      ConfigMap holding <name>.yaml, mounted at /etc/sidecars
    sidecars.io/<name>-image: registry/x@sha256:...   image by tag or digest (default: prefix/name:version)
    sidecars.io/<name>-cpu: 100m                 CPU request (no limit is set)
    sidecars.io/<name>-memory: 192Mi             memory request and limit
    sidecars.io/tailer-logs-volume: app-logs     the Pod's volume the app writes its logs to
    sidecars.io/tailer-logs-path: /var/log/app   where the logs are (the emptyDir's mount path)
    sidecars.io/shutdown-timeout-secs: 20        each sidecar's shutdown budget (default: derived)

Any other key under `sidecars.io/` is an error (a misspelt key would otherwise be ignored), and so
is every malformed value; each problem names its annotation. Values are bounded before any regex.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sidecars.injector.catalog import CATALOG

PREFIX = "sidecars.io/"
INJECT = PREFIX + "inject"
INJECTED = PREFIX + "injected"  # written by the injector: what it added (see inject.Marker)
SHUTDOWN = PREFIX + "shutdown-timeout-secs"
LOGS_VOLUME = PREFIX + "tailer-logs-volume"
LOGS_PATH = PREFIX + "tailer-logs-path"
PER_SIDECAR = ("config", "image", "cpu", "memory")
MAX_VALUE = 512  # characters: every value is checked against this before a regex sees it

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_QUANTITY = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?(m|k|M|G|T|Ki|Mi|Gi|Ti)?")
# repository[:tag][@sha256:digest], lower-case repository path as the distribution spec has it.
IMAGE = re.compile(
    r"[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?"
)
_PATH = re.compile(r"(/[A-Za-z0-9._-]+)+")


@dataclass(frozen=True)
class SidecarRequest:
    name: str
    config: str | None = None
    image: str | None = None
    cpu: str | None = None
    memory: str | None = None


@dataclass(frozen=True)
class Request:
    sidecars: tuple[SidecarRequest, ...] = ()
    shutdown_timeout_secs: int | None = None
    logs_volume: str | None = None
    logs_path: str | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)  # (field, message)

    def get(self, name: str) -> SidecarRequest | None:
        return next((s for s in self.sidecars if s.name == name), None)


def field_of(key: str) -> str:
    return f'metadata.annotations["{key}"]'


def read(annotations: Mapping[str, Any] | None) -> Request:
    """The request the annotations make; problems are collected in `Request.problems`, never raised."""
    annotations = annotations or {}
    problems: list[tuple[str, str]] = []

    def text(key: str) -> str | None:
        value = annotations.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            problems.append((field_of(key), f"must be a string, not {type(value).__name__}"))
            return None
        if len(value) > MAX_VALUE:
            problems.append((field_of(key), f"longer than {MAX_VALUE} characters"))
            return None
        return value.strip()

    names: list[str] = []
    inject = text(INJECT)
    if inject and inject.lower() not in ("none", "false"):
        for item in inject.split(","):
            item = item.strip()
            if not item:
                continue
            if item not in CATALOG:
                known = ", ".join(CATALOG)
                problems.append((field_of(INJECT), f"unknown sidecar {item[:64]!r} (known: {known})"))
            elif item not in names:
                names.append(item)

    known_keys = {INJECT, INJECTED, SHUTDOWN, LOGS_VOLUME, LOGS_PATH}
    known_keys |= {f"{PREFIX}{n}-{opt}" for n in CATALOG for opt in PER_SIDECAR}
    for key in annotations:
        if isinstance(key, str) and key.startswith(PREFIX) and key not in known_keys:
            problems.append((field_of(key[:128]), "unknown annotation (see `sidecars inject --help`)"))

    def checked(key: str, pattern: re.Pattern[str], what: str) -> str | None:
        value = text(key)
        if value is None:
            return None
        if not pattern.fullmatch(value):
            problems.append((field_of(key), f"{value[:64]!r} is not {what}"))
            return None
        return value

    sidecars = []
    for name in (n for n in CATALOG if n in names):  # the catalog's order, whatever the annotation's
        p = f"{PREFIX}{name}-"
        sidecars.append(
            SidecarRequest(
                name,
                config=checked(p + "config", _DNS_SUBDOMAIN, "a ConfigMap name"),
                image=checked(p + "image", IMAGE, "an image reference (repository:tag or repository@sha256:...)"),
                cpu=checked(p + "cpu", _QUANTITY, "a CPU quantity such as 100m"),
                memory=checked(p + "memory", _QUANTITY, "a memory quantity such as 128Mi"),
            )
        )
    for name in CATALOG:
        if name not in names:
            for opt in PER_SIDECAR:
                key = f"{PREFIX}{name}-{opt}"
                if key in annotations:
                    problems.append((field_of(key), f"the {name} is not in {INJECT}"))

    shutdown: int | None = None
    raw = text(SHUTDOWN)
    if raw is not None:
        if raw.isdigit() and 1 <= int(raw) <= 3600:
            shutdown = int(raw)
        else:
            problems.append((field_of(SHUTDOWN), f"{raw[:64]!r} is not a whole number of seconds from 1 to 3600"))
    logs_volume = checked(LOGS_VOLUME, _DNS_LABEL, "a volume name")
    logs_path = checked(LOGS_PATH, _PATH, "an absolute path")
    if logs_path is not None and ".." in logs_path.split("/"):
        problems.append((field_of(LOGS_PATH), "must not contain '..'"))
        logs_path = None
    if "tailer" not in names:
        for key in (LOGS_VOLUME, LOGS_PATH):
            if key in annotations:
                problems.append((field_of(key), f"the tailer is not in {INJECT}"))
    return Request(tuple(sidecars), shutdown, logs_volume, logs_path, problems)
