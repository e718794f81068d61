"""Process resource limits that sidecars size their own bounds from.

A sidecar that holds one file descriptor per connection or per followed file must stop short of the
open-file limit by itself: at the limit every `accept()`, `open()` and `connect()` fails at once,
the admin server's probes included, and nothing says why.
"""

from __future__ import annotations

import resource
from pathlib import Path

# Linux's default `fs.nr_open`: the most descriptors one process can have when its limit is unlimited.
_NR_OPEN_DEFAULT = 1 << 20


def open_file_limit() -> int:
    """The soft RLIMIT_NOFILE of this process: the number of descriptors it may hold at once."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY:
        return int(soft)
    try:
        return int(Path("/proc/sys/fs/nr_open").read_text().strip())
    except (OSError, ValueError):
        return _NR_OPEN_DEFAULT
