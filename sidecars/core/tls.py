"""TLS as a client: one settings model and one way to build its `ssl.SSLContext`.

Shared by everything that connects to a peer over TLS (the tailer's HTTP and syslog sinks, the
ambassador's upstreams), so verification, client certificates and versions mean the same everywhere.
Verification is on unless `insecure_skip_verify` says otherwise, by that name, so a config that
turns it off reads as what it is. Every secret comes from a file (a mounted Secret): the key and its
passphrase are read when the context is built and never kept in the settings.

A context can be built from the files' contents as read by a watcher (`context_from`), so the
material in force is exactly what was checked, never a file half replaced since. Its connections
can resume a session: asyncio's `create_connection` takes no session, so `offering(session)` hands
one to the next handshake started in the calling task, and tells which `SSLObject` it got.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import contextlib
import contextvars
import hashlib
import os
import re
import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sidecars.core.redact import register_secret

__all__ = [
    "AlpnRefused",
    "ClientContext",
    "Handshake",
    "TlsClientSettings",
    "TlsError",
    "certificate_not_after",
    "offering",
    "tls_client",
]

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")
# The first PEM certificate of a file; the text is bounded by whoever read it (a watched file's cap).
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----")


class TlsError(ValueError):
    """TLS material that cannot be used: a missing or malformed file, a key that does not match."""


class AlpnRefused(ssl.SSLError):
    """The server completed the handshake without selecting a protocol the client requires (ALPN).

    An SSLError, so the event loop fails the handshake with it like any other: the connection never
    counts as open and not one byte of the protocol the server does not speak is sent."""


class TlsClientSettings(BaseModel):
    """How to verify a server and, for mutual TLS, who to be."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = Field(None, description="CA bundle (PEM) to verify the server with; unset: the system's.")
    cert_file: Path | None = Field(None, description="Client certificate chain (PEM) for mutual TLS.")
    key_file: Path | None = Field(None, description="Private key (PEM) of the client certificate.")
    key_password_file: Path | None = Field(
        None, description="File holding the passphrase of an encrypted key_file (a mounted Secret)."
    )
    server_name: str | None = Field(
        None,
        description="Name the server's certificate must hold, also sent as SNI; unset: the host connected to "
        "(set it for an IP address).",
    )
    min_version: Literal["1.2", "1.3"] = Field("1.2", description="Oldest TLS version accepted: 1.2 or 1.3.")
    alpn: list[str] = Field(
        [], description="Protocols offered through ALPN, the preferred first (e.g. http/1.1, h2); empty: none."
    )
    pinned_sha256: list[str] = Field(
        [],
        description="SHA-256 digests (hex, colons allowed) of the server certificates accepted: the server's "
        "own certificate must be one of them, on top of the usual verification. List the next certificate's "
        "digest before it is deployed.",
    )
    insecure_skip_verify: bool = Field(
        False, description="Accept any server certificate and name (testing only: anyone on the path can listen)."
    )

    @field_validator("alpn")
    @classmethod
    def _alpn_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not 0 < len(name.encode()) < 256 or not name.isascii() or not name.isprintable():
                raise ValueError(f"{name!r} is not an ALPN protocol name (1-255 printable ASCII characters)")
        return value

    @field_validator("pinned_sha256")
    @classmethod
    def _digests(cls, value: list[str]) -> list[str]:
        digests = []
        for text in value:
            digest = text.replace(":", "").strip().lower()
            if not _HEX_DIGEST.match(digest):
                raise ValueError(f"{text!r} is not a SHA-256 digest (64 hex digits, colons allowed)")
            digests.append(digest)
        return digests

    @model_validator(mode="after")
    def _pairs(self) -> TlsClientSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.key_password_file is not None and self.key_file is None:
            raise ValueError("key_password_file needs key_file")
        return self

    def files(self) -> list[Path]:
        """The files the material comes from, in the order `context_from` takes their contents."""
        return [p for p in (self.ca_file, self.cert_file, self.key_file, self.key_password_file) if p is not None]

    def read_files(self) -> list[bytes]:
        """The contents of `files()`; TlsError names the one that cannot be read."""
        contents = []
        for name, path in self._named_files():
            try:
                contents.append(path.read_bytes())
            except OSError as exc:
                raise TlsError(f"{name} {path}: cannot be loaded: {type(exc).__name__}: {exc}") from None
        return contents

    def context(self, *, alpn: Sequence[str] | None = None) -> ClientContext:
        """A client context: verifying (unless told otherwise), with the client certificate if any.

        Reads the files now; TlsError names the file and what is wrong with it.
        """
        return self.context_from(self.read_files(), alpn=alpn)

    def context_from(
        self, contents: Sequence[bytes], *, alpn: Sequence[str] | None = None, require_alpn: bool = False
    ) -> ClientContext:
        """The context built from `contents`, the files' contents in `files()` order (as a watcher read
        them); `alpn` overrides the configured protocols (a caller that speaks a set of its own);
        `require_alpn`: a handshake in which the server selects none of them fails with AlpnRefused
        (a caller that cannot fall back, as HTTP/2 over TLS cannot to HTTP/1.1)."""
        material = dict(zip((name for name, _ in self._named_files()), contents, strict=True))
        ctx = ClientContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and the name
        try:
            if "ca_file" in material:
                with _loadable(material["ca_file"], self.ca_file) as path:
                    ctx.load_verify_locations(cafile=path)
            else:
                ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"ca_file {self.ca_file}: cannot be loaded: {type(exc).__name__}: {exc}") from exc
        ctx.minimum_version = _VERSIONS[self.min_version]
        if self.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if "cert_file" in material and "key_file" in material:
            password = self._key_password(material.get("key_password_file"))
            try:
                with (
                    _loadable(material["cert_file"], self.cert_file) as cert,
                    _loadable(material["key_file"], self.key_file) as key,
                ):
                    ctx.load_cert_chain(cert, key, password)
            except (OSError, ssl.SSLError) as exc:
                raise TlsError(
                    f"cert_file {self.cert_file} with key_file {self.key_file}: cannot be loaded: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        protocols = self.alpn if alpn is None else list(alpn)
        if protocols:
            ctx.set_alpn_protocols(protocols)
        if require_alpn:
            if not protocols:
                raise TlsError("require_alpn needs protocols to offer")
            ctx.required_alpn = frozenset(protocols)
        if self.pinned_sha256 and not self.insecure_skip_verify:
            ctx.pinned_sha256 = frozenset(self.pinned_sha256)
        if ctx.pinned_sha256 or ctx.required_alpn:
            ctx.sslobject_class = _CheckedObject
        return ctx

    def server_hostname(self, host: str) -> str:
        """The name to verify and to send as SNI when connecting to `host`."""
        return self.server_name or host

    def _named_files(self) -> list[tuple[str, Path]]:
        names = ("ca_file", "cert_file", "key_file", "key_password_file")
        return [(name, path) for name in names if (path := getattr(self, name)) is not None]

    def _key_password(self, content: bytes | None) -> str | None:
        if content is None:
            return None
        try:
            password = content.decode().strip()
        except UnicodeDecodeError:
            raise TlsError(f"key_password_file {self.key_password_file}: not UTF-8 text") from None
        register_secret(password)
        return password


class Handshake:
    """One connection attempt through a `ClientContext`: the session it offers, the SSLObject it got
    (set once the TCP connection is up and the handshake begins)."""

    __slots__ = ("session", "ssl_object")

    def __init__(self, session: ssl.SSLSession | None) -> None:
        self.session = session
        self.ssl_object: ssl.SSLObject | None = None


_HANDSHAKE: contextvars.ContextVar[Handshake | None] = contextvars.ContextVar("tls_handshake", default=None)


@contextlib.contextmanager
def offering(session: ssl.SSLSession | None = None) -> Iterator[Handshake]:
    """Around one `create_connection(..., ssl=ctx)` of a `ClientContext`: its handshake offers
    `session` for resumption and records its SSLObject in the Handshake yielded. The event loop
    starts the handshake in a callback that runs in the calling task's context, where this is set."""
    attempt = Handshake(session)
    token = _HANDSHAKE.set(attempt)
    try:
        yield attempt
    finally:
        _HANDSHAKE.reset(token)


class ClientContext(ssl.SSLContext):
    """An SSLContext whose handshakes take their session offer from `offering()`, check the server's
    certificate against `pinned_sha256` and the server's ALPN choice against `required_alpn` when set."""

    pinned_sha256: frozenset[str] = frozenset()
    required_alpn: frozenset[str] = frozenset()

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        attempt = _HANDSHAKE.get()
        if attempt is None:
            return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        if session is None:
            session = attempt.session
        try:
            obj = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        except ValueError:  # a session of another context (rebuilt meanwhile): a full handshake then
            obj = super().wrap_bio(incoming, outgoing, server_side, server_hostname, None)
        attempt.ssl_object = obj
        return obj


class _CheckedObject(ssl.SSLObject):
    """Fails the handshake itself on a certificate not pinned or a protocol not selected, so the
    connection never counts as open (asyncio tells its protocol nothing) and no byte of a request goes
    to that server."""

    def do_handshake(self) -> None:
        super().do_handshake()
        pins: frozenset[str] = getattr(self.context, "pinned_sha256", frozenset())
        if pins:
            self._check_pin(pins)
        required: frozenset[str] = getattr(self.context, "required_alpn", frozenset())
        if required:
            chosen = self.selected_alpn_protocol()
            if chosen not in required:
                offered = ", ".join(sorted(required))
                what = "selected no protocol" if chosen is None else f"selected {chosen[:40]!r}"
                raise AlpnRefused(f"the server {what} through ALPN, not one of the protocols required ({offered})")

    def _check_pin(self, pins: frozenset[str]) -> None:
        der = self.getpeercert(binary_form=True)
        digest = hashlib.sha256(der).hexdigest() if der else None
        if digest not in pins:
            why = (
                "the server sent no certificate to compare with pinned_sha256"
                if digest is None
                else f"the server's certificate (sha256 {digest}) is not among pinned_sha256"
            )
            exc = ssl.SSLCertVerificationError(why)
            exc.verify_message = why
            raise exc


def certificate_not_after(data: bytes) -> float:
    """The expiry (Unix time) of the first certificate in `data`, PEM or DER; TlsError if unreadable.

    Read from the DER structure directly (RFC 5280: Certificate, TBSCertificate, Validity), since the
    ssl module parses only the peer's certificate."""
    der = data
    if b"-----BEGIN" in data:
        match = _PEM_CERT.search(data)
        if match is None:
            raise TlsError("no PEM certificate found")
        try:
            der = base64.b64decode(b"".join(match.group(1).split()), validate=True)
        except binascii.Error:
            raise TlsError("the PEM certificate is not valid base64") from None
    try:
        tbs = _children(_children(der)[0][1])[0][1]
        fields = _children(tbs)
        if fields and fields[0][0] == 0xA0:  # explicit version: [0]
            fields = fields[1:]
        validity = _children(fields[3][1])  # after serialNumber, signature, issuer
        tag, value = validity[1]
    except (IndexError, ValueError) as exc:
        raise TlsError(f"not an X.509 certificate: {exc}") from None
    return _asn1_time(tag, value)


def _children(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, contents) of each DER element in `data` (the contents of a constructed element)."""
    out = []
    i = 0
    while i < len(data):
        tag = data[i]
        if i + 1 >= len(data):
            raise ValueError("truncated element")
        length = data[i + 1]
        i += 2
        if length & 0x80:
            count = length & 0x7F
            if not 0 < count <= 4 or i + count > len(data):
                raise ValueError("bad length")
            length = int.from_bytes(data[i : i + count], "big")
            i += count
        if i + length > len(data):
            raise ValueError("truncated element")
        out.append((tag, data[i : i + length]))
        i += length
    return out


def _asn1_time(tag: int, value: bytes) -> float:
    text = value.decode("ascii", "replace")
    if tag == 0x17 and re.fullmatch(r"\d{12}Z", text):  # UTCTime YYMMDDHHMMSSZ: 50-99 are 19xx
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18 or not re.fullmatch(r"\d{14}Z", text):  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise TlsError(f"not an X.509 time: {text[:20]!r}")
    fields = (int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]), int(text[10:12]), int(text[12:14]))
    return float(calendar.timegm((*fields, 0, 0, 0)))


@contextlib.contextmanager
def _loadable(data: bytes, path: Path | None) -> Iterator[str]:
    """A path the ssl module loads `data` from: an anonymous in-memory file, so what is loaded is what
    was read, not the file as it may be by now. Where there is none (not Linux), the file itself."""
    try:
        fd = os.memfd_create("tls-material", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        yield str(path)
        return
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        proc_path = f"/proc/self/fd/{fd}"
        yield proc_path if os.path.exists(proc_path) else str(path)
    finally:
        os.close(fd)


def tls_client(options: object, prefix: str = "tls_") -> TlsClientSettings:
    """The model from options spelled flat on another settings model: `<prefix>ca_file`,
    `<prefix>cert_file`, `<prefix>key_file` and `<prefix>verify` (its negation is
    insecure_skip_verify); its problems as one ValueError naming the options as spelled there."""
    try:
        return TlsClientSettings(
            ca_file=getattr(options, prefix + "ca_file", None),
            cert_file=getattr(options, prefix + "cert_file", None),
            key_file=getattr(options, prefix + "key_file", None),
            insecure_skip_verify=not getattr(options, prefix + "verify", True),
        )
    except ValidationError as exc:
        names = re.compile(r"\b(" + "|".join(TlsClientSettings.model_fields) + r")\b")
        problems = [names.sub(prefix + r"\1", str(e["msg"]).removeprefix("Value error, ")) for e in exc.errors()]
        raise ValueError("; ".join(problems)) from None
