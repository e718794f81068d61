"""What every HTTP sink shares: URL, headers, auth, gzip, timeouts, TLS, and the classification of answers.

A sink subclass encodes a batch into one body and calls `post`; the answer is classified once here:
2xx is an acknowledgement, 408/429/5xx and connection errors or timeouts are retryable (with the
receiver's `Retry-After`, in seconds or as an HTTP date), any other status is permanent.

The receiver is a peer like any other: only a bounded prefix of its answer is ever read, and a
compressed answer is inflated only up to that bound (no automatic decompression), so a 200 with an
endless body or a gzip bomb costs a closed connection, not the tailer's memory. A sink that parses
the answer says how much it may need (`answer_bytes`); an answer longer than that cannot be the
protocol's answer and is retried, never taken as an acknowledgement.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import gzip
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TypeVar

import aiohttp
from prometheus_client import CollectorRegistry
from pydantic import Field, SecretStr, field_validator, model_validator
from structlog.typing import FilteringBoundLogger
from yarl import URL

from sidecars.core.http import HttpClient, client_session, read_answer
from sidecars.core.redact import redact_text, redact_url, refuse_url_credentials, register_secret
from sidecars.core.tls import TlsClientSettings, tls_client
from sidecars.tailer.sinks.base import PermanentError, RetryableError, Sink, SinkSettings, TooLargeError

# Compressing a big body takes milliseconds: do it off the event loop above this size.
_GZIP_IN_THREAD_BYTES = 256 * 1024
# Enough of an error body to say why, never a whole page in a log line.
_ERROR_BODY_CHARS = 300
# What a sink that parses answers reads at most unless it says otherwise.
DEFAULT_ANSWER_BYTES = 64 * 1024
# A 2xx answer nobody parses is still read this far, so a short "ok" keeps the connection reusable.
_IGNORED_ANSWER_BYTES = 4 * 1024


class HttpSinkSettings(SinkSettings):
    """Options shared by the HTTP sinks."""

    url: str = Field(description="Where to send, e.g. http://collector:8080/ingest (http or https).")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra request headers; shown by --print-config, so nothing secret."
    )
    secret_headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Extra request headers whose values are secret (API keys); never shown.",
    )
    basic_auth_username: str | None = Field(None, description="User name for HTTP basic auth.")
    basic_auth_password: SecretStr | None = Field(None, description="Password for HTTP basic auth; never shown.")
    basic_auth_password_file: Path | None = Field(
        None, description="File holding the basic auth password (a mounted Secret), read when the sink opens."
    )
    bearer_token: SecretStr | None = Field(None, description="Bearer token sent as Authorization; never shown.")
    bearer_token_file: Path | None = Field(
        None, description="File holding the bearer token (a mounted Secret), read when the sink opens."
    )
    gzip: bool = Field(False, description="Compress request bodies with gzip (Content-Encoding: gzip).")
    gzip_level: int = Field(1, ge=1, le=9, description="gzip level: 1 is fastest, 9 smallest.")
    timeout_secs: float = Field(30.0, gt=0, description="Whole-request deadline, from connect to the last byte.")
    connect_timeout_secs: float = Field(5.0, gt=0, description="Deadline for opening a connection.")
    tls_verify: bool = Field(True, description="Verify the server's certificate and host name (https).")
    tls_ca_file: Path | None = Field(None, description="CA bundle to verify the server with instead of the system's.")
    tls_cert_file: Path | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    tls_key_file: Path | None = Field(None, description="Private key (PEM) of the client certificate.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"must be an http:// or https:// URL with a host, got {redact_url(value)}")
        refuse_url_credentials(value, "url", "use basic_auth_username and basic_auth_password(_file)")
        return value

    @model_validator(mode="after")
    def _one_auth(self) -> HttpSinkSettings:
        basic = self.basic_auth_password is not None or self.basic_auth_password_file is not None
        bearer = self.bearer_token is not None or self.bearer_token_file is not None
        if basic and bearer:
            raise ValueError("choose basic auth or a bearer token, not both")
        if basic and not self.basic_auth_username:
            raise ValueError("basic_auth_username is required with a basic auth password")
        if self.basic_auth_password is not None and self.basic_auth_password_file is not None:
            raise ValueError("give basic_auth_password or basic_auth_password_file, not both")
        if self.bearer_token is not None and self.bearer_token_file is not None:
            raise ValueError("give bearer_token or bearer_token_file, not both")
        self.tls()  # its problems, named as spelled here
        return self

    def tls(self) -> TlsClientSettings:
        """The TLS options as the core's TLS client model (used for https URLs)."""
        return tls_client(self)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait per a `Retry-After` header (delay-seconds or HTTP date); None if absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT; an obsolete format may come without a zone
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# 408/429 and 5xx may pass later; 501 and 505 say the request itself can never work.
RETRYABLE_STATUSES = frozenset({408, 429} | set(range(500, 600)) - {501, 505})

H = TypeVar("H", bound=HttpSinkSettings)


