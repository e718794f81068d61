"""The webhook's server certificate, from a mounted Secret, reloaded when it changes.

The kubelet updates a Secret volume by swapping a symlink, so the certificate and key change
together; cert-manager rotates them well before they expire. Each change is loaded into a new
SSLContext (a mismatched or half-written pair is rejected and the previous one kept, then tried
again on the next change); the listening context picks the current one per connection in its
SNI callback, so no handshake ever sees a half-updated context and nothing restarts.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable
from pathlib import Path

Signature = tuple[tuple[int, int, int, int], ...]


def _signature(*paths: Path) -> Signature:
    """Identity of the files' current contents: device, inode, size and mtime, symlinks followed."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


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
        on_reload: Callable[[bool, str | None], None] = lambda ok, error: None,
    ) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self._on_reload = on_reload
        self._current = load_context(cert_file, key_file)  # a bad pair at start-up stops the sidecar
        self._signature = _signature(cert_file, key_file)
        self.reloads = 0
        self.last_error: str | None = None
        self.server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_context.minimum_version = ssl.TLSVersion.TLSv1_2
        # Called for every ClientHello, with or without SNI: hand the connection the current context.
        self.server_context.sni_callback = self._pick

    def _pick(self, conn: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext) -> None:
        conn.context = self._current

    def check(self) -> bool:
        """Reload if the files changed since the last attempt; True when a new certificate is in use."""
        try:
            signature = _signature(self.cert_file, self.key_file)
        except OSError as exc:
            return self._failed(signature=None, error=f"cannot stat the certificate files: {exc.strerror}")
        if signature == self._signature:
            return False
        try:
            ctx = load_context(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            return self._failed(signature, f"{type(exc).__name__}: {exc}")
        self._current, self._signature = ctx, signature
        self.reloads += 1
        self.last_error = None
        self._on_reload(True, None)
        return True

    def _failed(self, signature: Signature | None, error: str) -> bool:
        if signature is not None:
            self._signature = signature  # tried once; the next change is tried again
        if error != self.last_error:  # reported once per distinct failure, not every poll
            self.last_error = error
            self._on_reload(False, error)
        return False

    async def watch(self, interval_secs: float) -> None:
        while True:
            await asyncio.sleep(interval_secs)
            self.check()
