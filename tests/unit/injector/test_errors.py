"""What the injector cannot handle: an error naming the document and the field, and nothing written."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from sidecars.injector import yamlio
from sidecars.injector.annotations import MAX_VALUE
from sidecars.injector.errors import InjectionError
from sidecars.injector.inject import Options, inject_template
from sidecars.injector.workloads import MAX_LIST_DEPTH, inject_documents


def problems(text: str) -> list[str]:
    with pytest.raises(InjectionError) as failed:
        inject_documents(yamlio.documents(yamlio.split(textwrap.dedent(text), "input.yaml")), Options())
    return [str(p) for p in failed.value.problems]


def pod(annotations: str, containers: str = "- {name: app, image: x}", extra: str = "") -> str:
    return (
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n"
        + textwrap.indent(textwrap.dedent(annotations), "    ")
        + "spec:\n"
        + textwrap.indent(textwrap.dedent(extra), "  ")
        + "  containers:\n"
        + textwrap.indent(textwrap.dedent(containers), "  ")
    )


def test_a_container_already_named_like_a_sidecar() -> None:
    found = problems(pod("sidecars.io/inject: tailer\n", "- {name: app, image: x}\n- {name: tailer, image: y}\n"))
    assert found == [
        "document 1 (Pod p): spec.containers[1].name: a container named 'tailer' is already in the Pod and was "
        "not added by sidecars inject: rename it, or take 'tailer' out of sidecars.io/inject"
    ]


def test_a_port_the_sidecar_needs_is_taken() -> None:
    found = problems(pod("sidecars.io/inject: adapter\n", "- {name: app, image: x, ports: [{containerPort: 8086}]}\n"))
    assert found == [
        "document 1 (Pod p): spec.containers[0].ports[0].containerPort: port 8086 is the adapter's (adapter-health); "
        "the containers of a Pod share one network, so they cannot both listen on it"
    ]


def test_unknown_sidecar_unknown_key_and_bad_values_all_at_once() -> None:
    found = problems(
        pod(
            """\
            sidecars.io/inject: tailer,logger
            sidecars.io/tailr-config: x
            sidecars.io/tailer-memory: lots
            sidecars.io/tailer-image: "Not An Image"
            sidecars.io/adapter-cpu: 100m
            sidecars.io/shutdown-timeout-secs: "0"
            """
        )
    )
    key = 'document 1 (Pod p): metadata.annotations["sidecars.io/{}"]: '
    assert found == [
        key.format("inject") + "unknown sidecar 'logger' (known: tailer, ambassador, adapter)",
        key.format("tailr-config") + "unknown annotation (see `sidecars inject --help`)",
        key.format("tailer-image")
        + "'Not An Image' is not an image reference (repository:tag or repository@sha256:...)",
        key.format("tailer-memory") + "'lots' is not a memory quantity such as 128Mi",
        key.format("adapter-cpu") + "the adapter is not in sidecars.io/inject",
        key.format("shutdown-timeout-secs") + "'0' is not a whole number of seconds from 1 to 3600",
    ]


def test_values_are_bounded_before_any_regex() -> None:
    found = problems(pod(f"sidecars.io/inject: tailer\nsidecars.io/tailer-config: {'a' * (MAX_VALUE + 1)}\n"))
    assert found == [
        f'document 1 (Pod p): metadata.annotations["sidecars.io/tailer-config"]: longer than {MAX_VALUE} characters'
    ]


def test_the_named_log_volume_must_exist_and_be_mounted() -> None:
    missing = problems(pod("sidecars.io/inject: tailer\nsidecars.io/tailer-logs-volume: logs\n"))
    assert missing == [
        "document 1 (Pod p): metadata.annotations[\"sidecars.io/tailer-logs-volume\"]: no volume named 'logs' in "
        "the Pod's volumes"
    ]
    unmounted = problems(
        pod("sidecars.io/inject: tailer\nsidecars.io/tailer-logs-volume: logs\n", extra="volumes: [{name: logs}]\n")
    )
    assert unmounted == [
        'document 1 (Pod p): metadata.annotations["sidecars.io/tailer-logs-volume"]: no app container mounts '
        "'logs'; set sidecars.io/tailer-logs-path to where the logs are"
    ]


def test_the_app_already_mounts_something_where_the_logs_go() -> None:
    found = problems(
        pod(
            "sidecars.io/inject: tailer\n",
            "- {name: app, image: x, volumeMounts: [{name: tmp, mountPath: /var/log/app}]}\n",
            extra="volumes: [{name: tmp, emptyDir: {}}]\n",
        )
    )
    assert found == [
        "document 1 (Pod p): spec.containers[0].volumeMounts[0].mountPath: 'app' already mounts 'tmp' at "
        "/var/log/app: name that volume in sidecars.io/tailer-logs-volume, or set sidecars.io/tailer-logs-path "
        "to another path"
    ]


def test_a_cronjob_without_its_nested_template() -> None:
    found = problems("apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec:\n  jobTemplate: {spec: {}}\n")
    assert found == ["document 1 (CronJob c): spec.jobTemplate.spec.template: missing, or not a mapping"]


def test_problems_of_several_documents_and_list_items_are_reported_together() -> None:
    bad = yaml.safe_load(pod("sidecars.io/inject: nope\n"))
    listed = {"apiVersion": "v1", "kind": "List", "items": [{"kind": "Service"}, bad]}
    with pytest.raises(InjectionError) as failed:
        inject_documents([bad, listed], Options())
    assert [p.where for p in failed.value.problems] == ["document 1 (Pod p)", "document 2 (List), items[1] (Pod p)"]


def test_list_nesting_is_bounded() -> None:
    text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: b}]}\n"
    doc = yamlio.documents(yamlio.split(text, "x"))[0]
    for _ in range(MAX_LIST_DEPTH + 1):
        doc = {"apiVersion": "v1", "kind": "List", "items": [doc]}
    with pytest.raises(InjectionError, match=f"Lists nested deeper than {MAX_LIST_DEPTH} levels"):
        inject_documents([doc], Options())


def test_a_template_without_containers_or_with_a_bad_grace_period() -> None:
    found = problems(
        "kind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n"
        "    metadata: {annotations: {sidecars.io/inject: tailer}}\n"
        "    spec: {terminationGracePeriodSeconds: soon}\n"
    )
    assert found == [
        "document 1 (Deployment d): spec.template.spec.containers: missing or empty: a Pod needs a container",
        "document 1 (Deployment d): spec.template.spec.terminationGracePeriodSeconds: must be a whole number >= 0",
    ]


def test_a_marker_not_written_by_the_injector() -> None:
    found = problems(pod("sidecars.io/inject: tailer\nsidecars.io/injected: 'yes'\n"))
    assert found == [
        'document 1 (Pod p): metadata.annotations["sidecars.io/injected"]: not a marker written by sidecars inject'
    ]


def test_invalid_yaml_names_the_document_and_line() -> None:
    with pytest.raises(InjectionError) as failed:
        yamlio.split("kind: ConfigMap\n---\nkind: Pod\nmetadata: {name: a: b}\nspec: {}\n", "input.yaml")
    (problem,) = failed.value.problems
    assert str(problem).startswith("input.yaml, document 2: line 4: not valid YAML")


def test_the_input_is_bounded() -> None:
    with pytest.raises(InjectionError, match="larger than 16 MiB"):
        yamlio.split("#" * (yamlio.MAX_INPUT_BYTES + 1), "big.yaml")


def test_the_input_is_never_modified() -> None:
    template = {"metadata": {"annotations": {"sidecars.io/inject": "tailer"}}, "spec": {"containers": [{"name": "a"}]}}
    before = repr(template)
    outcome = inject_template(template, Options(), where="t")
    assert outcome.changed and repr(template) == before
