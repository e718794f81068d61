"""Sidecar containers for Kubernetes Pods on one asyncio framework."""

__version__ = "0.1.0"
