"""The framework every sidecar is built on: plugin contract, runtime, admin server, config, logs, metrics."""

from sidecars.core.plugin import Check, Command, Context, Sidecar
from sidecars.core.settings import SidecarSettings, secret

__all__ = ["Check", "Command", "Context", "Sidecar", "SidecarSettings", "secret"]
