"""The AdmissionReview answer's bounds, and the JSON Patch it carries, checked without a server."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import jsonpatch
import trustme

from sidecars.core.telemetry import MAX_KEYS as LOGGED_PROBLEMS
from sidecars.injector.inject import Options
from sidecars.injector.jsonpatch import diff, pointer
from sidecars.injector.plugin import Injector
from sidecars.injector.review import MAX_WARNING_CHARS, MAX_WARNINGS, Answer, _response, answer
from sidecars.testing import run_sidecar

REVIEW = json.loads((Path(__file__).resolve().parents[2] / "data" / "injector" / "admission-review.json").read_text())


def test_pointer_escapes_slash_and_tilde() -> None:
    assert pointer(["metadata", "annotations", "sidecars.io/inject"]) == "/metadata/annotations/sidecars.io~1inject"
    assert pointer(["a~b"]) == "/a~0b"
    old = {"metadata": {"annotations": {"x~y/z": "1", "gone": "2"}}, "spec": {"containers": [1]}}
    new = {"metadata": {"annotations": {"x~y/z": "3", "new/key": "4"}}, "spec": {"containers": [1, 2]}}
    assert jsonpatch.apply_patch(old, diff(old, new)) == new


def test_warnings_are_bounded_in_count_and_length() -> None:
    body = _response("u", ["w" * 1000] * (MAX_WARNINGS + 5))
    warnings = body["response"]["warnings"]
    assert len(warnings) == MAX_WARNINGS and all(len(w) == MAX_WARNING_CHARS for w in warnings)
    review = json.loads(json.dumps(REVIEW))
    review["request"]["object"]["metadata"]["annotations"] |= {f"sidecars.io/x{i:03d}": "y" for i in range(50)}
    result = answer(json.dumps(review).encode(), Options())
    assert result.outcome == "refused" and result.reason == "invalid"
    (warning,) = result.body["response"]["warnings"]
    assert len(warning) == MAX_WARNING_CHARS


def test_an_overlong_uid_is_no_uid() -> None:
    review = json.loads(json.dumps(REVIEW))
    review["request"]["uid"] = "u" * 129
    result = answer(json.dumps(review).encode(), Options())
    assert (result.status, result.reason) == (400, "malformed")


def test_the_patch_is_base64_json_patch() -> None:
    result = answer(json.dumps(REVIEW).encode(), Options(classic=True))
    ops = json.loads(base64.b64decode(result.body["response"]["patch"]))
    pod = jsonpatch.apply_patch(REVIEW["request"]["object"], ops)
    assert [c["name"] for c in pod["spec"]["containers"]] == ["web", "tailer", "adapter"]


async def test_refusals_are_logged_once_each_and_remembered_within_a_bound(tmp_path: Path) -> None:
    cert = trustme.CA().issue_cert("x")
    cert.private_key_pem.write_to_path(str(tmp_path / "k"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "c"))
    async with run_sidecar(
        Injector, listen_host="127.0.0.1", listen_port=0, tls_cert_file=str(tmp_path / "c"),
        tls_key_file=str(tmp_path / "k"),
    ) as sc:  # fmt: skip
        plugin = sc.plugin
        for _ in range(3):
            plugin._count(Answer(status=200, body={}, outcome="refused", reason="invalid", detail="the same problem"))
        for i in range(LOGGED_PROBLEMS + 10):
            plugin._count(Answer(status=200, body={}, outcome="refused", reason="invalid", detail=f"problem {i}"))
        assert len(plugin._refusals._keys) == LOGGED_PROBLEMS
        assert sc.sample("injector_refused_reviews_total", {"reason": "invalid"}) == LOGGED_PROBLEMS + 13
    lines = [e for e in sc.logs if e["event"] == "review refused: the Pod is admitted unchanged"]
    assert len(lines) == LOGGED_PROBLEMS + 11  # the repeated problem once, every distinct one once
