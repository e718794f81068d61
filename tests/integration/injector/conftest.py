"""Certificates in a Secret volume laid out as the kubelet does, and an HTTPS client for AdmissionReviews."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from cryptography import x509

SERVICE = "sidecars-injector.sidecars-system.svc"
REVIEW = Path(__file__).resolve().parents[2] / "data" / "injector" / "admission-review.json"


class SecretVolume:
    """A Secret mounted the kubelet's way: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>/.

    An update writes a new timestamped directory and renames a new `..data` symlink over the old
    one, so readers see the old pair or the new pair, never a mix of files from both.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0
        root.mkdir(parents=True, exist_ok=True)

    @property
    def cert(self) -> Path:
        return self.root / "tls.crt"

    @property
    def key(self) -> Path:
        return self.root / "tls.key"

    def write(self, cert_pem: bytes, key_pem: bytes) -> None:
        self.generation += 1
        data = self.root / f"..2024_05_02_10_11_{self.generation:02d}.000000001"
        data.mkdir()
        (data / "tls.crt").write_bytes(cert_pem)
        (data / "tls.key").write_bytes(key_pem)
        old = os.readlink(self.root / "..data") if (self.root / "..data").is_symlink() else None
        tmp = self.root / "..data_tmp"
        os.symlink(data.name, tmp)
        os.rename(tmp, self.root / "..data")
        for name in ("tls.crt", "tls.key"):
            if not (self.root / name).is_symlink():
                os.symlink(f"..data/{name}", self.root / name)
        if old is not None:
            for f in (self.root / old).iterdir():
                f.unlink()
            (self.root / old).rmdir()

    def install(self, cert: trustme.LeafCert) -> None:
        self.write(b"".join(b.bytes() for b in cert.cert_chain_pems), cert.private_key_pem.bytes())


@dataclass
class Certificates:
    ca: trustme.CA
    volume: SecretVolume

    def issue(self) -> trustme.LeafCert:
        return self.ca.issue_cert(SERVICE)

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    certs = Certificates(trustme.CA(), SecretVolume(tmp_path / "tls"))
    certs.volume.install(certs.issue())
    return certs


def review(**request: Any) -> dict[str, Any]:
    """The API server's AdmissionReview for a ReplicaSet's Pod, with a fresh uid and `request` overrides."""
    body: dict[str, Any] = json.loads(REVIEW.read_text())
    body["request"]["uid"] = str(uuid.uuid4())
    body["request"].update(request)
    return body


@dataclass
class Client:
    """Posts to the webhook the way the API server does: HTTPS, the Service's name checked (SNI)."""

    session: aiohttp.ClientSession
    url: str

    async def post(self, body: bytes | dict[str, Any]) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.session.post(
            self.url, data=data, headers={"Content-Type": "application/json"}, server_hostname=SERVICE
        ) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text


@pytest.fixture
async def client_factory(certificates: Certificates) -> AsyncIterator[Any]:
    sessions: list[aiohttp.ClientSession] = []

    def make(port: int, *, new_connection_each_time: bool = False, trust: ssl.SSLContext | None = None) -> Client:
        ctx = trust or certificates.client_context()
        connector = aiohttp.TCPConnector(ssl=ctx, force_close=new_connection_each_time)
        session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10))
        sessions.append(session)
        return Client(session, f"https://127.0.0.1:{port}/mutate")

    yield make
    for s in sessions:
        await s.close()


async def served_serial(port: int, ctx: ssl.SSLContext) -> int:
    """Serial number of the certificate the webhook presents to a new connection."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=SERVICE)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    return x509.load_der_x509_certificate(der).serial_number
