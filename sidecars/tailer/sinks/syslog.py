"""`syslog`: RFC 5424 messages over TCP (optionally TLS), framed by octet counting (RFC 6587).

One persistent connection, re-opened on the next batch after any failure. Syslog over TCP has no
application-level acknowledgement: a batch counts as delivered once it was written and the socket
buffer drained into the kernel. A receiver that dies right then can lose what was still in flight
(use an HTTP sink where that matters).
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry
from pydantic import Field, field_validator, model_validator
from structlog.typing import FilteringBoundLogger

from sidecars.core.tls import TlsClientSettings, tls_client
from sidecars.tailer.sinks.base import Batch, RetryableError, SendResult, Sink, SinkSettings
from sidecars.tailer.sinks.encode import rfc3339_us

FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7, "uucp": 8,
    "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14, "clock": 15,
    "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22,
    "local7": 23,
}  # fmt: skip
SEVERITIES = {
    "emerg": 0, "alert": 1, "crit": 2, "err": 3, "error": 3, "warning": 4, "warn": 4, "notice": 5, "info": 6,
    "debug": 7,
}  # fmt: skip

_PRINTUSASCII = re.compile(r"^[\x21-\x7e]+$")
_NOT_PARAM_NAME = re.compile(r'[^\x21-\x7e]|[= \]"]')
_SD_ESCAPE = str.maketrans({"\\": "\\\\", '"': '\\"', "]": "\\]"})
_UTF8_BOM = b"\xef\xbb\xbf"


class SyslogSettings(SinkSettings):
    host: str = Field("127.0.0.1", description="Receiver host name or address.")
    port: int = Field(601, ge=1, le=65535, description="Receiver TCP port (601 is syslog over TCP, 6514 over TLS).")
    tls: bool = Field(False, description="Wrap the connection in TLS (RFC 5425).")
    tls_verify: bool = Field(True, description="Verify the receiver's certificate and host name.")
    tls_ca_file: Path | None = Field(None, description="CA bundle to verify the receiver with.")
    tls_cert_file: Path | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    tls_key_file: Path | None = Field(None, description="Private key (PEM) of the client certificate.")
    facility: str = Field("user", description=f"Facility name: {', '.join(FACILITIES)}.")
    severity: str = Field("info", description="Severity name: emerg, alert, crit, err, warning, notice, info, debug.")
    hostname: str | None = Field(None, description="HOSTNAME field; unset: this host's name (the Pod name in a Pod).")
    app_name: str = Field("tailer", max_length=48, description="APP-NAME field (1-48 printable ASCII).")
    app_name_label: str | None = Field(
        None, description="Label whose value becomes APP-NAME when a file has it (e.g. container); else app_name."
    )
    procid: str = Field("-", max_length=128, description="PROCID field; - for none.")
    msgid: str = Field("-", max_length=32, description="MSGID field (1-32 printable ASCII); - for none.")
    structured_data_id: str | None = Field(
        "labels@32473",
        description="SD-ID under which the labels are sent as structured data (name@private-enterprise-"
        "number); unset: no structured data.",
    )
    utf8_bom: bool = Field(False, description="Start each MSG with the UTF-8 BOM, marking it as UTF-8 (RFC 5424).")
    connect_timeout_secs: float = Field(5.0, gt=0, description="Deadline for connecting (and the TLS handshake).")
    write_timeout_secs: float = Field(30.0, gt=0, description="Deadline for writing one batch into the socket.")

    @field_validator("facility")
    @classmethod
    def _facility(cls, value: str) -> str:
        if value not in FACILITIES:
            raise ValueError(f"unknown facility {value!r}; one of {', '.join(FACILITIES)}")
        return value

    @field_validator("severity")
    @classmethod
    def _severity(cls, value: str) -> str:
        if value not in SEVERITIES:
            raise ValueError(f"unknown severity {value!r}; one of {', '.join(SEVERITIES)}")
        return value

    @field_validator("hostname", "app_name", "procid", "msgid", "structured_data_id")
    @classmethod
    def _header_field(cls, value: str | None) -> str | None:
        if value is not None and not _PRINTUSASCII.match(value):
            raise ValueError(f"must be printable ASCII without spaces, got {value!r}")
        return value

    @field_validator("structured_data_id")
    @classmethod
    def _sd_id(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 32 or _NOT_PARAM_NAME.search(value)):
            raise ValueError(f'must be 1-32 printable ASCII characters without = ] " or spaces, got {value!r}')
        return value

    @model_validator(mode="after")
    def _tls_options(self) -> SyslogSettings:
        self.tls_client()  # its problems, named as spelled here
        return self

    def tls_client(self) -> TlsClientSettings:
        """The tls_* options as the core's TLS client model (used when `tls` is on)."""
        return tls_client(self)


def sd_param_name(name: str) -> str:
    """PARAM-NAME: 1-32 printable ASCII characters except = ] " and space; others become _."""
    return _NOT_PARAM_NAME.sub("_", name)[:32] or "_"


