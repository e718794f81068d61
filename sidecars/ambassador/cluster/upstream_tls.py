"""A cluster's TLS to its endpoints: the material in force, its rotation, sessions, failures, checks.

`UpstreamTls` holds the context built from the cluster's `tls` settings and keeps it current through
the core's `MountedFiles` (a Secret's `..data` swap included): an accepted update makes a new context,
so new connections use the new material, and tells the proxies, which retire their pooled connections
(busy ones finish their response first, then close). A refused update keeps the last good context and
shows in the warn check. Sessions are kept per endpoint, so the pool's next connection to an
endpoint resumes instead of doing a full handshake; a session of a replaced context is never offered.

A cluster may speak more than one protocol over TLS (HTTP/1.1 for its HTTP/1.1 requests and checks,
HTTP/2 for its streams and gRPC checks), each offered through ALPN by a context of its own: an `Alpn`
profile. Every profile's context is built from the same read of the files, so one rotation moves
them all; sessions are kept per endpoint and profile.

Connections are opened by `connect.open_connection`; this module only holds state and counts.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from structlog.typing import FilteringBoundLogger

from sidecars.core.telemetry import LogLimiter
from sidecars.core.tls import ClientContext, TlsClientSettings, TlsError, certificate_not_after
from sidecars.core.watch import MountedFiles

__all__ = [
    "EXPIRY_WARN_SECS",
    "H2",
    "HTTP1",
    "TLS_REASONS",
    "Alpn",
    "Material",
    "UpstreamTls",
    "UpstreamTlsError",
]

# A client certificate closer than this to its end is a warn check.
EXPIRY_WARN_SECS = 7 * 24 * 3600.0
TLS_REASONS = ("tls_alpn", "tls_handshake", "tls_verify")


class Alpn(NamedTuple):
    """What a connection offers through ALPN, and whether the server must select one of it."""

    offer: tuple[str, ...]
    required: bool = False


# A server that selects nothing speaks HTTP/1.1 (the protocol ALPN was added beside); one that does not
# select h2 does not speak HTTP/2 over TLS, and falling back would send a request it never asked for.
HTTP1 = Alpn(("http/1.1",))
H2 = Alpn(("h2",), required=True)


class UpstreamTlsError(ConnectionError):
    """A TLS handshake to an endpoint failed after its TCP connection was up; nothing was sent.

    `reason` is `tls_verify` (the server's certificate, name or pin was refused), `tls_alpn` (the
    server does not speak the protocol required, e.g. h2) or `tls_handshake` (no common version or
    cipher, an alert, a close or a timeout during the handshake). An OSError without errno, so every
    path handles it as the connect failure it is."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Material:
    """One accepted version of the files: a context per ALPN profile (`context`: the first profile's),
    a generation number, the client certificate's expiry."""

    __slots__ = ("context", "contexts", "generation", "not_after")

    def __init__(self, contexts: dict[Alpn, ClientContext], generation: int, not_after: float | None) -> None:
        self.contexts = contexts
        self.context = next(iter(contexts.values()))
        self.generation = generation
        self.not_after = not_after


