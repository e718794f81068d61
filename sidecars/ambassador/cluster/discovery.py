"""Where a cluster's endpoints come from: a static list, a DNS name, a watched file, an installed plugin.

Each source runs as one task and reports through two callbacks: `apply(source, addresses)` with a
complete, validated set, or `error(source, reason)` when an update is bad. A bad update never
reaches `apply`, so the cluster keeps the last good set (the safe choice when a ConfigMap is half
written or DNS hiccups).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

import yaml
from structlog.typing import FilteringBoundLogger

from sidecars.ambassador.cluster.config import parse_address
from sidecars.core.registry import Registry
from sidecars.core.watch import MountedFileError, mounted_file

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


# A ConfigMap holds at most 1 MiB: an endpoints file larger than that is refused unread.
MAX_ENDPOINTS_FILE_BYTES = 1024 * 1024

# Installed packages add discovery sources here (`name = "package.module:Class"`, a `Source` subclass).
ENTRY_POINT_GROUP = "sidecars.ambassador.discovery"
# The built-in sources have fields of their own (endpoints, dns, endpoints_file), not a plugin name.
BUILTIN_SOURCES = ("static", "dns", "file")
PLUGINS: Registry[Source] = Registry(ENTRY_POINT_GROUP, Source, kind="discovery plugin")


def source_class(name: str) -> type[Source]:
    """The class of an installed discovery plugin; a ValueError (PluginError) naming the installed ones
    if there is none, and what went wrong if it cannot be loaded."""
    if name in BUILTIN_SOURCES:
        raise ValueError(f"{name!r} is a built-in source: use its own field (endpoints, dns, endpoints_file)")
    return PLUGINS.load(name)


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
    """A file of endpoints, reloaded when it changes, through the core's mounted-file watcher: inotify
    on its directory (atomic renames and the ConfigMap `..data` swap replace the file), a poll of its
    identity as the safety net, and a bad, unreadable or oversized update refused while the last good
    set stays."""

    name = "file"

    def __init__(self, path: str, poll_secs: float, log: FilteringBoundLogger) -> None:
        self.path = Path(path)
        self.poll_secs = poll_secs
        self.log = log

    async def run(self, apply: Apply, error: ReportError) -> None:
        def refused(exc: Exception) -> None:
            # A read failure names the file already; a parse failure names the entry.
            error(self.name, str(exc) if isinstance(exc, MountedFileError) else f"{self.path}: {exc}")

        files = mounted_file(
            self.path,
            lambda content: parse_endpoints_text(content.decode("utf-8")),
            poll_secs=self.poll_secs,
            log=self.log,
            on_change=lambda addresses: apply(self.name, addresses),
            on_error=refused,
            on_watch_error=lambda reason: error(self.name, f"{reason}; polling every {self.poll_secs:g}s instead"),
            max_bytes=MAX_ENDPOINTS_FILE_BYTES,
        )
        await files.run()
