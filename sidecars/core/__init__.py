"""The framework every sidecar is built on: plugin contract, runtime, admin server, config, logs, metrics."""

from sidecars.core.plugin import Check, Context, Sidecar
from sidecars.core.settings import SidecarSettings, secret

__all__ = ["Check", "Context", "Sidecar", "SidecarSettings", "secret"]