class HttpSink(Sink[H]):
    """Base of the HTTP sinks: one pooled keep-alive session, one POST per batch."""

    # Statuses worth sending again; a subclass narrows this where its protocol says so (OTLP).
    retryable_statuses: Collection[int] = RETRYABLE_STATUSES
    # How much of a 2xx answer `post` reads by default; 0 where the status alone acknowledges.
    answer_bytes: int = DEFAULT_ANSWER_BYTES

    def __init__(self, settings: H, log: FilteringBoundLogger, registry: CollectorRegistry) -> None:
        super().__init__(settings, log, registry)
        self._client: HttpClient | None = None
        self._headers: dict[str, str] = {}

    async def open(self) -> None:
        s = self.settings
        # Answers are small: asking for them uncompressed spares inflating them (a hostile receiver
        # may compress anyway; `read_answer` bounds that too).
        headers = {"Accept-Encoding": "identity", **s.headers}
        headers.update({k: v.get_secret_value() for k, v in s.secret_headers.items()})
        if s.basic_auth_username is not None:
            password = _secret(s.basic_auth_password, s.basic_auth_password_file)
            pair = f"{s.basic_auth_username}:{password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        token = _secret(s.bearer_token, s.bearer_token_file)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if s.gzip:
            headers["Content-Encoding"] = "gzip"
        for name in (*s.secret_headers, "Authorization"):
            register_secret(headers.get(name))
        self._headers = headers
        timeout = aiohttp.ClientTimeout(total=s.timeout_secs, sock_connect=s.connect_timeout_secs)
        tls = s.tls().context() if URL(s.url).scheme == "https" else None
        # As many connections as the tailer may send batches at once (its send_concurrency). The
        # core's session talks only to this URL: no redirects, no environment proxies, no cookies,
        # and no inflating of its own (`read_answer` bounds it).
        self._client = client_session(connections=64, timeout=timeout, tls=tls)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def compress(self, body: bytes) -> bytes:
        if not self.settings.gzip:
            return body
        level = self.settings.gzip_level
        if len(body) > _GZIP_IN_THREAD_BYTES:
            return await asyncio.to_thread(gzip.compress, body, level, mtime=0)
        return gzip.compress(body, level, mtime=0)

    async def post(
        self,
        body: bytes,
        content_type: str,
        *,
        url: str | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        answer_bytes: int | None = None,
    ) -> tuple[int, bytes]:
        """POST one body; return (status, response body) for a 2xx, raise a classified error otherwise.

        At most `answer_bytes` (default: the class's `answer_bytes`) of a 2xx answer are read, after
        decompression; a longer or undecodable answer raises RetryableError. With 0 the status alone
        acknowledges: the answer is skipped (b"" returned) whatever it holds.
        """
        if self._client is None:
            raise RuntimeError(f"sink {self.name!r} used before open()")
        data = await self.compress(body)
        req_headers = dict(self._headers)
        req_headers["Content-Type"] = content_type
        if headers:
            req_headers.update(headers)
        target = url or self.settings.url
        wanted = self.answer_bytes if answer_bytes is None else answer_bytes
        try:
            # A 3xx comes back as it is (the core's client follows no redirect): the message says where.
            async with self._client.post(target, data=data, headers=req_headers, params=params) as resp:
                status = resp.status
                ok = 200 <= status < 300
                limit = (wanted or _IGNORED_ANSWER_BYTES) if ok else _ERROR_BODY_CHARS
                payload, complete = await read_answer(resp, limit)
                if not complete:
                    resp.close()  # the rest is never read: this connection is not reused
                retry_after = resp.headers.get("Retry-After")
                location = resp.headers.get("Location")
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise RetryableError(redact_text(f"{redact_url(target)}: {type(e).__name__}: {e}")) from e
        self.metrics.add_bytes(len(data))
        if ok:
            if not wanted:
                return status, b""
            if not complete:
                raise RetryableError(
                    f"{redact_url(target)}: HTTP {status} with an answer longer than {wanted} bytes (or in an "
                    "unknown encoding): not the receiver's acknowledgement"
                )
            return status, payload
        text = payload[:_ERROR_BODY_CHARS].decode("utf-8", "replace").strip()
        message = f"{target}: HTTP {status}: {text}"
        if 300 <= status < 400:
            message += f" (redirects to {location}: configure that URL)"
        # The receiver's answer may quote the request URL and its key back.
        message = redact_text(message)
        if status in self.retryable_statuses:
            raise RetryableError(message, parse_retry_after(retry_after))
        if status == 413:
            raise TooLargeError(message, reason="http_413")
        raise PermanentError(message, reason=f"http_{status}")


def _secret(value: SecretStr | None, path: Path | None) -> str | None:
    if value is not None:
        return value.get_secret_value()
    if path is not None:
        try:
            text = path.read_text().strip()
            register_secret(text)
            return text
        except OSError as e:
            raise ValueError(f"cannot read the secret file {path}: {e.strerror}") from e
    return None