def structured_data(sd_id: str | None, labels: Mapping[str, str]) -> str:
    """`[sd_id name="value" ...]` with values escaped per RFC 5424 (\\ " ]), or `-`."""
    if sd_id is None or not labels:
        return "-"
    params = "".join(f' {sd_param_name(k)}="{str(v).translate(_SD_ESCAPE)}"' for k, v in labels.items())
    return f"[{sd_id}{params}]"


class SyslogSink(Sink[SyslogSettings]):
    name = "syslog"
    description = "Send RFC 5424 syslog over TCP or TLS with octet-counting framing (RFC 6587)."
    Settings = SyslogSettings

    def __init__(self, settings: SyslogSettings, log: FilteringBoundLogger, registry: CollectorRegistry) -> None:
        super().__init__(settings, log, registry)
        pri = FACILITIES[settings.facility] * 8 + SEVERITIES[settings.severity]
        hostname = settings.hostname or _header_safe(socket.gethostname()) or "-"
        self._head = f"<{pri}>1 "
        self._hostname = hostname[:255]
        self._rest_cache: dict[tuple[tuple[str, str], ...], str] = {}
        self._bom = _UTF8_BOM.decode() if settings.utf8_bom else ""
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    def _rest(self, labels: Mapping[str, str]) -> str:
        """` HOSTNAME APP-NAME PROCID MSGID SD ` (and the BOM): the same for every line of a file."""
        key = tuple(labels.items())
        rest = self._rest_cache.get(key)
        if rest is None:
            s = self.settings
            if len(self._rest_cache) > 10_000:
                self._rest_cache.clear()
            app = s.app_name
            if s.app_name_label is not None:
                app = _header_safe(str(labels.get(s.app_name_label, "")))[:48] or app
            sd = structured_data(s.structured_data_id, labels)
            rest = self._rest_cache[key] = f" {self._hostname} {app} {s.procid} {s.msgid} {sd} {self._bom}"
        return rest

    def encode(self, batch: Batch) -> bytes:
        """Every line as `LEN SP <PRI>1 TIMESTAMP HOSTNAME APP PROCID MSGID SD MSG`."""
        head, parts = self._head, []
        for s in batch.streams:
            rest = self._rest(s.labels)
            last, stamp = -1, ""
            for line, ts in zip(s.lines, s.timestamps_ns, strict=True):
                if ts != last:  # lines read together share their time: format it once
                    stamp, last = head + rfc3339_us(ts) + rest, ts
                message = (stamp + line).encode("utf-8", "replace")
                parts.append(b"%d " % len(message))
                parts.append(message)
        return b"".join(parts)

    async def _connect(self) -> None:
        s = self.settings
        ctx = s.tls_client().context() if s.tls else None
        try:
            async with asyncio.timeout(s.connect_timeout_secs):
                self._reader, self._writer = await asyncio.open_connection(s.host, s.port, ssl=ctx)
        except (OSError, TimeoutError, ssl.SSLError) as e:
            raise RetryableError(f"syslog {s.host}:{s.port}: connect: {type(e).__name__}: {e}") from e
        # drain() then waits until everything is in the kernel, not merely below a high-water mark.
        self._writer.transport.set_write_buffer_limits(high=0)
        self.log.info("syslog_connected", host=s.host, port=s.port, tls=s.tls)

    def _usable(self) -> bool:
        # The receiver sends nothing, so readable-with-no-data means it closed the connection (FIN)
        # and a write would vanish into a half-closed socket. The stream reader notices that only
        # when the loop got to it; a non-blocking peek on the socket notices it now.
        if self._writer is None or self._reader is None or self._writer.is_closing() or self._reader.at_eof():
            return False
        raw = self._writer.get_extra_info("socket")
        if raw is None:
            return True
        try:
            with socket.fromfd(raw.fileno(), raw.family, raw.type) as peer:
                return peer.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            return True  # nothing to read: the connection is open
        except OSError:
            return False  # reset

    async def _disconnect(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
            except (OSError, TimeoutError, ssl.SSLError):
                pass

    async def close(self) -> None:
        await self._disconnect()

    async def send(self, batch: Batch) -> SendResult:
        with self.metrics.request() as req:
            data = self.encode(batch)
            async with self._lock:
                if not self._usable():
                    await self._disconnect()
                    await self._connect()
                assert self._writer is not None
                try:
                    self._writer.write(data)
                    async with asyncio.timeout(self.settings.write_timeout_secs):
                        await self._writer.drain()
                except (OSError, TimeoutError, ssl.SSLError) as e:
                    await self._disconnect()
                    raise RetryableError(f"syslog write: {type(e).__name__}: {e}") from e
            self.metrics.add_bytes(len(data))
            req.result = SendResult()
            return req.result


def _header_safe(value: str) -> str:
    return "".join(c for c in value if "\x21" <= c <= "\x7e")
