"""Serves a directory over HTTP and stops cleanly on SIGTERM.

`python -m http.server` would do, except as a container's PID 1: the kernel ignores signals whose
handler is the default for PID 1, so SIGTERM does nothing and the Pod waits out its whole grace
period before SIGKILL. Run: `python -m sidecars.demo.static --directory /html --port 8080`.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import signal
import threading


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sidecars.demo.static", description=__doc__.splitlines()[0])
    p.add_argument("--directory", default=".")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8080)
    args = p.parse_args(argv)
    handler = functools.partial(QuietHandler, directory=args.directory)
    server = http.server.ThreadingHTTPServer((args.host, args.port), handler)
    # shutdown() blocks until serve_forever() returns, so it must run off the serving thread.
    stop = lambda *_: threading.Thread(target=server.shutdown, daemon=True).start()  # noqa: E731
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"serving {args.directory} on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
