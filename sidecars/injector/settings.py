"""The admission webhook's options: where it listens, its certificate, and how it injects."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

import sidecars
from sidecars.core import SidecarSettings
from sidecars.core.listen import ANY
from sidecars.core.settings import split_hosts
from sidecars.injector.annotations import IMAGE
from sidecars.injector.catalog import CATALOG


class InjectorSettings(SidecarSettings):
    env_prefix = "INJECTOR_"

    admin_port: int = Field(9804, ge=0, le=65535, description="Port of the admin server; 0 picks a free one.")
    listen_host: list[str] = Field(
        list(ANY),
        min_length=1,
        description="Addresses of the HTTPS listener the API server calls, all on listen_port (default "
        "0.0.0.0 and ::, so IPv6-only clusters reach it too; :: is left out on a node without IPv6).",
    )
    listen_port: int = Field(8443, ge=0, le=65535, description="Port of the HTTPS listener; 0 picks a free one.")
    tls_cert_file: Path = Field(
        Path("/etc/sidecars/tls/tls.crt"), description="Server certificate (PEM, chain included), from a Secret."
    )
    tls_key_file: Path = Field(Path("/etc/sidecars/tls/tls.key"), description="Its private key (PEM).")
    tls_poll_secs: float = Field(
        5.0,
        gt=0,
        description="Interval of the modification-time check of the certificate files; changes (the Secret's "
        "..data swap) are also noticed at once through inotify.",
    )
    max_review_bytes: int = Field(
        8 * 1024 * 1024,
        gt=0,
        description="Largest AdmissionReview body accepted (the API server caps objects near 3 MiB; a review "
        "holds one or two).",
    )
    classic: bool = Field(
        False, description="Inject ordinary containers instead of native sidecars (clusters before 1.29)."
    )
    image_prefix: str = Field("sidecars", description="Images are <image_prefix>/<sidecar>:<image_tag>.")
    image_tag: str = Field(
        sidecars.__version__,
        description="Tag of the sidecar images.",
        json_schema_extra={"doc_default": "this package's version"},
    )
    images: dict[str, str] = Field(
        default_factory=dict,
        description="Per sidecar, a full image reference by tag or digest (tailer=registry/x@sha256:...); "
        "a Pod's sidecars.io/<name>-image annotation wins.",
    )

    @field_validator("listen_host", mode="before")
    @classmethod
    def _listen_hosts(cls, value: object) -> object:
        return split_hosts(value)

    @field_validator("images")
    @classmethod
    def _images_valid(cls, images: dict[str, str]) -> dict[str, str]:
        for name, ref in images.items():
            if name not in CATALOG:
                raise ValueError(f"unknown sidecar {name!r} (known: {', '.join(CATALOG)})")
            if len(ref) > 512 or not IMAGE.fullmatch(ref):
                raise ValueError(f"{name}: {ref[:80]!r} is not an image reference")
        return images

    @field_validator("image_tag")
    @classmethod
    def _tag_valid(cls, tag: str) -> str:
        if len(tag) > 128 or not IMAGE.fullmatch(f"x:{tag}"):
            raise ValueError(f"{tag[:80]!r} is not an image tag")
        return tag
