"""One description per injectable sidecar: everything the injector needs to add it to a Pod.

The admin ports are the sidecars' own defaults (a test compares them with each plugin's settings);
port names are unique in the Pod and at most 15 characters, as Kubernetes requires of port names
(hence `amb-admin`). Resources are what the examples measured plus headroom: memory request equal to
the limit (no overcommit for a process that buffers), a CPU request and no CPU limit (throttling a
proxy or a tailer only adds latency and lag).
"""

from __future__ import annotations

from dataclasses import dataclass

# Where every sidecar's ConfigMap is mounted; the file read is <dir>/<name>.yaml.
CONFIG_DIR = "/etc/sidecars"
# The restricted Pod Security Standard, per container, so a Pod without a pod-level securityContext
# still admits the sidecars; the images run as the numeric user 65532.
SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
# Downward API env the sidecars bind to every log line (sidecars.core.logs.POD_FIELDS).
DOWNWARD_ENV = (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"), ("NODE_NAME", "spec.nodeName"))


@dataclass(frozen=True)
class Port:
    name: str
    number: int


@dataclass(frozen=True)
class StateVolume:
    """An emptyDir the sidecar writes (outlives container restarts, not the Pod)."""

    suffix: str  # volume name: <sidecar>-<suffix>
    path: str
    size: str


@dataclass(frozen=True)
class SidecarDescription:
    name: str  # container name, image name and annotation prefix
    admin: Port
    ports: tuple[Port, ...] = ()  # served beyond the admin port
    cpu: str = "50m"
    memory: str = "96Mi"
    state: StateVolume | None = None
    reads_logs: bool = False  # mounts the app's log volume read-only

    @property
    def all_ports(self) -> tuple[Port, ...]:
        return (self.admin, *self.ports)


TAILER = SidecarDescription(
    "tailer",
    Port("tailer-admin", 9801),
    memory="128Mi",
    state=StateVolume("state", "/var/lib/sidecars/tailer", "64Mi"),
    reads_logs=True,
)
AMBASSADOR = SidecarDescription("ambassador", Port("amb-admin", 9802))
ADAPTER = SidecarDescription("adapter", Port("adapter-admin", 9803), ports=(Port("adapter-health", 8086),))

# Start order in the Pod: the tailer first (it stops last and so forwards the others' last lines),
# the adapter last. The annotation's order does not matter, so re-ordering it changes nothing.
CATALOG: dict[str, SidecarDescription] = {d.name: d for d in (TAILER, AMBASSADOR, ADAPTER)}

# The tailer's log volume when the Pod names none: an emptyDir mounted into every app container.
LOGS_VOLUME = "tailer-logs"
LOGS_PATH = "/var/log/app"
LOGS_SIZE = "256Mi"
