"""The settings every sidecar shares; a plugin's own settings model subclasses `SidecarSettings`.

Each field is at once a CLI flag (`--admin-port`), an env var (`SIDECAR_ADMIN_PORT` for the shared
fields below, `<PLUGIN>_<FIELD>` for a plugin's own) and a key in the optional YAML file
(`admin_port`). Units belong in the names (`timeout_secs`, `max_line_bytes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sidecars.core.listen import ANY


def secret(default: Any = None, *, description: str) -> Any:
    """A field whose value is never printed or logged and may also be read from `<field>_file`."""
    return Field(default=default, description=description, json_schema_extra={"secret": True})


class SidecarSettings(BaseModel):
    """Options common to every sidecar; subclasses override `admin_port`'s default."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    # Shared fields take this env prefix; a plugin's own fields take `env_prefix` of its class.
    common_env_prefix: ClassVar[str] = "SIDECAR_"
    env_prefix: ClassVar[str] = "SIDECAR_"

    admin_host: list[str] = Field(
        list(ANY),
        min_length=1,
        description="Addresses of the admin server (probes, /metrics, status pages), all on admin_port. "
        "The kubelet and Prometheus reach it on the Pod IP, IPv4 or IPv6, so it listens on every "
        "interface of both (0.0.0.0 and ::; :: is left out on a node without IPv6); it exposes nothing "
        "secret.",
    )
    admin_port: int = Field(9800, ge=0, le=65535, description="Port of the admin server; 0 picks a free one.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Lowest level logged.")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="JSON lines, readable console output, or auto: console on a terminal, else JSON."
    )
    shutdown_timeout_secs: float = Field(
        20.0,
        gt=0,
        description="Budget for the whole shutdown after SIGTERM (drain, cancel, release); keep it "
        "below the Pod's terminationGracePeriodSeconds.",
    )
    startup_timeout_secs: float = Field(
        60.0, gt=0, description="Start-up (setup and first readiness) must finish within this or the process exits."
    )
    max_restarts: int = Field(
        5, ge=0, description="Crashes of a supervised task tolerated within restart_window_secs before exiting."
    )
    restart_window_secs: float = Field(60.0, gt=0, description="Window over which max_restarts is counted.")
    restart_backoff_secs: float = Field(
        0.5, gt=0, description="First delay before restarting a crashed task; doubles up to 30 s, jittered."
    )

    @field_validator("admin_host", mode="before")
    @classmethod
    def _admin_hosts(cls, value: Any) -> Any:
        return split_hosts(value)

    @classmethod
    def nested_settings(cls) -> Mapping[str, tuple[str, Mapping[str, type[BaseModel]]]]:
        """Free-form fields (a `dict`) validated by a model another field chooses.

        `{field: (chooser, {chooser's value: model})}`: the tailer's `sink_config` is validated by the
        settings of the sink named in `sink`. Lets the config tooling name the keys such a field
        knows: its JSON Schema, and the "did you mean" of a misspelt key inside it.
        """
        return {}


def split_hosts(value: Any) -> Any:
    """One address (`0.0.0.0`), several comma-separated, or a list: a list of addresses."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value
