"""The init-container pattern: copy a packaged application into a shared volume, then exit.

Like copying a WAR into Tomcat's webapps: `python -m sidecars.demo.artifact /apps/hello.pyz`
writes a self-contained Python zip application; the app container (any Python runtime, no
sidecars package needed) then runs `python /apps/hello.pyz --port 8080`.
"""

from __future__ import annotations

import argparse
import io
import os
import zipfile
from pathlib import Path

# The packaged application: a stdlib-only web server answering with its own version.
ARTIFACT_MAIN = """\
import argparse, http.server, json, signal, sys

VERSION = "{version}"

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({{"artifact": "hello", "version": VERSION, "path": self.path}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stdout.write("hello.pyz: " + fmt % args + "\\n")

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, default=8080)
args = parser.parse_args()
server = http.server.ThreadingHTTPServer(("0.0.0.0", args.port), Handler)
signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
print(f"hello.pyz {{VERSION}} serving on :{{args.port}}", flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
server.server_close()
"""


def build(version: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("__main__.py", ARTIFACT_MAIN.format(version=version))
    return b"#!/usr/bin/env python3\n" + buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sidecars.demo.artifact", description=__doc__.splitlines()[0])
    p.add_argument("dest", type=Path, help="Where to write the zip application.")
    p.add_argument("--version", default="1.0.0", help="Version the artifact reports.")
    args = p.parse_args(argv)
    args.dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.dest.with_name(f".{args.dest.name}.tmp")
    tmp.write_bytes(build(args.version))
    os.replace(tmp, args.dest)
    print(f"copied artifact {args.dest.name} ({args.dest.stat().st_size} bytes) into {args.dest.parent}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
