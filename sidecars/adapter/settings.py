"""The adapter's options: what to scrape, which rules, where to serve the verdicts."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from yarl import URL

from sidecars.core import SidecarSettings
from sidecars.core.listen import ANY
from sidecars.core.redact import refuse_url_credentials
from sidecars.core.settings import split_hosts

DEFAULT_SCRAPE_TIMEOUT_SECS = 5.0


class AdapterSettings(SidecarSettings):
    env_prefix = "ADAPTER_"

    admin_port: int = Field(
        9803, ge=0, le=65535, description="Port of the sidecar's own admin server (probes of the adapter itself)."
    )
    target_url: str = Field(
        "http://127.0.0.1:8080/metrics",
        description="The app's Prometheus endpoint, scraped over localhost (the Pod shares one network). "
        "No credentials in it: they go in the target_basic_auth_* or target_bearer_token options.",
    )
    target_basic_auth_username: str | None = Field(
        None, description="User name for HTTP basic auth to the target (with target_basic_auth_password)."
    )
    target_basic_auth_password: SecretStr | None = Field(
        None, description="Password for basic auth to the target, or from a file with the _file variant; never shown."
    )
    target_bearer_token: SecretStr | None = Field(
        None,
        description="Token sent to the target as `Authorization: Bearer`, or from a file with the _file variant "
        "(a mounted Secret); never shown.",
    )
    rules_file: Path | None = Field(
        None,
        description="YAML file of health rules (usually a mounted ConfigMap); reloaded on change. "
        "Without it only the built-in `scrape` check runs.",
    )
    listen_host: list[str] = Field(
        list(ANY),
        min_length=1,
        description="Addresses of the listener serving /healthz and the other outputs, all on listen_port. "
        "The kubelet probes the Pod IP, IPv4 or IPv6, not localhost, so the default listens on every "
        "interface of both (0.0.0.0 and ::; :: is left out on a node without IPv6).",
    )
    listen_port: int = Field(8086, ge=0, le=65535, description="Port of that listener; 0 picks a free one.")
    scrape_interval_secs: float = Field(10.0, gt=0, description="Time between two scrapes of the target.")
    scrape_timeout_secs: float = Field(
        DEFAULT_SCRAPE_TIMEOUT_SECS,
        gt=0,
        description="A scrape (connect, response, body) must finish within this; at most the interval. "
        "Unset, 5 s, or the interval when that is shorter (as Prometheus' default timeout).",
        json_schema_extra={"doc_default": "`5.0`, or the interval when shorter"},
    )
    # The two limits bound the memory (docs/adapter.md, Memory): the Pod examples' 192Mi holds the
    # worst page the defaults allow, scraped every 2 s, with five minutes of history per series.
    max_body_bytes: int = Field(
        10_000_000,
        gt=0,
        description="Largest page accepted, counted while it is decompressed; a bigger one fails the scrape "
        "(too_large) without being inflated further.",
    )
    max_series: int = Field(
        10_000,
        gt=0,
        description="Most series kept from one page (of the families the rules and outputs read), like "
        "Prometheus' sample_limit: a page with more fails the scrape (too_many_series). Each series kept "
        "costs a few KiB (docs/adapter.md, Memory).",
    )
    failure_status: int = Field(
        503, ge=400, le=599, description="HTTP status of a failing /healthz (and of every group path)."
    )
    outputs: list[str] = Field(
        ["health"],
        description="Output plugins served on the listener: health (/healthz, /<group>z), json "
        "(/metrics.json), prometheus (/metrics, filtered and relabelled by the rules file's export section), "
        "or any installed under the entry-point group sidecars.adapter.outputs.",
    )
    push_url: str | None = Field(
        None,
        description="Receiver of the push outputs: for remote_write a Prometheus remote-write endpoint "
        "(e.g. http://prometheus:9090/api/v1/write). No credentials in it: see push_bearer_token.",
    )
    push_bearer_token: SecretStr | None = Field(
        None,
        description="Token sent to the push receiver as `Authorization: Bearer`, or from a file with the _file "
        "variant (a mounted Secret); never shown.",
    )
    otlp_url: str | None = Field(
        None,
        description="Receiver of the otlp output: an OTLP/HTTP metrics endpoint (e.g. "
        "http://collector:4318/v1/metrics); push_url when unset. No credentials in it: see otlp_bearer_token.",
        json_schema_extra={"doc_default": "`push_url`"},
    )
    otlp_bearer_token: SecretStr | None = Field(
        None,
        description="Token sent to the OTLP receiver as `Authorization: Bearer`, or from a file with the _file "
        "variant; push_bearer_token when unset; never shown.",
        json_schema_extra={"doc_default": "`push_bearer_token`"},
    )
    push_keep: list[str] = Field(
        [], description="Metric-family regexes (RE2, fully anchored) a push output sends; empty sends every family."
    )
    push_labels: list[str] = Field(
        [],
        description="Labels added to every pushed series, as name=value (e.g. pod=$(POD_NAME) from the "
        "Downward API); they replace a label of the same name on the page.",
    )
    push_batch_max_samples: int = Field(2000, gt=0, description="Most samples in one push request.")
    push_queue_max_samples: int = Field(
        100_000,
        gt=0,
        description="Most samples waiting while the receiver is slow or away; past it the oldest are dropped "
        'and counted (adapter_push_dropped_samples_total{reason="queue_full"}). About 200 B each.',
    )
    push_timeout_secs: float = Field(10.0, gt=0, description="Timeout of one push request.")
    push_max_backoff_secs: float = Field(
        30.0, gt=0, description="Longest wait between two tries of a failed batch (unless Retry-After asks more)."
    )
    flap_window_secs: float = Field(600.0, gt=0, description="Window of the rules-flapping check (see flap_changes).")
    flap_changes: int = Field(
        4,
        ge=2,
        description="Flips between passing and failing (or warning) within flap_window_secs that make a rule "
        "flapping; shown by the rules-flapping warn check. keep_firing_for or recover calm such a rule.",
    )
    rules_poll_secs: float = Field(
        5.0, gt=0, description="Interval of the modification-time check of the rules file (besides inotify)."
    )

    @model_validator(mode="before")
    @classmethod
    def _timeout_defaults_to_a_shorter_interval(cls, data: object) -> object:
        # `--scrape-interval-secs 1` alone is valid: an unset timeout follows an interval shorter than its
        # default, as in Prometheus. A timeout given explicitly above the interval is still refused below.
        if not isinstance(data, dict) or data.get("scrape_timeout_secs") is not None:
            return data
        try:
            interval = float(data.get("scrape_interval_secs", 10.0))
        except (TypeError, ValueError):
            return data  # reported by the field's own validation
        if 0 < interval < DEFAULT_SCRAPE_TIMEOUT_SECS:
            return {**data, "scrape_timeout_secs": interval}
        return data

    @model_validator(mode="before")
    @classmethod
    def _no_credentials_in_url(cls, data: object) -> object:
        # Checked on the raw input, before the field: a field error would echo the URL, password
        # included, and the URL is shown by --print-config, the logs and the probe outputs.
        url = data.get("target_url") if isinstance(data, dict) else None
        if isinstance(url, str):
            refuse_url_credentials(
                url,
                "target_url",
                "give target_basic_auth_username and target_basic_auth_password (or "
                "target_basic_auth_password_file), or target_bearer_token",
            )
        return data

    @field_validator("listen_host", mode="before")
    @classmethod
    def _listen_hosts(cls, value: object) -> object:
        return split_hosts(value)

    @field_validator("push_url", "otlp_url")
    @classmethod
    def _push_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        url = URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        if url.user is not None or url.password is not None:
            raise ValueError("must not hold credentials (user:password@); give push_bearer_token(_file)")
        return value

    @field_validator("push_labels")
    @classmethod
    def _label_pairs(cls, value: list[str]) -> list[str]:
        for item in value:
            name, eq, _ = item.partition("=")
            if not eq or not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name) or name.startswith("__"):
                raise ValueError(f"{item!r}: expected name=value with a label name (not __reserved)")
        return value

    @field_validator("push_keep")
    @classmethod
    def _keep_regexes(cls, value: list[str]) -> list[str]:
        from sidecars.adapter.promql.regex import RegexError, compile_anchored

        for pattern in value:
            try:
                compile_anchored(pattern)
            except RegexError as exc:
                raise ValueError(f"{pattern!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _push_needs_a_receiver(self) -> AdapterSettings:
        if "remote_write" in self.outputs and not self.push_url:
            raise ValueError("the remote_write output needs push_url")
        if "otlp" in self.outputs and not (self.otlp_url or self.push_url):
            raise ValueError("the otlp output needs otlp_url (or push_url)")
        return self

    def push_authorization(self) -> str | None:
        if self.push_bearer_token is None:
            return None
        return "Bearer " + self.push_bearer_token.get_secret_value()

    def otlp_authorization(self) -> str | None:
        if self.otlp_bearer_token is None:
            return self.push_authorization()
        return "Bearer " + self.otlp_bearer_token.get_secret_value()

    @field_validator("target_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator("rules_file")
    @classmethod
    def _rules_valid(cls, path: Path | None) -> Path | None:
        # Checked with the rest of the config, so `--check-config` and start-up report every problem.
        if path is not None:
            from sidecars.adapter.rules import RulesError, load_rules

            try:
                load_rules(path)
            except RulesError as exc:
                raise ValueError(exc.render()) from None
        return path

    @model_validator(mode="after")
    def _one_kind_of_auth(self) -> AdapterSettings:
        if self.target_bearer_token is not None and (
            self.target_basic_auth_username is not None or self.target_basic_auth_password is not None
        ):
            raise ValueError("choose basic auth or a bearer token for the target, not both")
        if self.target_basic_auth_password is not None and not self.target_basic_auth_username:
            raise ValueError("target_basic_auth_username is required with target_basic_auth_password")
        return self

    def target_authorization(self) -> str | None:
        """The `Authorization` header value for the target, if one is configured."""
        if self.target_bearer_token is not None:
            return "Bearer " + self.target_bearer_token.get_secret_value()
        if self.target_basic_auth_username is not None:
            password = self.target_basic_auth_password.get_secret_value() if self.target_basic_auth_password else ""
            pair = f"{self.target_basic_auth_username}:{password}".encode()
            return "Basic " + base64.b64encode(pair).decode("ascii")
        return None

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> AdapterSettings:
        if self.scrape_timeout_secs > self.scrape_interval_secs:
            raise ValueError(
                f"scrape_timeout_secs ({self.scrape_timeout_secs}) must not exceed "
                f"scrape_interval_secs ({self.scrape_interval_secs})"
            )
        return self
