"""The client-connection cap, in a real process whose open-file limit is low (`prlimit`): connections
past the cap are refused, counted and logged once, while `/livez` and every admitted connection are
still served, upstream connections included."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from sidecars.ambassador.proxy.client_limit import default_max_client_connections
from sidecars.testing import Process, free_port, http_get, start_process
from tests.integration.ambassador.conftest import read_response
from tests.integration.ambassador.upstream_process import upstream_process

OPEN_FILE_LIMIT = 256
EXTRA = OPEN_FILE_LIMIT // 2  # connections past the cap, on each listener: the whole limit together
REFUSED_LOG = "client connection refused: max_client_connections reached"
LOCAL = "local_resources_exhausted"
OUTCOMES = "ambassador_endpoint_outcomes_total"
# The descriptor tests bind IPv4 loopback only: the number of spare descriptors under `prlimit` 64
# decides whether an upstream connect fails for lack of one, so no listening socket is left to the default.
ONE_ADDRESS = ["127.0.0.1"]


async def _metrics(proc: Process) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    # At its open-file limit the process may drop the admin connection it cannot serve: asked again.
    for attempt in range(50):
        try:
            status, text = await http_get(proc.admin_url + "/metrics")
            break
        except aiohttp.ClientError:
            if attempt == 49:
                raise
            await asyncio.sleep(0.1)
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def _sample(proc: Process, name: str, **labels: str) -> float | None:
    return (await _metrics(proc)).get((name, tuple(sorted(labels.items()))))


async def _until(proc: Process, gauge: str, count: int) -> None:
    """Wait until `gauge`, summed over its series, is `count` (a bound on waiting, not on speed)."""
    deadline = time.monotonic() + 10
    while (held := sum(v for (name, _), v in (await _metrics(proc)).items() if name == gauge)) != count:
        assert time.monotonic() < deadline, f"{gauge} is {held}, not {count}"
        await asyncio.sleep(0.02)


async def test_connections_past_the_cap_are_refused_and_the_admin_server_keeps_answering() -> None:
    cap = default_max_client_connections(OPEN_FILE_LIMIT)
    http_port, tcp_port = free_port(), free_port()
    async with upstream_process() as up:
        cluster = {"endpoints": [up.address], "health_check": {"kind": "none"}}
        settings = {
            "listeners": [
                {"name": "web", "port": http_port, "cluster": cluster},
                {"name": "db", "port": tcp_port, "mode": "tcp", "cluster": cluster},
            ],
            "shutdown_timeout_secs": 5.0,
        }
        command = ["prlimit", f"--nofile={OPEN_FILE_LIMIT}", sys.executable, "-m", "sidecars.ambassador"]
        async with start_process("ambassador", settings, command=command) as proc:
            await proc.wait_http("/readyz", 200)
            assert await _sample(proc, "ambassador_max_client_connections") == cap

            # The cap, filled with idle connections on both listeners.
            web = [await asyncio.open_connection("127.0.0.1", http_port) for _ in range(cap // 2)]
            db = [await asyncio.open_connection("127.0.0.1", tcp_port) for _ in range(cap - cap // 2)]

            await _until(proc, "ambassador_client_connections", cap)  # accepted in the background

            # Past the cap, as many connections again as the process may hold descriptors, all kept
            # open by this side: without the cap the process would be at its open-file limit, its
            # admin server with it. Each is refused: an http client is told why, a tcp client sees
            # the close.
            extra = [
                await asyncio.open_connection("127.0.0.1", port) for _ in range(EXTRA) for port in (http_port, tcp_port)
            ]
            assert (await http_get(proc.admin_url + "/livez"))[0] == 200
            for i, (reader, writer) in enumerate(extra):
                if i % 2 == 0:
                    status, headers, _ = await asyncio.wait_for(read_response(reader), 5)
                    assert (status, headers["x-ambassador-reason"]) == (503, "client_connection_limit")
                assert await asyncio.wait_for(reader.read(), 5) == b""
                writer.close()

            # Every admitted connection is served at once, each through an upstream connection of its
            # own: the process then holds twice the cap, and the reserve is all that is left.
            request = b"GET /sleep/3000 HTTP/1.1\r\nHost: a\r\n\r\n"
            for _, writer in web + db:
                writer.write(request)
            await _until(proc, "ambassador_upstream_connections", cap)
            assert (await http_get(proc.admin_url + "/livez"))[0] == 200
            answers = [await asyncio.wait_for(read_response(r), 10) for r, _ in web + db]
            assert [(status, body) for status, _, body in answers] == [(200, b"slept\n")] * cap

            refused = {
                name: await _sample(
                    proc,
                    "ambassador_client_connections_refused_total",
                    listener=name,
                    cluster=name,
                    reason="max_client_connections",
                )
                for name in ("web", "db")
            }
            assert refused == {"web": EXTRA, "db": EXTRA}
            status, verbose = await http_get(proc.admin_url + "/readyz?verbose")
            assert status == 200 and "[+]client_connections warn: at max_client_connections" in verbose

            for _, writer in web + db:
                writer.close()
            await _until(proc, "ambassador_client_connections", 0)
            proc.proc.terminate()
            assert await proc.wait_exit(15) == 0
            lines = [json.loads(line) for line in proc.read_output().splitlines() if line.startswith("{")]
    refusals = [line for line in lines if line["event"] == REFUSED_LOG]
    assert len(refusals) == 1, refusals  # 2 * EXTRA refusals, one line
    assert refusals[0]["max_client_connections"] == cap


async def test_running_out_of_descriptors_does_not_eject_a_healthy_tcp_upstream() -> None:
    """A cap set above what the open-file limit allows: the upstream connects that then fail for lack
    of descriptors are the process's own failure, not the endpoint's."""
    tcp_port = free_port()
    async with upstream_process() as up:
        cluster = {"endpoints": [up.address], "health_check": {"kind": "none"}}
        settings = {
            "listeners": [{"name": "db", "host": ONE_ADDRESS, "port": tcp_port, "mode": "tcp", "cluster": cluster}],
            "max_client_connections": 1000,
            "shutdown_timeout_secs": 5.0,
        }
        command = ["prlimit", "--nofile=64", sys.executable, "-m", "sidecars.ambassador"]
        async with start_process("ambassador", settings, command=command) as proc:
            await proc.wait_http("/readyz", 200)
            # About 25 sessions (two descriptors each) exhaust 64 descriptors; 40 go well past it.
            sessions = [await asyncio.open_connection("127.0.0.1", tcp_port) for _ in range(40)]
            outcome = {"cluster": "db", "endpoint": up.address}
            deadline = time.monotonic() + 10
            while not [
                o for o in ("local_error", "connect_failure") if await _sample(proc, OUTCOMES, **outcome, outcome=o)
            ]:
                assert time.monotonic() < deadline, "no upstream connect failed: the limit was not reached"
                await asyncio.sleep(0.02)
            refused_connects = await _sample(
                proc, "ambassador_endpoint_outcomes_total", **outcome, outcome="connect_failure"
            )
            local = await _sample(proc, "ambassador_errors_total", listener="db", cluster="db", reason=LOCAL)
            for _, writer in sessions:
                writer.close()
            await _until(proc, "ambassador_client_connections", 0)
            ejections = await _sample(proc, "ambassador_endpoint_ejections_total", cluster="db", endpoint=up.address)
            # Descriptors back: the endpoint serves the next session.
            reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
            writer.write(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n")
            status, _, body = await asyncio.wait_for(read_response(reader), 5)
            writer.close()
            proc.proc.terminate()
            assert await proc.wait_exit(15) == 0
            output = proc.read_output()
    assert (status, body) == (200, b"ok\n")
    assert not ejections, output[-2000:]
    assert not refused_connects  # not booked against the endpoint
    assert local and local >= 1  # but counted, as the process's own failure
    assert "max_client_connections leaves too few file descriptors" in output


async def test_running_out_of_descriptors_does_not_eject_a_healthy_http_upstream() -> None:
    http_port = free_port()
    async with upstream_process() as up:
        cluster = {"endpoints": [up.address], "health_check": {"kind": "none"}}
        settings = {
            "listeners": [{"name": "web", "host": ONE_ADDRESS, "port": http_port, "cluster": cluster}],
            "max_client_connections": 1000,
            "shutdown_timeout_secs": 5.0,
        }
        command = ["prlimit", "--nofile=64", sys.executable, "-m", "sidecars.ambassador"]
        async with start_process("ambassador", settings, command=command) as proc:
            await proc.wait_http("/readyz", 200)
            clients = [await asyncio.open_connection("127.0.0.1", http_port) for _ in range(40)]
            for _, writer in clients:  # each request holds an upstream connection for a while
                writer.write(b"GET /sleep/1000 HTTP/1.1\r\nHost: a\r\n\r\n")
            answers: Counter[object] = Counter()
            for reader, _ in clients:  # the admin server cannot answer meanwhile: it shares the limit
                try:
                    status, headers, _ = await asyncio.wait_for(read_response(reader), 10)
                    answers[(status, headers.get("x-ambassador-reason"))] += 1
                except (asyncio.IncompleteReadError, ConnectionError):
                    answers["closed at accept"] += 1
            for _, writer in clients:
                writer.close()
            await _until(proc, "ambassador_client_connections", 0)
            endpoint = {"cluster": "web", "endpoint": up.address}
            refused_connects = await _sample(proc, OUTCOMES, **endpoint, outcome="connect_failure")
            ejections = await _sample(proc, "ambassador_endpoint_ejections_total", **endpoint)
            proc.proc.terminate()
            assert await proc.wait_exit(15) == 0
    assert (503, "local_resources_exhausted") in answers, answers  # the limit was reached
    assert not refused_connects
    assert not ejections
