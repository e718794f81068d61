"""Process resource limits that sidecars size their own bounds from.

A sidecar that holds one file descriptor per connection or per followed file must stop short of the
open-file limit by itself: at the limit every `accept()`, `open()` and `connect()` fails at once,
the admin server's probes included, and nothing says why. The runtime first raises the soft limit to
the hard one (`raise_open_file_limit`), so the bounds are sized from what the process may really use.
"""

from __future__ import annotations

import resource
from pathlib import Path

from structlog.typing import FilteringBoundLogger

# Linux's default `fs.nr_open`: the most descriptors one process can have when its limit is unlimited.
_NR_OPEN_DEFAULT = 1 << 20


def open_file_limit() -> int:
    """The soft RLIMIT_NOFILE of this process: the number of descriptors it may hold at once."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY:
        return int(soft)
    return _nr_open()


def raise_open_file_limit(log: FilteringBoundLogger) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit at start-up, as every Go program does since Go 1.19.

    Container runtimes often start a process with a soft limit of 1024 under a hard limit of a million:
    a proxy holding two descriptors per connection, or a tailer following many files, hits the soft
    one long before the machine is short of anything. Returns (before, after) and logs the change;
    a refusal (a hard limit lowered meanwhile, a seccomp profile) is logged and changes nothing.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or soft == resource.RLIM_INFINITY:
        return soft, soft
    target = hard
    if hard == resource.RLIM_INFINITY:
        target = _nr_open()  # setrlimit refuses more than fs.nr_open
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        log.warning("open-file limit not raised", soft=soft, hard=_shown(hard), error=str(exc))
        return soft, soft
    log.info("open-file limit raised to the hard limit", before=soft, after=target)
    return soft, target


def _nr_open() -> int:
    try:
        return int(Path("/proc/sys/fs/nr_open").read_text().strip())
    except (OSError, ValueError):
        return _NR_OPEN_DEFAULT


def _shown(limit: int) -> int | str:
    return "unlimited" if limit == resource.RLIM_INFINITY else limit
