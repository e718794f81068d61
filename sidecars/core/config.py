"""Settings from CLI flags, env vars and an optional YAML file: one typed model per sidecar.

Precedence is flag > env > file > default. Every problem is collected and reported at once, each
naming where the bad value came from (`--admin-port`, `env SIDECAR_ADMIN_PORT`, `app.yaml:3 admin_port`),
before anything starts. Conventions for text values (flags and env vars):

- scalars are given as text and converted by the model (`8080`, `true`, `2.5`);
- list fields take comma-separated items (`a,b`), or a flag repeated; dict fields take `k=v,k2=v2`;
- any value starting with `[` or `{` is read as YAML/JSON, the way to give nested structures.

A secret field `token` also accepts `--token-file`, `<PREFIX>TOKEN_FILE` and the key `token_file`:
the file's content (trailing newline removed) becomes the value, as Kubernetes mounts Secrets.
"""

from __future__ import annotations

import argparse
import difflib
import enum
import os
import re
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo

from sidecars.core.redact import MARKER as _REDACTED
from sidecars.core.redact import SECRET_KEY as _SECRET_KEY
from sidecars.core.redact import redact_text
from sidecars.core.settings import SidecarSettings

CONFIG_ENV = "SIDECAR_CONFIG"


class Kind(enum.Enum):
    SCALAR = "scalar"
    BOOL = "bool"
    LIST = "list"
    DICT = "dict"
    COMPLEX = "complex"  # nested models and anything else: YAML/JSON text


@dataclass(frozen=True)
class Option:
    """One settings field as the three sources spell it."""

    name: str
    flag: str
    env: str
    kind: Kind
    secret: bool
    required: bool
    info: FieldInfo

    def default_text(self) -> str:
        if self.required:
            return "required"
        default = self.info.get_default(call_default_factory=True)
        if self.secret and default is not None:
            return _REDACTED
        if isinstance(default, enum.Enum):
            default = default.value
        if isinstance(default, list | tuple) and all(isinstance(v, str | int | float) for v in default):
            return ",".join(str(v) for v in default) or "[]"
        if isinstance(default, BaseModel):
            return "{...}"
        return str(default)


@dataclass(frozen=True)
class Problem:
    where: str
    message: str

    def __str__(self) -> str:
        # A message may quote a URL the user gave (a validator's "got ..."): shown without its credentials.
        return redact_text(f"{self.where}: {self.message}")


class WarningKind(enum.Enum):
    UNKNOWN_ENV = "unknown_env"  # a typo, most likely: `--check-config` fails on it
    SERVICE_LINK = "service_link"  # Kubernetes' doing, not the operator's: only noted


@dataclass(frozen=True)
class ConfigWarning:
    """Something the sidecar starts despite, and logs: one env var and what was made of it."""

    kind: WarningKind
    env: str
    message: str

    def __str__(self) -> str:
        return f"env {self.env}: {self.message}"


class ConfigError(Exception):
    """Every problem found in the configuration, with where each came from."""

    def __init__(self, problems: Sequence[Problem], warnings: Sequence[ConfigWarning] = ()) -> None:
        self.problems = list(problems)
        self.warnings = list(warnings)  # what start-up would have warned about, for `--check-config`
        super().__init__(self.render())

    def render(self) -> str:
        count = len(self.problems)
        head = f"invalid configuration ({count} problem{'s' if count != 1 else ''}):"
        # A message may span lines (a rules file's own problem list): keep it under its bullet.
        return "\n".join([head, *("  - " + str(p).replace("\n", "\n    ") for p in self.problems)])


@dataclass
class Loaded:
    """Validated settings plus where each non-default value came from."""

    settings: SidecarSettings
    sources: dict[str, str] = field(default_factory=dict)
    warnings: list[ConfigWarning] = field(default_factory=list)


def options(model: type[SidecarSettings]) -> list[Option]:
    common = set(SidecarSettings.model_fields)
    result = []
    for name, info in model.model_fields.items():
        prefix = model.common_env_prefix if name in common else model.env_prefix
        annotation = info.annotation
        result.append(
            Option(
                name=name,
                flag="--" + name.replace("_", "-"),
                env=prefix + name.upper(),
                kind=_kind(annotation),
                secret=_is_secret(info),
                required=info.is_required(),
                info=info,
            )
        )
    return result


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _kind(annotation: Any) -> Kind:
    annotation = _unwrap_optional(annotation)
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return Kind.BOOL
    if origin in (list, tuple, set, frozenset, Sequence):
        args = typing.get_args(annotation)
        inner = _unwrap_optional(args[0]) if args else str
        scalar = isinstance(inner, type) and issubclass(inner, str | int | float | Path)
        return Kind.LIST if scalar else Kind.COMPLEX
    if origin in (dict, Mapping):
        return Kind.DICT
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return Kind.COMPLEX
    return Kind.SCALAR


