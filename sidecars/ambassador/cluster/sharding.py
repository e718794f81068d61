"""Which shard a key belongs to: twemproxy's distributions (ketama, modula, random) and hash tags.

Given the same servers (order, names, weights), the same hash and the same hash tag, `Ring.index`
returns the server twemproxy 0.5 picks, so an application can move between the two without moving
data. What twemproxy does, and therefore what this does:

- ketama: each server gets `floor(weight / total_weight * 40 * servers) * 4` points, computed in C
  single precision (float32; `_f32` rounds each step as C does). Point group i of a server is the
  MD5 of "<name>-<i>", four little-endian uint32 values from its 16 bytes. A key's hash goes to the
  first point at or above it, wrapping to the lowest point.
- Servers are ordered by name, shorter names first, then bytewise: twemproxy sorts its server list
  so when it checks names for duplicates, and every distribution works on that order. The order
  servers are configured or discovered in therefore never matters.
- modula: a server appears `weight` times in a list, in that order; a key goes to entry
  `hash % len(list)`.
- random: any live server, whatever the key (for replicated data only).
- A server's name is its `name` when given, else "host:port", else just "host" when the port is
  11211 (libmemcached's convention, kept by twemproxy).
- Only live servers enter the ring, with the weights re-divided among them, so a ring built without
  an ejected server is exactly twemproxy's ring while it has that server ejected.
- A pool of one server needs no hash; an empty key hashes to 0.
- hash_tag "{}": the part of the key between the first "{" and the next "}" after it is hashed
  instead of the whole key, if that part is not empty.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import struct
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

from sidecars.ambassador import engine
from sidecars.ambassador.cluster import hashing
from sidecars.ambassador.cluster.hashing import HashFunction

# The compiled build of the hashes when it is installed (setup.py): the same functions, in C.
HASHING = engine.fastest(hashing, "sidecars.ambassador.cluster._hashing_c")
HASHES: dict[str, HashFunction] = HASHING.module.HASHES

Distribution = Literal["ketama", "modula", "random"]
DISTRIBUTIONS: tuple[Distribution, ...] = ("ketama", "modula", "random")

KETAMA_POINTS_PER_SERVER = 160
KETAMA_POINTS_PER_HASH = 4
LIBMEMCACHED_PORT = 11211
# twemproxy formats "<name>-<i>" into a 273-byte buffer: longer labels are cut to 272 bytes.
KETAMA_MAX_LABEL_BYTES = 272

_F32 = struct.Struct("f")


def _f32(x: float) -> float:
    """`x` rounded to C float. Each single-precision +, *, / computed in double and then rounded
    is correctly rounded (53 >= 2 * 24 + 2 bits), so this reproduces float arithmetic exactly."""
    return float(_F32.unpack(_F32.pack(x))[0])


def server_order(name: str) -> tuple[int, bytes]:
    """twemproxy's order of server names (`string_compare`: length first, then the bytes)."""
    raw = name.encode()
    return len(raw), raw


def default_name(host: str, port: int) -> str:
    """twemproxy's name of a server given without one."""
    return host if port == LIBMEMCACHED_PORT else f"{host}:{port}"


def ketama_points(weight: int, total_weight: int, live: int) -> int:
    """Points twemproxy gives a live server on the ketama continuum."""
    pct = _f32(weight / total_weight)
    value = _f32(_f32(_f32(pct * KETAMA_POINTS_PER_SERVER) / 4) * live)
    # `+ 0.0000000001` is a double; floorf() takes the sum back as a float.
    return math.floor(_f32(value + 0.0000000001)) * KETAMA_POINTS_PER_HASH


class Server(NamedTuple):
    name: str
    weight: int


