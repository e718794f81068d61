"""Listening sockets: one port on several addresses, IPv4 and IPv6 alike.

An IPv4-only cluster probes a Pod on its IPv4 address, an IPv6-only one on its IPv6 address (`[::]`
in the probe's logs), a dual-stack one on either; an app may reach `localhost` as `127.0.0.1` or
`::1`. So what serves the kubelet and Prometheus listens on `0.0.0.0` and `::` (`ANY`), and what
serves only the app on `127.0.0.1` and `::1` (`LOOPBACK`).

Each address gets a socket of its own, all on the same port (with port 0 the first one picks a free
port and the others take it), IPv6 ones with `IPV6_V6ONLY` so that `::` and `0.0.0.0` never clash.
An IPv6 wildcard or loopback address on a node without IPv6 (`ipv6.disable=1`, no `::1`) is left out
and reported, as long as another address was bound: the same defaults run on every cluster. Any
other failure (a port taken, an address the machine does not have) is an error naming the address.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

ANY = ("0.0.0.0", "::")
LOOPBACK = ("127.0.0.1", "::1")
# A free port for the first address can be taken on another: a few fresh picks, then the error.
_PORT_ZERO_ATTEMPTS = 8


@dataclass
class Bound:
    """The bound sockets (not yet listening: the server that takes them listens) and what was left out."""

    sockets: list[socket.socket]
    port: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (address, why)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()

    @property
    def addresses(self) -> list[str]:
        return [_show(sock.getsockname()[0], self.port) for sock in self.sockets]


def bind(hosts: Sequence[str], port: int) -> Bound:
    """Bind `port` on every address of `hosts`; OSError naming the address when one cannot be bound."""
    if not hosts:
        raise ValueError("no address to listen on")
    for attempt in range(_PORT_ZERO_ATTEMPTS):
        try:
            return _bind_all(hosts, port)
        except OSError as exc:
            if port != 0 or exc.errno != errno.EADDRINUSE or attempt == _PORT_ZERO_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _bind_all(hosts: Sequence[str], port: int) -> Bound:
    sockets: list[socket.socket] = []
    skipped: list[tuple[str, str]] = []
    chosen = port
    try:
        for host in dict.fromkeys(hosts):
            for family, address in _resolve(host, chosen):
                try:
                    sock = _bound_socket(family, address)
                except OSError as exc:
                    if not _family_missing(exc, family, address[0]):
                        raise OSError(
                            exc.errno,
                            f"cannot listen on {_show(address[0], chosen)}: {(exc.strerror or str(exc)).lower()}",
                        ) from None
                    skipped.append((_show(address[0], chosen), exc.strerror or str(exc)))
                    continue
                sockets.append(sock)
                chosen = sock.getsockname()[1]
        if not sockets:
            raise OSError(errno.EADDRNOTAVAIL, f"none of {', '.join(hosts)} can be listened on: {skipped}")
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return Bound(sockets, chosen, skipped)


def _resolve(host: str, port: int) -> list[tuple[int, tuple[str, int]]]:
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(errno.EADDRNOTAVAIL, f"cannot listen on {host!r}: {exc.strerror}") from None
    seen: dict[tuple[int, str], tuple[int, tuple[str, int]]] = {}
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            seen.setdefault((family, str(sockaddr[0])), (family, (str(sockaddr[0]), port)))
    return list(seen.values())


def _bound_socket(family: int, address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        with contextlib.suppress(OSError):
            sock.close()
        raise
    return sock


def _family_missing(exc: OSError, family: int, host: str) -> bool:
    """The failure means the node has no IPv6 (or no IPv4), not that the configuration is wrong."""
    if exc.errno == errno.EAFNOSUPPORT:
        return True
    if exc.errno != errno.EADDRNOTAVAIL or family != socket.AF_INET6:
        return False
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    return ip.is_loopback or ip.is_unspecified


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
