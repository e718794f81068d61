"""The framework every sidecar is built on: plugin contract, runtime, admin server, config, logs, metrics."""

from sidecars.core.plugin import Check, Command, Context, Figures, Sidecar
from sidecars.core.settings import SidecarSettings, secret

__all__ = ["Check", "Command", "Context", "Figures", "Sidecar", "SidecarSettings", "secret"]