class Ring:
    """The live servers' positions for one distribution; `index(key)` is a position in `servers`
    (which holds them in twemproxy's order, see `server_order`)."""

    def __init__(
        self,
        servers: Sequence[Server],
        distribution: Distribution = "ketama",
        hash_name: str = "fnv1a_64",
        hash_tag: str = "",
        *,
        pool_size: int | None = None,
    ) -> None:
        """`servers`: the live servers, in any order. `pool_size`: all servers, live or not
        (twemproxy skips hashing when its pool has a single server, even if it is ejected)."""
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {distribution!r}; known: {', '.join(DISTRIBUTIONS)}")
        if hash_name not in HASHES:
            raise ValueError(f"unknown hash {hash_name!r}; known: {', '.join(HASHES)}")
        if hash_tag and len(hash_tag) != 2:
            raise ValueError(f"hash_tag must be two characters, got {hash_tag!r}")
        self.servers = tuple(sorted(servers, key=lambda s: server_order(s.name)))
        names = [s.name for s in self.servers]
        if len(set(names)) != len(names):
            raise ValueError(f"server names must be unique: {names}")
        self.distribution = distribution
        self.hash_name = hash_name
        self.hash: HashFunction = HASHES[hash_name]
        self.tag_open = ord(hash_tag[0]) if hash_tag else -1
        self.tag_close = hash_tag[1].encode("latin-1") if hash_tag else b""
        self.single = (pool_size if pool_size is not None else len(self.servers)) == 1
        self._points: list[int] = []
        self._owners: list[int] = []
        if distribution == "ketama":
            self._build_ketama()
        elif distribution == "modula":
            self._owners = [i for i, s in enumerate(self.servers) for _ in range(s.weight)]
        self.index: Callable[[bytes], int] = self._make_index()

    def _build_ketama(self) -> None:
        live = len(self.servers)
        total = sum(s.weight for s in self.servers)
        points: list[tuple[int, int]] = []
        for index, server in enumerate(self.servers):
            count = ketama_points(server.weight, total, live)
            for group in range(count // KETAMA_POINTS_PER_HASH):
                label = f"{server.name}-{group}".encode()[:KETAMA_MAX_LABEL_BYTES]
                digest = hashlib.md5(label).digest()
                points.extend((value, index) for value in struct.unpack("<4I", digest))
        points.sort(key=lambda p: p[0])  # equal values (1 in ~10^5 rings) keep build order
        # A last point past every 32-bit hash, owned by the first: the wrap-around without a branch.
        self._points = [p for p, _ in points] + [1 << 32]
        self._owners = [i for _, i in points] + [points[0][1] if points else 0]

    def __len__(self) -> int:
        return len(self.servers)

    def hashed_part(self, key: bytes) -> bytes:
        """The part of `key` that is hashed: inside the hash tag when it has a non-empty one."""
        if self.tag_open >= 0:
            start = key.find(self.tag_open)
            if start >= 0:
                end = key.find(self.tag_close, start + 1)
                if end > start + 1:
                    return key[start + 1 : end]
        return key

    def key_hash(self, key: bytes) -> int:
        key = self.hashed_part(key)
        return self.hash(key) if key else 0

    def owner_of_hash(self, value: int) -> int:
        """The server of a hash value (for comparing rings); random rings have none: -1."""
        if not self.servers:
            return -1
        if self.single:
            return 0
        if self.distribution == "ketama":
            return self._owners[bisect.bisect_left(self._points, value)]
        if self.distribution == "modula":
            return self._owners[value % len(self._owners)]
        return -1

    def _make_index(self) -> Callable[[bytes], int]:
        """`index(key)`: position in `servers` of the server holding `key`, -1 when none is live.
        Built per ring so the common cases (ketama, no hash tag) run without branches or calls."""
        n = len(self.servers)
        if not n:
            return lambda key: -1
        if self.single:
            return lambda key: 0
        if self.distribution == "random":
            return lambda key: random.randrange(n)
        owners, points = self._owners, self._points
        hash_function = self.hash
        bisect_left = bisect.bisect_left
        if self.tag_open >= 0:
            key_hash = self.key_hash
            if self.distribution == "ketama":
                return lambda key: owners[bisect_left(points, key_hash(key))]
            return lambda key: owners[key_hash(key) % len(owners)]
        if self.distribution == "ketama":
            return lambda key: owners[bisect_left(points, hash_function(key) if key else 0)]
        count = len(owners)
        return lambda key: owners[(hash_function(key) if key else 0) % count]


def moved_share(before: Ring, after: Ring, samples: int = 4096) -> float:
    """Share of the hash space whose server (by name) differs between two rings, from evenly spaced
    samples: what a reshard moves (keys now read from a server that does not hold them)."""
    if before.distribution == "random" or after.distribution == "random":
        return 1.0 if [s.name for s in before.servers] != [s.name for s in after.servers] else 0.0
    step = (1 << 32) // samples
    moved = 0
    for k in range(samples):
        value = k * step + step // 2
        a, b = before.owner_of_hash(value), after.owner_of_hash(value)
        name_a = before.servers[a].name if a >= 0 else None
        name_b = after.servers[b].name if b >= 0 else None
        if name_a != name_b:
            moved += 1
    return moved / samples
