"""A real gRPC server (grpcio) in its own process, and the client side of its service, for the
ambassador's HTTP/2 tests.

The service `test.Echo` has one method of each kind, with raw bytes as messages (no generated code:
the serializers are the identity):
- Unary: answers `<server name>:<request>`;
- ServerStream: the request is a count N; N messages `<name>:<i>`;
- ClientStream: the requests joined, prefixed by the name;
- Bidi: each request echoed as `<name>:<request>` as it arrives;
- Slow: sleeps the request's seconds, then answers;
- Big: the request is a size; one message of that many bytes.
`test.Control/SetServing` (request b"1" or b"0") flips the standard health service
(`grpc.health.v1.Health`) between SERVING and NOT_SERVING.

`grpc_server(name, tls=(cert_file, key_file))` serves TLS (grpcio's own, ALPN h2) instead of h2c;
`client_ca=ca_file` then requires client certificates of that CA (mutual TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[3]


class GrpcServer:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, name: str) -> None:
        self.proc = proc
        self.port = port
        self.name = name

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


@contextlib.asynccontextmanager
async def grpc_server(
    name: str, tls: tuple[Path, Path] | None = None, client_ca: Path | None = None
) -> AsyncIterator[GrpcServer]:
    tls_args = [str(tls[0]), str(tls[1])] if tls is not None else []
    if client_ca is not None:
        tls_args.append(str(client_ca))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.ambassador.grpc_service", name, *tls_args],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        if not line.startswith(b"listening "):
            raise RuntimeError(f"gRPC server did not start: {line!r}")
        yield GrpcServer(proc, int(line.split()[1]), name)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# -- the client side (blocking grpcio calls: run them in a thread) ----------------------------------------


class EchoClient:
    """Stubs of `test.Echo` over one channel (so one HTTP/2 connection) to `target`."""

    def __init__(self, target: str, ca: bytes | None = None, server_name: str | None = None) -> None:
        # One subchannel, no client-side balancing or retries of grpcio's own: what the proxy does is seen.
        options: list[tuple[str, Any]] = [("grpc.enable_retries", 0)]
        if ca is None:
            self.channel = grpc.insecure_channel(target, options=options)
        else:  # straight to a TLS server (a test's own control calls)
            if server_name is not None:
                options.append(("grpc.ssl_target_name_override", server_name))
            credentials = grpc.ssl_channel_credentials(root_certificates=ca)
            self.channel = grpc.secure_channel(target, credentials, options=options)
        self.unary = self.channel.unary_unary("/test.Echo/Unary")
        self.server_stream = self.channel.unary_stream("/test.Echo/ServerStream")
        self.client_stream = self.channel.stream_unary("/test.Echo/ClientStream")
        self.bidi = self.channel.stream_stream("/test.Echo/Bidi")
        self.slow = self.channel.unary_unary("/test.Echo/Slow")
        self.big = self.channel.unary_unary("/test.Echo/Big")
        self.set_serving = self.channel.unary_unary("/test.Control/SetServing")

    def close(self) -> None:
        self.channel.close()


def health_check(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(reply.status)


# -- the server, run in its own process -------------------------------------------------------------------


def _serve(name: str, cert_file: str | None = None, key_file: str | None = None, client_ca: str | None = None) -> None:
    me = name.encode()
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)

    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        return me + b":" + request

    def server_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for i in range(int(request)):
            yield b"%s:%d" % (me, i)

    def client_stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        return me + b":" + b"".join(requests)

    def bidi(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for request in requests:
            yield me + b":" + request

    def slow(request: bytes, context: grpc.ServicerContext) -> bytes:
        time.sleep(float(request))
        return me + b":slept"

    def big(request: bytes, context: grpc.ServicerContext) -> bytes:
        return b"x" * int(request)

    def set_serving(request: bytes, context: grpc.ServicerContext) -> bytes:
        status = (
            health_pb2.HealthCheckResponse.SERVING if request == b"1" else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        health_servicer.set("", status)
        return b"ok"

    echo = grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
            "Big": grpc.unary_unary_rpc_method_handler(big),
        },
    )
    control = grpc.method_handlers_generic_handler(
        "test.Control", {"SetServing": grpc.unary_unary_rpc_method_handler(set_serving)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), handlers=[echo, control])
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if cert_file is not None and key_file is not None:
        chain = Path(cert_file).read_bytes()
        key = Path(key_file).read_bytes()
        roots = Path(client_ca).read_bytes() if client_ca is not None else None
        credentials = grpc.ssl_server_credentials(
            [(key, chain)], root_certificates=roots, require_client_auth=roots is not None
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening {port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(1))
    server.wait_for_termination()


if __name__ == "__main__":
    _serve(*sys.argv[1:5])