class UpstreamTls:
    """See the module docstring. `profiles`: what the listener speaks, the default first; unset: the
    settings' own `alpn`, none required (an opaque TCP stream)."""

    def __init__(
        self,
        cluster: str,
        settings: TlsClientSettings,
        log: FilteringBoundLogger,
        *,
        profiles: Sequence[Alpn] | None = None,
        poll_secs: float = 5.0,
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.profiles = list(profiles) if profiles else [Alpn(tuple(settings.alpn))]
        self.log = log
        self.material: Material | None = None
        self.handshakes = {"full": 0, "resumed": 0}
        self.failures: dict[tuple[str, str], int] = {}  # (endpoint, reason) -> count
        self.rotations = 0
        self._generation = 0
        # (endpoint, profile) -> the latest connection, for its session
        self._last: dict[tuple[str, Alpn], ssl.SSLObject] = {}
        self._limiter = LogLimiter(log, None)  # once per endpoint and reason, again after a success
        self._on_rotate: list[Callable[[], None]] = []
        self._files: Sequence[Path] = settings.files()
        self._cert_index = self._files.index(settings.cert_file) if settings.cert_file is not None else None
        self.watch: MountedFiles[Material] | None = None
        if self._files:
            self.watch = MountedFiles(
                self._files,
                self._parse,
                poll_secs=poll_secs,
                log=log,
                on_change=self._changed,
                on_error=self._refused,
            )

    # -- material ----------------------------------------------------------------------------------

    def load(self) -> None:
        """Build the first context (reads the files); TlsError or MountedFileError says what is wrong."""
        self.material = self.watch.load() if self.watch is not None else self._parse([])
        if self.settings.insecure_skip_verify:
            self.log.warning(
                "upstream tls verification off: insecure_skip_verify accepts any server certificate",
                tls_cluster=self.cluster,
            )

    async def run(self) -> None:
        """Watch the files until cancelled (nothing to watch: the system store is read once)."""
        if self.watch is not None:
            await self.watch.run()

    def on_rotate(self, callback: Callable[[], None]) -> None:
        """`callback()` after each accepted update: pooled connections of the old material retire."""
        self._on_rotate.append(callback)

    def _parse(self, contents: list[bytes]) -> Material:
        contexts = {
            p: self.settings.context_from(contents, alpn=p.offer, require_alpn=p.required) for p in self.profiles
        }
        not_after = None
        if self._cert_index is not None:
            try:
                not_after = certificate_not_after(contents[self._cert_index])
            except TlsError as exc:
                raise TlsError(f"cert_file {self.settings.cert_file}: {exc}") from None
        self._generation += 1
        return Material(contexts, self._generation, not_after)

    def _changed(self, material: Material) -> None:
        self.material = material
        self.rotations += 1
        self._last.clear()  # sessions of the old context are never offered again
        self.log.info("upstream tls material reloaded", tls_cluster=self.cluster, generation=material.generation)
        for callback in self._on_rotate:
            callback()

    def _refused(self, exc: Exception) -> None:
        self.log.warning(
            "upstream tls update refused, the previous material stays in force",
            tls_cluster=self.cluster,
            error=str(exc)[:500],
        )

    # -- connections ----------------------------------------------------------------------------

    def context(self, profile: Alpn | None = None) -> ClientContext:
        """The context in force for `profile` (unset: the default one); KeyError for one not built."""
        if self.material is None:
            raise RuntimeError("UpstreamTls.load() has not succeeded yet")
        return self.material.context if profile is None else self.material.contexts[profile]

    def session_for(self, endpoint: str, context: ClientContext, profile: Alpn | None = None) -> ssl.SSLSession | None:
        """The session to offer for a new connection to `endpoint` under `context`, if any.

        Read from the endpoint's latest connection only now: a TLS 1.3 ticket arrives after the
        handshake, so the session is resumable once that connection has read something."""
        obj = self._last.get((endpoint, profile or self.profiles[0]))
        if obj is None or obj.context is not context:
            return None
        return obj.session

    def handshake_done(self, endpoint: str, obj: ssl.SSLObject, profile: Alpn | None = None) -> None:
        self.handshakes["resumed" if obj.session_reused else "full"] += 1
        if not any(key[0] == endpoint for key in self._last):
            for reason in TLS_REASONS:
                self._limiter.reset(f"{endpoint}:{reason}")
        self._last[(endpoint, profile or self.profiles[0])] = obj

    def failed(self, endpoint: str, reason: str, detail: str) -> UpstreamTlsError:
        """Count and log (once per endpoint and reason until a handshake succeeds) one failure."""
        key = (endpoint, reason)
        self.failures[key] = self.failures.get(key, 0) + 1
        self._drop_sessions(endpoint)
        self._limiter.warning(
            "upstream tls handshake failed",
            key=f"{endpoint}:{reason}",
            tls_cluster=self.cluster,
            endpoint=endpoint,
            reason=reason,
            error=detail[:500],
        )
        return UpstreamTlsError(reason, detail)

    def forget(self, endpoint: str) -> None:
        """`endpoint` left the cluster: drop its sessions and its failure series."""
        self._drop_sessions(endpoint)
        for key in [k for k in self.failures if k[0] == endpoint]:
            del self.failures[key]

    def _drop_sessions(self, endpoint: str) -> None:
        for key in [k for k in self._last if k[0] == endpoint]:
            del self._last[key]

    # -- health -----------------------------------------------------------------------------------

    def expiry_secs(self, now: float | None = None) -> float | None:
        """Seconds until the client certificate in force expires (negative: expired); None without one."""
        if self.material is None or self.material.not_after is None:
            return None
        return self.material.not_after - (time.time() if now is None else now)

    def status(self) -> str | None:
        """The warn check: verification off, a refused update, a client certificate near its end."""
        problems = []
        if self.settings.insecure_skip_verify:
            problems.append("insecure_skip_verify: the server's certificate and name are not verified")
        if self.watch is not None and (refused := self.watch.status()) is not None:
            problems.append(refused)
        left = self.expiry_secs()
        if left is not None and left < EXPIRY_WARN_SECS:
            when = "expired" if left <= 0 else f"expires in {left / 86400:.1f} days"
            problems.append(f"client certificate {self.settings.cert_file} {when}")
        return f"{self.cluster}: {'; '.join(problems)}" if problems else None
