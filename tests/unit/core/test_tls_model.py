"""The TLS client model's additions: ALPN names, pinned digests, contexts from watched contents,
certificate expiry read from the DER structure."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from pydantic import ValidationError

from sidecars.core.tls import ClientContext, TlsClientSettings, TlsError, certificate_not_after


def test_alpn_names_are_checked() -> None:
    assert TlsClientSettings(alpn=["h2", "http/1.1"]).alpn == ["h2", "http/1.1"]
    for bad in ("", "x" * 256, "h\n2", "é"):
        with pytest.raises(ValidationError, match="is not an ALPN protocol name"):
            TlsClientSettings(alpn=[bad])


def test_pinned_digests_are_normalized_and_checked() -> None:
    spelled = ":".join(["AB"] * 32)
    assert TlsClientSettings(pinned_sha256=[spelled]).pinned_sha256 == ["ab" * 32]
    with pytest.raises(ValidationError, match="is not a SHA-256 digest"):
        TlsClientSettings(pinned_sha256=["ab" * 31])


def test_context_from_loads_the_contents_given_not_the_file(tmp_path: Path) -> None:
    ca, other = trustme.CA(), trustme.CA()
    ca_file = tmp_path / "ca.pem"
    other.cert_pem.write_to_path(str(ca_file))  # the file as it is now: another CA
    settings = TlsClientSettings(ca_file=ca_file, alpn=["http/1.1"])
    ctx = settings.context_from([ca.cert_pem.bytes()])
    assert isinstance(ctx, ClientContext)
    loaded = ctx.get_ca_certs()
    assert len(loaded) == 1
    assert loaded != settings.context().get_ca_certs()  # context() reads the file: the other CA
    assert ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_2


def test_bad_contents_name_the_file(tmp_path: Path) -> None:
    settings = TlsClientSettings(ca_file=tmp_path / "ca.pem")
    with pytest.raises(TlsError, match=r"ca_file .*ca\.pem: cannot be loaded"):
        settings.context_from([b"-----BEGIN CERTIFICATE-----\nnot base64\n"])


def test_certificate_not_after_matches_cryptography() -> None:
    ca = trustme.CA()
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    for not_after in (now + datetime.timedelta(days=3), datetime.datetime(2051, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)):
        leaf = ca.issue_cert("a.example", not_before=now - datetime.timedelta(days=1), not_after=not_after)
        pem = leaf.cert_chain_pems[0].bytes()
        parsed = x509.load_pem_x509_certificate(pem).not_valid_after_utc
        assert certificate_not_after(pem) == parsed.timestamp()
        assert certificate_not_after(ssl.PEM_cert_to_DER_cert(pem.decode())) == parsed.timestamp()


@pytest.mark.parametrize(
    "data", [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----", b"\x30\x82"]
)
def test_certificate_not_after_refuses_garbage(data: bytes) -> None:
    with pytest.raises(TlsError):
        certificate_not_after(data)


def test_require_alpn_needs_protocols_and_checks_the_servers_choice() -> None:
    settings = TlsClientSettings()
    ctx = settings.context_from([], alpn=["h2"], require_alpn=True)
    assert ctx.required_alpn == frozenset({"h2"}) and ctx.sslobject_class is not ssl.SSLObject
    assert settings.context_from([], alpn=["h2"]).sslobject_class is ssl.SSLObject  # offered, not required
    with pytest.raises(TlsError, match="require_alpn needs protocols"):
        settings.context_from([], require_alpn=True)