def _is_secret(info: FieldInfo) -> bool:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and extra.get("secret"):
        return True
    return _unwrap_optional(info.annotation) is SecretStr


# ---------------------------------------------------------------------------------------------- parsing


def parse_text(option: Option, text: str) -> Any:
    """Turn one flag or env value into what the model validates; raises ValueError with a hint."""
    stripped = text.strip()
    if stripped[:1] in ("[", "{") and option.kind is not Kind.SCALAR:
        try:
            return yaml.safe_load(stripped)
        except yaml.YAMLError as exc:
            raise ValueError(f"not valid YAML/JSON: {_yaml_reason(exc)}") from None
    if option.kind is Kind.LIST:
        return [item.strip() for item in text.split(",") if item.strip()]
    if option.kind is Kind.DICT:
        pairs = {}
        for item in filter(None, (i.strip() for i in text.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"expected key=value pairs separated by commas, got {item!r}")
            pairs[key.strip()] = value.strip()
        return pairs
    if option.kind is Kind.COMPLEX:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"not valid YAML/JSON: {_yaml_reason(exc)}") from None
    return text


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


@dataclass
class _FileValues:
    path: Path
    values: dict[str, Any]
    node: yaml.MappingNode | None

    def where(self, loc: Sequence[int | str]) -> str:
        """`file:line key.sub` for a location in the file, using the YAML node marks."""
        node: yaml.Node | None = self.node
        line = None
        for part in loc:
            found = None
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    if key_node.value == str(part):
                        line, found = key_node.start_mark.line + 1, value_node
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                found = node.value[part]
                line = found.start_mark.line + 1
            node = found
            if node is None:
                break
        dotted = ".".join(str(p) for p in loc)
        return f"{self.path}:{line} {dotted}" if line else f"{self.path} {dotted}"


