"""Where a cluster's endpoints come from: a static list, a DNS name, a watched file.

Each source runs as one task and reports through two callbacks: `apply(source, addresses)` with a
complete, validated set, or `error(source, reason)` when an update is bad. A bad update never
reaches `apply`, so the cluster keeps the last good set (the safe choice when a ConfigMap is half
written or DNS hiccups).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Literal

import yaml

from sidecars.ambassador.cluster.config import parse_address

Address = tuple[str, int]
Apply = Callable[[str, frozenset[Address]], None]
ReportError = Callable[[str, str], None]
# An injectable resolver: (name, port) -> the IP addresses the name has now.
Resolver = Callable[[str, int], Awaitable[list[str]]]


class Source:
    """A discovery source. Plugins subclass it: `__init__(**discovery_options)` does no I/O; `run`
    reports every complete set through `apply` (repeating an unchanged set is cheap) and every bad
    update through `error`, and runs until cancelled (or returns, if its set never changes). A crash
    restarts it after a backoff; the cluster keeps the last good set meanwhile."""

    name: str

    async def run(self, apply: Apply, error: ReportError) -> None:
        raise NotImplementedError


# Installed packages add discovery sources here (`name = "package.module:Class"`, a `Source` subclass).
ENTRY_POINT_GROUP = "sidecars.ambassador.discovery"
BUILTIN_SOURCES = ("static", "dns", "file")


def source_class(name: str) -> type[Source]:
    """The class of an installed discovery plugin; ValueError naming the installed ones if there is none."""
    if name in BUILTIN_SOURCES:
        raise ValueError(f"{name!r} is a built-in source: use its own field (endpoints, dns, endpoints_file)")
    installed = list(entry_points(group=ENTRY_POINT_GROUP))
    for ep in installed:
        if ep.name == name:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Source)):
                raise ValueError(f"discovery plugin {name!r} ({ep.value}) is not a Source subclass")
            return cls
    known = ", ".join(sorted(ep.name for ep in installed)) or "none"
    raise ValueError(f"unknown discovery plugin {name!r}; installed: {known}")


class StaticSource(Source):
    name = "static"

    def __init__(self, entries: list[str]) -> None:
        self.addresses = frozenset(parse_address(e) for e in entries)

    async def run(self, apply: Apply, error: ReportError) -> None:
        apply(self.name, self.addresses)


def system_resolver(family: Literal["any", "ipv4", "ipv6"] = "any") -> Resolver:
    fam = {"any": socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}[family]

    async def resolve(name: str, port: int) -> list[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(name, port, family=fam, type=socket.SOCK_STREAM)
        return [str(info[4][0]) for info in infos]

    return resolve


class DnsSource(Source):
    """Resolves `name:port` every `refresh_secs`; a failure or an empty answer keeps the last set.

    Until the first answer, retries every second at most, so start-up is not held by a long refresh.
    """

    name = "dns"

    def __init__(self, target: str, refresh_secs: float, resolver: Resolver) -> None:
        self.host, self.port = parse_address(target)
        self.refresh_secs = refresh_secs
        self.resolver = resolver

    async def run(self, apply: Apply, error: ReportError) -> None:
        resolved_once = False
        while True:
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
                async with asyncio.timeout(max(self.refresh_secs, 5.0)):
                    ips = await self.resolver(self.host, self.port)
                if not ips:
                    raise LookupError("no addresses")
            except (OSError, LookupError, TimeoutError, ValueError) as exc:
                error(self.name, f"resolving {self.host}: {exc or type(exc).__name__}")
            else:
                apply(self.name, frozenset((ip, self.port) for ip in ips))
                resolved_once = True
            await asyncio.sleep(self.refresh_secs if resolved_once else min(self.refresh_secs, 1.0))


def parse_endpoints_text(text: str) -> frozenset[Address]:
    """A YAML/JSON list of "host:port", or one per line with # comments; ValueError naming the bad entry."""
    stripped = text.strip()
    entries: list[str]
    if stripped.startswith("{"):
        raise ValueError("expected a list of host:port, not a mapping")
    if stripped.startswith("["):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError:
            try:
                data = yaml.safe_load(stripped)  # a YAML flow list: [a:1, b:2]
            except yaml.YAMLError as exc:
                raise ValueError(f"neither JSON nor YAML: {exc}") from None
        if not isinstance(data, list):
            raise ValueError("expected a list of host:port")
        entries = [str(x) for x in data]
        where = "item"
    elif stripped.startswith("- ") or stripped.startswith("-\n"):
        try:
            data = yaml.safe_load(stripped)
        except yaml.YAMLError as exc:
            raise ValueError(f"invalid YAML: {exc}") from None
        if not isinstance(data, list) or not all(isinstance(x, str | int) for x in data):
            raise ValueError("expected a YAML list of host:port strings")
        entries = [str(x) for x in data]
        where = "item"
    else:
        entries = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        where = "line"
    addresses = set()
    for i, entry in enumerate(entries, 1):
        if not entry:
            continue
        try:
            addresses.add(parse_address(entry))
        except ValueError as exc:
            raise ValueError(f"{where} {i}: {exc}") from None
    if not addresses:
        raise ValueError("no endpoints listed (an empty update is refused; the last good set stays)")
    return frozenset(addresses)


class FileSource(Source):
    """A file of endpoints, reloaded when it changes.

    Changes are noticed by watching the file's directory (atomic renames and ConfigMap symlink swaps
    replace the file, so watching the file itself would lose it) and by a periodic re-read as the
    safety net when notifications are unavailable (inotify limits, network filesystems).
    """

    name = "file"

    def __init__(self, path: str, poll_secs: float) -> None:
        self.path = Path(path)
        self.poll_secs = poll_secs
        self._last_text: str | None = None
        self._watch_failed = False

    def reload(self, apply: Apply, error: ReportError) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            text = f"\0unreadable: {exc}"
            if text != self._last_text:
                self._last_text = text
                error(self.name, f"{self.path}: {exc.strerror if isinstance(exc, OSError) else exc}")
            return
        if text == self._last_text:
            return
        self._last_text = text
        try:
            addresses = parse_endpoints_text(text)
        except ValueError as exc:
            error(self.name, f"{self.path}: {exc}")
            return
        apply(self.name, addresses)

    async def run(self, apply: Apply, error: ReportError) -> None:
        changed = asyncio.Event()
        watcher = asyncio.create_task(self._watch(changed, error))
        try:
            while True:
                self.reload(apply, error)
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_secs):
                        await changed.wait()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _watch(self, changed: asyncio.Event, error: ReportError) -> None:
        import watchfiles

        directory = self.path.parent
        while True:
            try:
                # Any change in the directory triggers a re-read (the content decides): atomic renames
                # and ConfigMap `..data` symlink swaps never touch the file's own name.
                async for _changes in watchfiles.awatch(directory, debounce=50, step=20, recursive=False):
                    changed.set()
            except (OSError, RuntimeError) as exc:
                # The directory may not exist yet, or inotify is exhausted: the poll still runs.
                if not self._watch_failed:
                    self._watch_failed = True
                    error(self.name, f"watching {directory}: {exc}; polling every {self.poll_secs}s instead")
            await asyncio.sleep(self.poll_secs)
