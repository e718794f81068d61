"""The client-connection cap derived from the open-file limit."""

from __future__ import annotations

import resource

import pytest

from sidecars.ambassador.proxy.client_limit import MIN_RESERVED_FDS, default_max_client_connections, reserved_fds
from sidecars.core.limits import open_file_limit


@pytest.mark.parametrize(("limit", "cap"), [(256, 96), (1024, 480), (65536, 30720), (1 << 20, 491520), (10, 1)])
def test_the_default_cap_leaves_the_reserve_and_two_descriptors_per_client(limit: int, cap: int) -> None:
    assert default_max_client_connections(limit) == cap
    if cap > 1:
        assert 2 * cap + reserved_fds(limit) <= limit
        assert reserved_fds(limit) >= MIN_RESERVED_FDS


def test_the_open_file_limit_is_the_soft_rlimit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert open_file_limit() == soft or soft == resource.RLIM_INFINITY
