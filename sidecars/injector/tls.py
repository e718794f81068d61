"""The webhook's server certificate, from a mounted Secret, reloaded when it changes.

The kubelet updates a Secret volume by swapping a symlink, so the certificate and key change
together; cert-manager rotates them well before they expire. The core's mounted-file watcher
notices each change (inotify on the `..data` swap, a modification-time poll as the safety net) and
loads it into a new SSLContext; a mismatched or half-written pair is refused and the previous one
kept, then tried again on the next change. The listening context picks the current one per
connection in its SNI callback, so no handshake ever sees a half-updated context and nothing restarts.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from sidecars.core.watch import MountedFiles


def load_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class CertificateReloader:
    """Holds the current certificate; `server_context` is what the listener is given once."""

    def __init__(
        self,
        cert_file: Path,
        key_file: Path,
        *,
        poll_secs: float,
        log: FilteringBoundLogger,
        on_reload: Callable[[bool, str | None], None] = lambda ok, error: None,
    ) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        # The watcher's contents only tell a change; the ssl module loads a chain from paths alone.
        self.files = MountedFiles(
            [cert_file, key_file],
            lambda _contents: load_context(cert_file, key_file),
            poll_secs=poll_secs,
            log=log,
            on_change=lambda _ctx: on_reload(True, None),
            on_error=lambda _exc: on_reload(False, self.files.error),
        )
        self.files.load()  # a bad pair at start-up stops the sidecar
        self.server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_context.minimum_version = ssl.TLSVersion.TLSv1_2
        # Called for every ClientHello, with or without SNI: hand the connection the current context.
        self.server_context.sni_callback = self._pick

    @property
    def last_error(self) -> str | None:
        """Why the latest files were refused; None while they are in use."""
        return self.files.error

    @property
    def reloads(self) -> int:
        return self.files.reloads

    def _pick(self, conn: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext) -> None:
        conn.context = self.files.value

    def check(self) -> bool:
        """Reload if the files changed since the last look; True when a new certificate is in use."""
        return self.files.check()

    async def watch(self) -> None:
        await self.files.run()
