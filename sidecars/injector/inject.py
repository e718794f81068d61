"""The injection itself: a Pod template in, the same template with the requested sidecars out.

Pure: the input is never modified; the output is a deep copy with the sidecars, their volumes, the
mounts of the tailer's log volume and a marker annotation added. The marker (`sidecars.io/injected`)
records what was added, so injecting again first removes exactly that and adds it anew: injecting
twice equals injecting once, a changed annotation updates the sidecars, and a template whose
`sidecars.io/inject` was removed gets them removed. Nothing that was not added is ever touched.

Works on any mapping types, plain dicts (JSON from the API server) and ruamel's commented maps
(files whose comments and key order are kept) alike.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Collection, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sidecars
from sidecars.core.config import CONFIG_ENV
from sidecars.injector import annotations as ann
from sidecars.injector.catalog import (
    CATALOG,
    CONFIG_DIR,
    DOWNWARD_ENV,
    LOGS_PATH,
    LOGS_SIZE,
    LOGS_VOLUME,
    SECURITY_CONTEXT,
    SidecarDescription,
)
from sidecars.injector.errors import InjectionError, Problem

SHUTDOWN_ENV = "SIDECAR_SHUTDOWN_TIMEOUT_SECS"
DEFAULT_GRACE_SECS = 30  # the API server's default terminationGracePeriodSeconds
NAME_ATTEMPTS = 9  # volume-name suffixes tried (-2 .. -9) before giving up
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
MAX_MARKER_CHARS = 4096


@dataclass(frozen=True)
class Options:
    """How to inject, beyond what each template's annotations say."""

    classic: bool = False  # ordinary containers, for clusters before 1.29
    image_prefix: str = "sidecars"
    image_tag: str = sidecars.__version__
    images: Mapping[str, str] = field(default_factory=dict)  # sidecar -> full image reference

    def image(self, name: str, requested: str | None) -> str:
        return requested or self.images.get(name) or f"{self.image_prefix}/{name}:{self.image_tag}"


@dataclass(frozen=True)
class Marker:
    """What an earlier injection added to a template."""

    sidecars: tuple[str, ...]
    volumes: tuple[str, ...]
    mode: str
    version: str

    def render(self) -> str:
        body = {"version": self.version, "mode": self.mode, "sidecars": self.sidecars, "volumes": self.volumes}
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def parse(cls, text: object) -> Marker:
        """The marker in an annotation's value; ValueError when it is not one the injector wrote."""
        try:
            body = json.loads(text) if isinstance(text, str) and len(text) <= MAX_MARKER_CHARS else None
        except ValueError:
            body = None
        names = body.get("sidecars") if isinstance(body, dict) else None
        volumes = body.get("volumes") if isinstance(body, dict) else None
        if not (isinstance(names, list) and isinstance(volumes, list)) or not all(
            isinstance(n, str) for n in [*names, *volumes]
        ):
            raise ValueError("not a marker written by sidecars inject")
        assert isinstance(body, dict)
        return cls(tuple(names), tuple(volumes), str(body.get("mode", "")), str(body.get("version", "")))


@dataclass
class Outcome:
    template: Any  # the new template, or the input itself when nothing changed
    changed: bool
    injected: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)  # guidance: worth reading, not fatal


