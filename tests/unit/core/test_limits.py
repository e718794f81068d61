"""The open-file limit raised at start-up, in a real child process started with a low soft limit."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

CHILD = """
import json, resource, structlog
from sidecars.core.limits import open_file_limit, raise_open_file_limit
lines = []
log = structlog.wrap_logger(None, processors=[lambda _l, m, e: lines.append({"event": e.pop("event"), **e}) or ""])
before, after = raise_open_file_limit(log)
print(json.dumps({"before": before, "after": after, "now": open_file_limit(),
                  "hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1], "lines": lines}))
"""


def run_child(soft: int) -> dict[str, object]:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    proc = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, preexec_fn=lower, check=True
    )
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_soft_limit_is_raised_to_the_hard_one_and_logged() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard > 256, "the machine's hard limit is too low to show a raise"
    out = run_child(256)
    assert out["before"] == 256 and out["now"] == out["after"]
    assert out["after"] == (hard if hard != resource.RLIM_INFINITY else out["after"]) and out["after"] > 256
    assert out["lines"] == [{"event": "open-file limit raised to the hard limit", "before": 256, "after": out["after"]}]


def test_nothing_to_do_when_soft_already_equals_hard() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    out = run_child(hard)
    assert out["before"] == out["after"] == hard and out["lines"] == []


async def test_the_runtime_raises_it_before_anything_is_sized() -> None:
    from sidecars.testing import run_sidecar
    from tests.support.core_plugins import Probe

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        async with run_sidecar(Probe) as sc:
            raised = sc.events("open-file limit raised to the hard limit")
            assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == raised[0]["after"]
        assert raised[0]["before"] == 256
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
