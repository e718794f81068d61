"""A minimal Language Server Protocol client: what an editor's YAML extension reports for one file.

It starts yaml-language-server (installed by `.ci/run` from tests/support/editor/package.json) on
stdio, opens the file and returns the first diagnostics published for it. Every wait is bounded: a
watchdog kills a server that stays silent, and a message larger than `MAX_MESSAGE_BYTES` is refused.
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import IO, Any

SERVER = Path(__file__).with_name("editor") / "node_modules" / ".bin" / "yaml-language-server"
INSTALL = "npm ci --prefix tests/support/editor (as .ci/run does)"
MAX_MESSAGE_BYTES = 16 << 20
SETTINGS = {"validate": True, "completion": True, "schemaStore": {"enable": False}}  # offline: no store


def diagnostics(path: Path, timeout_secs: float = 60.0) -> list[dict[str, Any]]:
    """What the server reports for `path` (the file names its schema on its first line)."""
    if not SERVER.exists():
        raise FileNotFoundError(f"{SERVER} is missing: run {INSTALL}")
    proc = subprocess.Popen(
        [str(SERVER), "--stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    watchdog = threading.Timer(timeout_secs, proc.kill)  # a silent server: EOF below, not a hang
    watchdog.start()
    assert proc.stdin is not None and proc.stdout is not None
    try:
        uri = path.resolve().as_uri()
        _send(proc.stdin, {"id": 1, "method": "initialize", "params": {"processId": None, "capabilities": {}}})
        while _read(proc.stdout).get("id") != 1:
            pass
        _send(proc.stdin, {"method": "initialized", "params": {}})
        _send(proc.stdin, {"method": "workspace/didChangeConfiguration", "params": {"settings": {"yaml": SETTINGS}}})
        document = {"uri": uri, "languageId": "yaml", "version": 1, "text": path.read_text()}
        _send(proc.stdin, {"method": "textDocument/didOpen", "params": {"textDocument": document}})
        while True:
            message = _read(proc.stdout)
            method = message.get("method")
            if method == "textDocument/publishDiagnostics" and message["params"]["uri"] == uri:
                found: list[dict[str, Any]] = message["params"]["diagnostics"]
                return found
            if method == "workspace/configuration":
                _send(proc.stdin, {"id": message["id"], "result": [SETTINGS] * len(message["params"]["items"])})
            elif "id" in message and method is not None:  # any other request of the server's: no answer needed
                _send(proc.stdin, {"id": message["id"], "result": None})
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()


def _send(stream: IO[bytes], message: dict[str, Any]) -> None:
    body = json.dumps({"jsonrpc": "2.0", **message}).encode()
    stream.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    stream.flush()


def _read(stream: IO[bytes]) -> dict[str, Any]:
    length = None
    for _ in range(32):  # header lines; a server sends one or two
        line = stream.readline(1024)
        if not line:
            raise EOFError("yaml-language-server ended (or stayed silent past the timeout)")
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.decode("ascii").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length is None or length > MAX_MESSAGE_BYTES:
        raise ValueError(f"bad LSP message length: {length}")
    message: dict[str, Any] = json.loads(stream.read(length))
    return message