def read_config_file(path: Path) -> tuple[_FileValues | None, list[Problem]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [Problem(str(path), f"cannot read config file: {exc.strerror or exc}")]
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return None, [Problem(str(path), f"not valid YAML: {_yaml_reason(exc)}")]
    if data is None:
        return _FileValues(path, {}, None), []
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        return None, [Problem(str(path), "the config file must be a mapping of option names to values")]
    return _FileValues(path, data, node), []


def _read_secret_file(path_text: str, where: str, problems: list[Problem]) -> str | None:
    try:
        return Path(path_text).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        problems.append(Problem(where, f"cannot read secret file {path_text}: {exc.strerror or exc}"))
        return None


def load(
    model: type[SidecarSettings],
    *,
    flags: Mapping[str, list[str]] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Loaded:
    """Merge the three sources over the defaults and validate; raises ConfigError listing every problem.

    `flags` maps a field name to the texts given on the command line (a list: flags may repeat);
    a secret's file variant is the field name plus `_file`.
    """
    flags = flags or {}
    environ = os.environ if environ is None else environ
    opts = options(model)
    problems: list[Problem] = []
    warnings: list[ConfigWarning] = []
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    file_values = None
    if config_file is not None:
        file_values, file_problems = read_config_file(config_file)
        problems += file_problems

    for opt in opts:
        got = _from_flags(opt, flags, problems)
        if got is None:
            got = _from_env(opt, environ, problems, warnings)
        if got is None and file_values is not None:
            got = _from_file(opt, file_values, problems)
        if got is not None:
            sources[opt.name], values[opt.name] = got

    known_file_keys = {o.name for o in opts} | {o.name + "_file" for o in opts if o.secret}
    if file_values is not None:
        for key in file_values.values:
            if key not in known_file_keys:
                problems.append(Problem(file_values.where([key]), f"unknown option {key!r}{_suggest(key, opts)}"))

    warnings += _unknown_env(model, opts, environ)
    values = {name: fold_choices(model.model_fields[name].annotation, value) for name, value in values.items()}

    settings = None
    try:
        settings = model.model_validate(values)
    except ValidationError as exc:
        for err in exc.errors():
            problems.append(_problem_for(err, model, opts, values, sources, file_values))
    if problems or settings is None:
        raise ConfigError(problems, warnings)
    return Loaded(settings=settings, sources=sources, warnings=warnings)


def _from_flags(opt: Option, flags: Mapping[str, list[str]], problems: list[Problem]) -> tuple[str, Any] | None:
    texts = flags.get(opt.name)
    if opt.secret and not texts and flags.get(opt.name + "_file"):
        where = opt.flag + "-file"
        secret_text = _read_secret_file(flags[opt.name + "_file"][-1], where, problems)
        return (where, secret_text) if secret_text is not None else None
    if not texts:
        return None
    try:
        if opt.kind is Kind.LIST and len(texts) > 1:
            merged: list[Any] = []
            for text in texts:
                merged += parse_text(opt, text)
            return opt.flag, merged
        return opt.flag, parse_text(opt, texts[-1])
    except ValueError as exc:
        problems.append(Problem(opt.flag, str(exc)))
        return None


def _from_env(
    opt: Option, environ: Mapping[str, str], problems: list[Problem], warnings: list[ConfigWarning]
) -> tuple[str, Any] | None:
    if opt.env in environ and is_service_link(opt, environ[opt.env]):
        warnings.append(
            ConfigWarning(
                WarningKind.SERVICE_LINK,
                opt.env,
                f"ignored: {environ[opt.env]!r} is the address Kubernetes injects for a Service named "
                f"{_service_name(opt.env)!r}, not a value of {opt.name} (set enableServiceLinks: false in the Pod)",
            )
        )
        return None
    if opt.env in environ:
        where = f"env {opt.env}"
        try:
            return where, parse_text(opt, environ[opt.env])
        except ValueError as exc:
            problems.append(Problem(where, str(exc)))
            return None
    if opt.secret and opt.env + "_FILE" in environ:
        where = f"env {opt.env}_FILE"
        secret_text = _read_secret_file(environ[opt.env + "_FILE"], where, problems)
        return (where, secret_text) if secret_text is not None else None
    return None


def _from_file(opt: Option, file_values: _FileValues, problems: list[Problem]) -> tuple[str, Any] | None:
    if opt.name in file_values.values:
        return file_values.where([opt.name]), file_values.values[opt.name]
    if opt.secret and opt.name + "_file" in file_values.values:
        where = file_values.where([opt.name + "_file"])
        secret_text = _read_secret_file(str(file_values.values[opt.name + "_file"]), where, problems)
        return (where, secret_text) if secret_text is not None else None
    return None


# What the kubelet injects for a Service `my-svc` (unless the Pod sets enableServiceLinks: false):
# MY_SVC_SERVICE_HOST, MY_SVC_SERVICE_PORT[_NAME], MY_SVC_PORT=tcp://10.96.0.12:80 and
# MY_SVC_PORT_80_TCP[_PROTO|_PORT|_ADDR]. Bounded: the variable names are matched at their end only.
_SERVICE_VAR = re.compile(r"_(SERVICE_HOST|SERVICE_PORT\w*|PORT(_\d+_(TCP|UDP|SCTP)\w*)?)$")
_SERVICE_LINK_VALUE = re.compile(r"(tcp|udp|sctp)://[0-9A-Fa-f.:\[\]]{2,64}:\d{1,5}")


def is_service_link(opt: Option, text: str) -> bool:
    """A `_port` or `_host` option holding `tcp://IP:PORT`: a Service link Kubernetes put in the env.

    A Service named `sidecar-admin` makes `SIDECAR_ADMIN_PORT=tcp://10.96.0.12:9801`, which no port
    or host option can mean; taken as the value it would stop the sidecar, so it is ignored with a warning.
    """
    return opt.name.endswith(("_port", "_host")) and _SERVICE_LINK_VALUE.fullmatch(text.strip()) is not None


def _service_name(env: str) -> str:
    return env.removesuffix("_PORT").removesuffix("_HOST").lower().replace("_", "-")


def _unknown_env(model: type[SidecarSettings], opts: list[Option], environ: Mapping[str, str]) -> list[ConfigWarning]:
    """Env vars with our prefixes that match no option: warned about, not fatal.

    Kubernetes injects `<SERVICE>_PORT`-style variables for every Service in the namespace, so a
    Service named like a prefix must not stop the sidecar; a typo still gets a visible warning.
    """
    known = {o.env for o in opts} | {o.env + "_FILE" for o in opts if o.secret} | {CONFIG_ENV}
    prefixes = {model.common_env_prefix, model.env_prefix}
    warnings = []
    for name in sorted(environ):
        if any(name.startswith(p) for p in prefixes) and name not in known and not _SERVICE_VAR.search(name):
            close = closest(name, sorted(known))
            hint = f" (did you mean {close}?)" if close else ""
            warnings.append(ConfigWarning(WarningKind.UNKNOWN_ENV, name, f"matches no option and is ignored{hint}"))
    return warnings


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate `name` was most likely meant to be: a near spelling, or the one it ends.

    `batch_linez` -> `batch_lines`; `password` -> `basic_auth_password` (a key given without its
    qualifying prefix, which spelling similarity alone misses).
    """
    names = list(candidates)
    folded = {n.lower(): n for n in names}
    if name.lower() in folded:
        return folded[name.lower()]
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        return close[0]
    separators = "_-"
    ends = [n for n in names if len(name) >= 3 and n.lower().endswith(name.lower()) and n[-len(name) - 1] in separators]
    return min(ends, key=len) if ends else None


def _suggest(key: str, opts: Sequence[Option] | Iterable[str]) -> str:
    names = [o.name if isinstance(o, Option) else o for o in opts]
    close = closest(key, names)
    return f" (did you mean {close!r}?)" if close else ""


# Spellings other tools use for a choice: `WARN` for `warning` (Go, Java, syslog).
CHOICE_ALIASES = {"warn": "warning"}


def fold_choices(annotation: Any, value: Any) -> Any:
    """`value` with every text given for a fixed choice (a Literal) in the choice's own spelling.

    `INFO` becomes `info`, `WARN` becomes `warning`, also inside nested models and lists
    (`listeners[].mode: HTTP`); anything that matches no choice is left for the model to refuse.
    """
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return fold_choices(typing.get_args(annotation)[0], value)
    if origin is typing.Literal:
        if not isinstance(value, str):
            return value
        choices = [c for c in typing.get_args(annotation) if isinstance(c, str)]
        lowered = {c.lower(): c for c in choices}
        key = value.strip().lower()
        if key not in lowered and CHOICE_ALIASES.get(key) in lowered:
            key = CHOICE_ALIASES[key]
        return lowered.get(key, value)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            folded = fold_choices(arg, value)
            if folded is not value:
                return folded
        return value
    if origin in (list, tuple, set, frozenset, Sequence) and isinstance(value, list):
        args = typing.get_args(annotation)
        return [fold_choices(args[0], v) for v in value] if args else value
    if origin in (dict, Mapping) and isinstance(value, dict):
        args = typing.get_args(annotation)
        return {k: fold_choices(args[1], v) for k, v in value.items()} if len(args) == 2 else value
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(value, dict):
        fields = annotation.model_fields
        return {k: fold_choices(fields[k].annotation, v) if k in fields else v for k, v in value.items()}
    return value


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a field's values are validated as: `Model`, `Model | None`, `list[Model]`."""
    annotation = _unwrap_optional(annotation)
    if typing.get_origin(annotation) in (list, tuple, Sequence):
        args = typing.get_args(annotation)
        annotation = _unwrap_optional(args[0]) if args else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def nested_model(model: type[BaseModel], path: Sequence[int | str], values: Any) -> type[BaseModel] | None:
    """The model at `path` inside `model` (list indexes skipped), for naming the keys it knows.

    A settings model names the model of a free-form field itself (`nested_settings`): the
    tailer's `sink_config` is validated by the chosen sink's settings.
    """
    current: type[BaseModel] | None = model
    data = values
    for part in path:
        if isinstance(part, int):
            data = data[part] if isinstance(data, list) and part < len(data) else None
            continue
        if current is None:
            return None
        found = None
        if issubclass(current, SidecarSettings) and part in (chosen := current.nested_settings()):
            chooser, models = chosen[part]
            given = data.get(chooser) if isinstance(data, Mapping) else None
            found = models.get(str(given if given is not None else current.model_fields[chooser].default))
        else:
            info = current.model_fields.get(part)
            found = _model_of(info.annotation) if info is not None else None
        current = found
        data = data.get(part) if isinstance(data, Mapping) else None
    return current


def _problem_for(
    err: Mapping[str, Any],
    model: type[SidecarSettings],
    opts: list[Option],
    values: Mapping[str, Any],
    sources: Mapping[str, str],
    file_values: _FileValues | None,
) -> Problem:
    loc = list(err.get("loc", ()))
    # A model validator's ValueError reads "Value error, <text>": the text alone says it.
    message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if not loc:
        return Problem("settings", message)
    name = str(loc[0])
    opt = next((o for o in opts if o.name == name), None)
    if err.get("type") == "missing" and len(loc) == 1 and opt is not None:
        return Problem(opt.name, f"required, but not set (give {opt.flag}, env {opt.env} or key {opt.name!r})")
    if err.get("type") == "extra_forbidden" and len(loc) > 1:
        message = f"unknown key {loc[-1]!r}"
        inner = nested_model(model, loc[:-1], values)
        if inner is not None:
            message += _suggest(str(loc[-1]), list(inner.model_fields))
    source = sources.get(name)
    if source is not None and file_values is not None and source.startswith(str(file_values.path)):
        where = file_values.where(loc)
    elif source is not None:
        where = source + ("" if len(loc) == 1 else " " + ".".join(str(p) for p in loc[1:]))
    else:
        where = ".".join(str(p) for p in loc)
    # Echo the bad value only when it is a plain scalar of a non-secret option: a mapping given for
    # a nested option may hold credentials.
    value = err.get("input")
    plain = opt is not None and not opt.secret and opt.kind in (Kind.SCALAR, Kind.BOOL)
    if plain and len(loc) == 1 and isinstance(value, str | int | float | bool) and len(repr(value)) <= 80:
        message += f" (got {value!r})"
    return Problem(where, message)


# ---------------------------------------------------------------------------------------------- output


def redacted(settings: SidecarSettings) -> dict[str, Any]:
    """The effective settings as plain data, secrets replaced, also inside free-form mappings."""
    data = settings.model_dump(mode="json")
    for opt in options(type(settings)):
        if opt.secret and data.get(opt.name) is not None:
            data[opt.name] = _REDACTED
    redacted_data: dict[str, Any] = _redact_keys(data)
    return redacted_data


def _redact_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (_REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) and v else _redact_keys(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact_keys(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)  # URLs: userinfo and secret query parameters
    return value


def secret_values(settings: BaseModel) -> set[str]:
    """Every secret value the settings hold, for the logs to mask should one ever be quoted.

    The values `redacted` hides by where they are: secret options, `SecretStr` fields at any depth and
    values under secret-looking keys of free-form mappings. Credentials inside URLs need no listing:
    `redact_text` recognises them by their place in the URL.
    """
    found: set[str] = set()
    for name, info in type(settings).model_fields.items():
        value = getattr(settings, name)
        if _is_secret(info):
            _collect_all(value, found)
        else:
            _collect_secrets(value, found)
    return found


def _collect_secrets(value: Any, found: set[str]) -> None:
    if isinstance(value, SecretStr):
        found.add(value.get_secret_value())
    elif isinstance(value, BaseModel):
        found |= secret_values(value)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(k, str) and _SECRET_KEY.search(k):
                _collect_all(v, found)
            else:
                _collect_secrets(v, found)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            _collect_secrets(v, found)


def _collect_all(value: Any, found: set[str]) -> None:
    """Every text under a secret: a secret mapping's values, a secret list's items."""
    if isinstance(value, SecretStr):
        found.add(value.get_secret_value())
    elif isinstance(value, str):
        found.add(value)
    elif isinstance(value, Mapping):
        for v in value.values():
            _collect_all(v, found)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            _collect_all(v, found)
    elif isinstance(value, BaseModel):
        _collect_all(value.model_dump(), found)


def render(loaded: Loaded) -> str:
    """YAML of the effective settings, each value set by a source annotated with where from."""
    data = redacted(loaded.settings)
    lines = []
    for key, value in data.items():
        block = yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=False).rstrip("\n")
        source = loaded.sources.get(key)
        first, *rest = block.split("\n")
        lines.append(f"{first}  # from {source}" if source else first)
        lines.extend(rest)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- CLI


_METAVARS = {Kind.SCALAR: "VALUE", Kind.BOOL: "BOOL", Kind.LIST: "A,B", Kind.DICT: "K=V,..", Kind.COMPLEX: "YAML"}


def add_arguments(parser: argparse.ArgumentParser, model: type[SidecarSettings]) -> None:
    """One flag per option; values stay text here and are converted by `load`."""
    group = parser.add_argument_group("options (flag, env var, or key in the --config file)")
    for opt in options(model):
        help_text = (opt.info.description or "").replace("%", "%%")
        help_text += f" [env {opt.env}; default: {opt.default_text().replace('%', '%%')}]"
        group.add_argument(opt.flag, dest=opt.name, action="append", metavar=_METAVARS[opt.kind], help=help_text)
        if opt.secret:
            group.add_argument(
                opt.flag + "-file",
                dest=opt.name + "_file",
                action="append",
                metavar="PATH",
                help=f"read {opt.flag} from a file [env {opt.env}_FILE]",
            )


def flags_from(namespace: argparse.Namespace, model: type[SidecarSettings]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for opt in options(model):
        for dest in (opt.name, opt.name + "_file"):
            texts = getattr(namespace, dest, None)
            if texts:
                result[dest] = list(texts)
    return result


def env_table(model: type[SidecarSettings]) -> Iterator[str]:
    for opt in options(model):
        yield f"  {opt.env:<40} {opt.flag}"
