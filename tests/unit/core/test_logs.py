"""The log set-up as a process has it: both formats, tracebacks without locals, every field redacted."""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from sidecars.core import logs, redact

M = redact.MARKER
TOKEN = "s3cr3t-bearer-value"


class _Stream(io.TextIOWrapper):
    def isatty(self) -> bool:
        return False


@pytest.fixture
def configured() -> Iterator[Callable[[str], Callable[[], str]]]:
    """Configures logging in a format onto a fresh stream; returns what was written so far."""
    old = structlog.get_config()
    root = logging.getLogger()
    old_handlers, old_level = root.handlers[:], root.level

    def configure(fmt: str) -> Callable[[], str]:
        stream = _Stream(io.BytesIO(), encoding="utf-8", write_through=True)
        logs.configure("debug", fmt, stream)

        def output() -> str:
            stream.flush()
            return stream.buffer.getvalue().decode()  # type: ignore[attr-defined]

        return output

    yield configure
    structlog.configure(**old)
    root.handlers[:], root.level = old_handlers, old_level
    logging.captureWarnings(False)
    redact.forget_secrets()


def _open_sink(url: str) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}  # a local, as in every sink's open()
    assert headers
    raise ConnectionError(f"cannot reach {url}")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_traceback_carries_no_locals_and_its_message_is_redacted(
    configured: Callable[[str], Callable[[], str]], fmt: str
) -> None:
    output = configured(fmt)
    log = structlog.get_logger("sidecars")
    try:
        _open_sink("https://logs.example/ingest?api_key=QK-123456789")
    except ConnectionError as exc:
        log.error("start-up failed", error=str(exc), exc_info=True)
    text = output()
    assert "_open_sink" in text and "ConnectionError" in text  # the traceback is there...
    assert TOKEN not in text  # ...without the frame's locals
    assert "QK-123456789" not in text
    assert f"https://logs.example/ingest?api_key={M}" in text
    if fmt == "json":
        line = json.loads(text.splitlines()[-1])
        frames = line["exception"][0]["frames"]
        assert all(frame.get("locals") is None for frame in frames)
        assert line["error"] == f"cannot reach https://logs.example/ingest?api_key={M}"


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_every_field_is_redacted_and_registered_secrets_masked(
    configured: Callable[[str], Callable[[], str]], fmt: str
) -> None:
    output = configured(fmt)
    redact.register_secret("hunter2-password")
    log = structlog.get_logger("sidecars")
    log.warning(
        "sink failing: retrying",
        error="refused with hunter2-password in the answer",
        target="http://u:p@h/push?token=t0k3n-abc",
        nested={"password": "inline-pw", "urls": ["http://h/?sig=s1g-abc"], "count": 3},
        path=Path("/var/log/app.log"),
    )
    logging.getLogger("aiohttp.client").warning("Unclosed response to %s", "http://h/?access_token=at-abc")
    text = output()
    for secret in ("hunter2-password", "u:p@", "t0k3n-abc", "inline-pw", "s1g-abc", "at-abc"):
        assert secret not in text, secret
    assert f"http://{M}@h/push?token={M}" in text
    assert f"http://h/?access_token={M}" in text
    assert "/var/log/app.log" in text  # an object that hides nothing is shown as before
    if fmt == "json":
        first = json.loads(text.splitlines()[0])
        assert first["nested"] == {"password": M, "urls": [f"http://h/?sig={M}"], "count": 3}
        assert first["path"] == "PosixPath('/var/log/app.log')"


def test_warnings_go_through_the_same_renderer(configured: Callable[[str], Callable[[], str]]) -> None:
    output = configured("json")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("deprecated endpoint http://h/?apikey=k3y-abc", DeprecationWarning, stacklevel=1)
    line: dict[str, Any] = json.loads(output().splitlines()[-1])
    assert line["logger"] == "py.warnings"
    assert "k3y-abc" not in line["event"] and f"apikey={M}" in line["event"]
