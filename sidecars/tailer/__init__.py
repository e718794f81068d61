"""The tailer sidecar."""
