"""The adapter's options: what to scrape, which rules, where to serve the verdicts."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from sidecars.core import SidecarSettings


class AdapterSettings(SidecarSettings):
    env_prefix = "ADAPTER_"

    admin_port: int = Field(
        9803, ge=0, le=65535, description="Port of the sidecar's own admin server (probes of the adapter itself)."
    )
    target_url: str = Field(
        "http://127.0.0.1:8080/metrics",
        description="The app's Prometheus endpoint, scraped over localhost (the Pod shares one network).",
    )
    rules_file: Path | None = Field(
        None,
        description="YAML file of health rules (usually a mounted ConfigMap); reloaded on change. "
        "Without it only the built-in `scrape` check runs.",
    )
    listen_host: str = Field(
        "0.0.0.0",
        description="Address of the listener serving /healthz and the other outputs. The kubelet probes "
        "the Pod IP, not localhost, so the default listens on every interface.",
    )
    listen_port: int = Field(8086, ge=0, le=65535, description="Port of that listener; 0 picks a free one.")
    scrape_interval_secs: float = Field(10.0, gt=0, description="Time between two scrapes of the target.")
    scrape_timeout_secs: float = Field(
        5.0, gt=0, description="A scrape (connect, response, body) must finish within this; at most the interval."
    )
    # The two limits bound the memory: about 50 MiB + max_body_bytes + 2 KiB x max_series at the peak
    # of a scrape; the Pod examples' memory limit (256Mi) holds the defaults (docs/adapter.md).
    max_body_bytes: int = Field(
        50_000_000,
        gt=0,
        description="Largest page accepted, counted while it is decompressed; a bigger one fails the scrape "
        "(too_large) without being inflated further.",
    )
    max_series: int = Field(
        50_000,
        gt=0,
        description="Most series kept from one page (of the families the rules and outputs read), like "
        "Prometheus' sample_limit: a page with more fails the scrape (too_many_series). Memory grows by "
        "about 2 KiB per series kept.",
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
    rules_poll_secs: float = Field(
        5.0, gt=0, description="Interval of the modification-time check of the rules file (besides inotify)."
    )

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
    def _timeout_within_interval(self) -> AdapterSettings:
        if self.scrape_timeout_secs > self.scrape_interval_secs:
            raise ValueError(
                f"scrape_timeout_secs ({self.scrape_timeout_secs}) must not exceed "
                f"scrape_interval_secs ({self.scrape_interval_secs})"
            )
        return self