def shutdown_budget_secs(grace_secs: int) -> int:
    """Each sidecar's shutdown budget: two thirds of the Pod's grace period, at least 1 s.

    The kubelet gives one grace period to the whole Pod: with native sidecars the app is stopped
    first and the sidecars only after it exits, so they must finish well within what is left.
    """
    return max(1, grace_secs * 2 // 3)


def has_marker(template: Mapping[str, Any]) -> bool:
    metadata = template.get("metadata")
    return isinstance(metadata, Mapping) and ann.INJECTED in (metadata.get("annotations") or {})


def plain(value: object) -> Any:
    """Plain dicts and lists, for comparisons that must not depend on key order or YAML types."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def inject_template(
    template: Mapping[str, Any],
    options: Options,
    *,
    where: str,
    path: str = "",
    claim_names: Collection[str] = (),
) -> Outcome:
    """Inject what `template`'s annotations ask for; raises InjectionError naming each problem.

    `template` is a Pod or a Pod template (a mapping with `metadata` and `spec`); `where` names its
    document and `path` the template's place in it (`spec.template.`), both for error messages.
    `claim_names` are a StatefulSet's volumeClaimTemplates: volumes of the Pod too.
    """
    metadata = template.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    if annotations is not None and not isinstance(annotations, Mapping):
        raise InjectionError([Problem(where, f"{path}metadata.annotations", "must be a mapping")])
    request = ann.read(annotations)
    problems = [Problem(where, path + f, m) for f, m in request.problems]
    marker: Marker | None = None
    if annotations is not None and ann.INJECTED in annotations:
        try:
            marker = Marker.parse(annotations[ann.INJECTED])
        except ValueError as exc:
            problems.append(Problem(where, path + ann.field_of(ann.INJECTED), str(exc)))
    if problems:
        raise InjectionError(problems)
    if not request.sidecars and marker is None:
        return Outcome(template, changed=False)

    new: MutableMapping[str, Any] = copy.deepcopy(template)  # type: ignore[arg-type]
    spec = new.get("spec")
    if not isinstance(spec, MutableMapping):
        raise InjectionError([Problem(where, f"{path}spec", "missing, or not a mapping")])
    _check_shape(spec, where, path)
    if marker is not None:
        _strip(spec, marker)
    notes: list[str] = []
    volumes_added: list[str] = []
    if request.sidecars:
        _Adder(spec, request, options, where, path, notes, volumes_added, claim_names).add()
    new_metadata = new.setdefault("metadata", {})
    new_annotations = new_metadata.get("annotations")
    if request.sidecars:
        mode = "classic" if options.classic else "native"
        names = tuple(s.name for s in request.sidecars)
        text = Marker(names, tuple(volumes_added), mode, sidecars.__version__).render()
        if new_annotations is None:
            new_metadata["annotations"] = {ann.INJECTED: text}
        else:
            new_annotations[ann.INJECTED] = text
    elif new_annotations is not None:
        del new_annotations[ann.INJECTED]
    changed = plain(new) != plain(template)
    injected = tuple(s.name for s in request.sidecars)
    return Outcome(new if changed else template, changed, injected, notes)


def _check_shape(spec: Mapping[str, Any], where: str, path: str) -> None:
    problems = []
    for key in CONTAINER_LISTS:
        items = spec.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            problems.append(Problem(where, f"{path}spec.{key}", "must be a list"))
            continue
        for i, c in enumerate(items):
            if not isinstance(c, Mapping) or not isinstance(c.get("name"), str):
                problems.append(Problem(where, f"{path}spec.{key}[{i}]", "must be a mapping with a name"))
    if not spec.get("containers"):
        problems.append(Problem(where, f"{path}spec.containers", "missing or empty: a Pod needs a container"))
    volumes = spec.get("volumes")
    if volumes is not None and not (
        isinstance(volumes, list) and all(isinstance(v, Mapping) and isinstance(v.get("name"), str) for v in volumes)
    ):
        problems.append(Problem(where, f"{path}spec.volumes", "must be a list of mappings with a name"))
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool) or grace < 0):
        problems.append(Problem(where, f"{path}spec.terminationGracePeriodSeconds", "must be a whole number >= 0"))
    if problems:
        raise InjectionError(problems)


def _strip(spec: MutableMapping[str, Any], marker: Marker) -> None:
    """Remove what `marker` says an earlier injection added."""
    for key in ("initContainers", "containers"):
        items = spec.get(key)
        if isinstance(items, list):
            items[:] = [c for c in items if c.get("name") not in marker.sidecars]
            if not items and key == "initContainers":
                del spec[key]
    volumes = spec.get("volumes")
    if isinstance(volumes, list):
        volumes[:] = [v for v in volumes if v.get("name") not in marker.volumes]
        if not volumes:
            del spec["volumes"]
    for c in _containers(spec):
        mounts = c.get("volumeMounts")
        if isinstance(mounts, list):
            mounts[:] = [m for m in mounts if not (isinstance(m, Mapping) and m.get("name") in marker.volumes)]
            if not mounts:
                del c["volumeMounts"]


def _containers(spec: Mapping[str, Any]) -> Iterator[MutableMapping[str, Any]]:
    for key in CONTAINER_LISTS:
        yield from spec.get(key) or []


def insert_key(mapping: MutableMapping[str, Any], key: str, value: object, before: Sequence[str]) -> None:
    """Add `key` before the first of `before` present (key order as people write Pod specs)."""
    keys = list(mapping)
    pos = next((keys.index(b) for b in before if b in mapping), len(keys))
    if hasattr(mapping, "insert"):  # ruamel's CommentedMap: keeps the comments attached to keys
        mapping.insert(pos, key, value)
        return
    tail = [(k, mapping.pop(k)) for k in keys[pos:]]
    mapping[key] = value
    mapping.update(tail)


class _Adder:
    """Adds the requested sidecars to one (already stripped) Pod spec, collecting every problem."""

    def __init__(
        self,
        spec: MutableMapping[str, Any],
        request: ann.Request,
        options: Options,
        where: str,
        path: str,
        notes: list[str],
        volumes_added: list[str],
        claim_names: Collection[str],
    ) -> None:
        self.spec, self.request, self.options = spec, request, options
        self.where, self.path, self.notes, self.volumes_added = where, path, notes, volumes_added
        self.problems: list[Problem] = []
        self.volume_names = {v["name"] for v in spec.get("volumes") or []} | set(claim_names)

    def problem(self, fld: str, message: str) -> None:
        self.problems.append(Problem(self.where, self.path + fld, message))

    def add(self) -> None:
        spec = self.spec
        self._check_names_and_ports()
        grace = spec.get("terminationGracePeriodSeconds")
        budget = self.request.shutdown_timeout_secs or shutdown_budget_secs(
            DEFAULT_GRACE_SECS if grace is None else int(grace)
        )
        logs_mount = self._logs_mount() if self.request.get("tailer") else None
        built = []
        for req in self.request.sidecars:
            desc = CATALOG[req.name]
            mounts = []
            if req.config:
                vol = self._volume(f"{desc.name}-config", {"configMap": {"name": req.config}})
                mounts.append({"name": vol, "mountPath": CONFIG_DIR, "readOnly": True})
            if desc.reads_logs and logs_mount is not None:
                mounts.append({"name": logs_mount[0], "mountPath": logs_mount[1], "readOnly": True})
            if desc.state is not None:
                vol = self._volume(f"{desc.name}-{desc.state.suffix}", {"emptyDir": {"sizeLimit": desc.state.size}})
                mounts.append({"name": vol, "mountPath": desc.state.path})
            built.append(self._container(desc, req, budget, mounts))
        if self.problems:
            raise InjectionError(self.problems)
        if spec.get("enableServiceLinks") is not False:
            self.notes.append(
                f"{self.path}spec.enableServiceLinks is not false: each Service of the namespace adds env "
                "vars to every container, the sidecars' too; set it to false unless the app reads them"
            )
        key = "containers" if self.options.classic else "initContainers"
        if key not in spec:
            insert_key(spec, key, [], ["containers"] if key == "initContainers" else [])
        spec[key].extend(built)

    def _check_names_and_ports(self) -> None:
        ours = {p.number: (d.name, p) for d in CATALOG.values() if self.request.get(d.name) for p in d.all_ports}
        our_names = {p.name: d.name for d in CATALOG.values() if self.request.get(d.name) for p in d.all_ports}
        for key in CONTAINER_LISTS:
            for i, c in enumerate(self.spec.get(key) or []):
                here = f"spec.{key}[{i}]"
                if self.request.get(c["name"]):
                    self.problem(
                        f"{here}.name",
                        f"a container named {c['name']!r} is already in the Pod and was not added by sidecars "
                        f"inject: rename it, or take {c['name']!r} out of {ann.INJECT}",
                    )
                ports = c.get("ports") or []
                for j, port in enumerate(ports if isinstance(ports, list) else []):
                    if not isinstance(port, Mapping):
                        continue
                    number, name = port.get("containerPort"), port.get("name")
                    if number in ours:
                        sidecar, p = ours[number]
                        self.problem(
                            f"{here}.ports[{j}].containerPort",
                            f"port {number} is the {sidecar}'s ({p.name}); the containers of a Pod share one "
                            "network, so they cannot both listen on it",
                        )
                    if name in our_names:
                        self.problem(f"{here}.ports[{j}].name", f"port name {name!r} is the {our_names[name]}'s")

    def _logs_mount(self) -> tuple[str, str] | None:
        """(volume, path) of the app's logs, adding the emptyDir and its mounts when the Pod names none."""
        named, path = self.request.logs_volume, self.request.logs_path
        app = list(self.spec.get("containers") or [])
        if named is not None:
            if named not in self.volume_names:
                self.problem(ann.field_of(ann.LOGS_VOLUME), f"no volume named {named!r} in the Pod's volumes")
                return None
            if path is None:
                path = next(
                    (
                        m.get("mountPath")
                        for c in app
                        for m in c.get("volumeMounts") or []
                        if isinstance(m, Mapping) and m.get("name") == named
                    ),
                    None,
                )
            if not isinstance(path, str):
                self.problem(
                    ann.field_of(ann.LOGS_VOLUME),
                    f"no app container mounts {named!r}; set {ann.LOGS_PATH} to where the logs are",
                )
                return None
            return named, path
        path = path or LOGS_PATH
        for i, c in enumerate(app):
            for j, m in enumerate(c.get("volumeMounts") or []):
                if isinstance(m, Mapping) and m.get("mountPath") == path:
                    self.problem(
                        f"spec.containers[{i}].volumeMounts[{j}].mountPath",
                        f"{c['name']!r} already mounts {m.get('name')!r} at {path}: name that volume in "
                        f"{ann.LOGS_VOLUME}, or set {ann.LOGS_PATH} to another path",
                    )
        if self.problems:
            return None
        volume = self._volume(LOGS_VOLUME, {"emptyDir": {"sizeLimit": LOGS_SIZE}})
        for c in app:
            c.setdefault("volumeMounts", []).append({"name": volume, "mountPath": path})
        return volume, path

    def _volume(self, base: str, source: dict[str, Any]) -> str:
        """Add a volume named `base`, or base-2, base-3, ... when the Pod already has one so named."""
        candidates = [base] + [f"{base}-{n}" for n in range(2, NAME_ATTEMPTS + 1)]
        name = next((n for n in candidates if n not in self.volume_names), None)
        if name is None:
            self.problem("spec.volumes", f"volumes {base} to {candidates[-1]} all exist; rename some")
            return base
        if name != base:
            self.notes.append(f"{self.path}spec.volumes: a volume {base!r} exists already; the sidecar's is {name!r}")
        self.volume_names.add(name)
        self.volumes_added.append(name)
        if "volumes" not in self.spec:
            insert_key(self.spec, "volumes", [], ["initContainers", "containers"])
        self.spec["volumes"].append({"name": name, **source})
        return name

    def _container(
        self, desc: SidecarDescription, req: ann.SidecarRequest, budget: int, mounts: list[dict[str, Any]]
    ) -> dict[str, Any]:
        c: dict[str, Any] = {
            "name": desc.name,
            "image": self.options.image(desc.name, req.image),
            "imagePullPolicy": "IfNotPresent",
        }
        if not self.options.classic:
            c["restartPolicy"] = "Always"  # a native sidecar: started before the app, stopped after it
        env: list[dict[str, Any]] = []
        if req.config:
            env.append({"name": CONFIG_ENV, "value": f"{CONFIG_DIR}/{desc.name}.yaml"})
        env.append({"name": SHUTDOWN_ENV, "value": str(budget)})
        env += [{"name": var, "valueFrom": {"fieldRef": {"fieldPath": path}}} for var, path in DOWNWARD_ENV]
        c["env"] = env
        c["ports"] = [{"name": p.name, "containerPort": p.number} for p in desc.all_ports]
        admin = desc.admin.name
        c["startupProbe"] = _probe("/startupz", admin, period=1, failures=30)
        c["readinessProbe"] = _probe("/readyz", admin, period=5, failures=3)
        c["livenessProbe"] = _probe("/livez", admin, period=10, failures=3)
        memory = req.memory or desc.memory
        c["resources"] = {"requests": {"cpu": req.cpu or desc.cpu, "memory": memory}, "limits": {"memory": memory}}
        c["securityContext"] = copy.deepcopy(SECURITY_CONTEXT)
        if mounts:
            c["volumeMounts"] = mounts
        return c


def _probe(path: str, port: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 1,
        "failureThreshold": failures,
    }
