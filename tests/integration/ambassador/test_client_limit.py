"""The client-connection cap, in a real process whose open-file limit is low (`prlimit`): connections
past the cap are refused, counted and logged once, while `/livez` and every admitted connection are
still served, upstream connections included."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from prometheus_client.parser import text_string_to_metric_families

from sidecars.ambassador.client_limit import default_max_client_connections
from sidecars.testing import Process, free_port, http_get, start_process
from tests.integration.ambassador.conftest import read_response
from tests.integration.ambassador.upstream_process import upstream_process

OPEN_FILE_LIMIT = 256
EXTRA = 10  # connections past the cap, on each listener
REFUSED_LOG = "client connection refused: max_client_connections reached"


async def _metrics(proc: Process) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = await http_get(proc.admin_url + "/metrics")
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

            await _until(
                proc, "ambassador_client_connections", cap
            )  # accepted in the background: all held before going on

            # Past the cap: an http client is told why, a tcp client sees the close.
            for _ in range(EXTRA):
                reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
                status, headers, _ = await asyncio.wait_for(read_response(reader), 5)
                assert (status, headers["x-ambassador-reason"]) == (503, "client_connection_limit")
                assert await asyncio.wait_for(reader.read(), 5) == b""
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
                assert await asyncio.wait_for(reader.read(), 5) == b""
                writer.close()
            assert (await http_get(proc.admin_url + "/livez"))[0] == 200

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
    assert len(refusals) == 1, refusals  # 20 refusals, one line
    assert refusals[0]["max_client_connections"] == cap
