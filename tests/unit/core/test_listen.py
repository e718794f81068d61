"""Listening on IPv4 and IPv6 at once, on one port, with real sockets on the loopback addresses."""

from __future__ import annotations

import errno
import re
import socket

import pytest

from sidecars.core import listen
from sidecars.testing import http_get, run_sidecar
from tests.support.core_plugins import Probe

HAS_IPV6_LOOPBACK = socket.has_ipv6 and bool(
    [a for a in socket.getaddrinfo("::1", 0, socket.AF_INET6) if a[4][0] == "::1"]
)


def connect(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(5)
        client.connect((host, port))


def test_loopback_on_both_families_shares_one_port_chosen_by_the_first() -> None:
    if not HAS_IPV6_LOOPBACK:
        pytest.fail("this machine has no ::1: the dual-stack test needs IPv6 loopback")
    bound = listen.bind(listen.LOOPBACK, 0)
    try:
        assert len(bound.sockets) == 2 and bound.skipped == []
        assert {s.getsockname()[1] for s in bound.sockets} == {bound.port}
        assert bound.addresses == [f"127.0.0.1:{bound.port}", f"[::1]:{bound.port}"]
        for sock in bound.sockets:
            sock.listen()
        connect("127.0.0.1", bound.port)
        connect("::1", bound.port)
    finally:
        bound.close()


def test_wildcards_of_both_families_do_not_clash() -> None:
    bound = listen.bind(listen.ANY, 0)  # IPV6_V6ONLY: "::" leaves 0.0.0.0 to the IPv4 socket
    try:
        families = {s.family for s in bound.sockets}
        assert socket.AF_INET in families and (socket.AF_INET6 in families or not HAS_IPV6_LOOPBACK)
        for sock in bound.sockets:
            sock.listen()
        connect("127.0.0.1", bound.port)
        if HAS_IPV6_LOOPBACK:
            connect("::1", bound.port)
    finally:
        bound.close()


def test_a_taken_port_names_the_address() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=re.escape(f"cannot listen on 127.0.0.1:{port}: address already in use")):
            listen.bind(["127.0.0.1"], port)


def test_an_address_the_machine_lacks_is_an_error_not_skipped() -> None:
    with pytest.raises(OSError, match=re.escape("cannot listen on 192.0.2.1")):
        listen.bind(["127.0.0.1", "192.0.2.1"], 0)  # TEST-NET-1: never a local address


def test_only_a_missing_ipv6_family_is_left_out() -> None:
    missing = OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
    assert listen._family_missing(missing, socket.AF_INET6, "::1")
    assert listen._family_missing(missing, socket.AF_INET6, "::")
    assert not listen._family_missing(missing, socket.AF_INET6, "2001:db8::1")  # a typo stays an error
    assert not listen._family_missing(missing, socket.AF_INET, "127.0.0.2")
    assert listen._family_missing(OSError(errno.EAFNOSUPPORT, "no IPv6"), socket.AF_INET6, "::1")


async def test_admin_server_answers_probes_on_ipv4_and_ipv6_loopback() -> None:
    if not HAS_IPV6_LOOPBACK:
        pytest.fail("this machine has no ::1: the dual-stack test needs IPv6 loopback")
    async with run_sidecar(Probe, admin_host="127.0.0.1,::1") as sc:
        port = sc.runtime.admin.port
        for base in (f"http://127.0.0.1:{port}", f"http://[::1]:{port}"):
            status, body = await http_get(base + "/readyz")
            assert (status, body) == (200, "ok")


def test_the_admin_default_is_every_address_of_both_families() -> None:
    from tests.support.core_plugins import ProbeSettings

    assert ProbeSettings().admin_host == ["0.0.0.0", "::"]
    assert ProbeSettings(admin_host="0.0.0.0").admin_host == ["0.0.0.0"]  # one address, as before
