"""TLS as a client: one settings model and one way to build its `ssl.SSLContext`.

Shared by everything that connects to a peer over TLS (the tailer's HTTP and syslog sinks, the
ambassador's upstreams), so verification, client certificates and versions mean the same everywhere.
Verification is on unless `insecure_skip_verify` says otherwise, by that name, so a config that
turns it off reads as what it is. Every secret comes from a file (a mounted Secret): the key and its
passphrase are read when the context is built and never kept in the settings.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sidecars.core.redact import register_secret

__all__ = ["TlsClientSettings", "TlsError", "tls_client"]

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TlsError(ValueError):
    """TLS material that cannot be used: a missing or malformed file, a key that does not match."""


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
    insecure_skip_verify: bool = Field(
        False, description="Accept any server certificate and name (testing only: anyone on the path can listen)."
    )

    @model_validator(mode="after")
    def _pairs(self) -> TlsClientSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.key_password_file is not None and self.key_file is None:
            raise ValueError("key_password_file needs key_file")
        return self

    def context(self) -> ssl.SSLContext:
        """A client context: verifying (unless told otherwise), with the client certificate if any.

        Reads the files now; TlsError names the file and what is wrong with it.
        """
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=_str(self.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"ca_file {self.ca_file}: cannot be loaded: {type(exc).__name__}: {exc}") from exc
        ctx.minimum_version = _VERSIONS[self.min_version]
        if self.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file is not None and self.key_file is not None:
            password = self._key_password()
            try:
                ctx.load_cert_chain(self.cert_file, self.key_file, password)
            except (OSError, ssl.SSLError) as exc:
                raise TlsError(
                    f"cert_file {self.cert_file} with key_file {self.key_file}: cannot be loaded: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        return ctx

    def server_hostname(self, host: str) -> str:
        """The name to verify and to send as SNI when connecting to `host`."""
        return self.server_name or host

    def _key_password(self) -> str | None:
        if self.key_password_file is None:
            return None
        try:
            password = self.key_password_file.read_text().strip()
        except OSError as exc:
            raise TlsError(f"key_password_file {self.key_password_file}: cannot be read: {exc.strerror}") from None
        register_secret(password)
        return password


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


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
