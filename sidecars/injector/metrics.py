"""The webhook's own series (`injector_*`); labels are fixed vocabularies."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from sidecars.injector.review import OUTCOMES, REASONS


class InjectorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.reviews = Counter(
            "injector_reviews",
            "AdmissionReviews answered, by outcome (injected, unchanged, skipped, refused) and dry_run.",
            ["outcome", "dry_run"],
            registry=registry,
        )
        self.refused = Counter(
            "injector_refused_reviews",
            "Reviews answered without injecting because of a problem (the Pod is admitted as it is), by reason "
            "(malformed, invalid, error, too_large).",
            ["reason"],
            registry=registry,
        )
        self.certificate_reloads = Counter(
            "injector_certificate_reloads",
            "Certificate changes seen, by result (ok, rejected: the previous certificate stays in use).",
            ["result"],
            registry=registry,
        )
        self.certificate_loaded = Gauge(
            "injector_certificate_loaded_timestamp_seconds",
            "Unix time the certificate in use was loaded.",
            registry=registry,
        )
        for outcome in OUTCOMES:
            for dry in ("false", "true"):
                self.reviews.labels(outcome=outcome, dry_run=dry)
        for reason in (*REASONS, "too_large"):
            self.refused.labels(reason=reason)
        for result in ("ok", "rejected"):
            self.certificate_reloads.labels(result=result)
