"""twemproxy's hash functions and key distributions, pinned by values twemproxy 0.5 computes.

The vectors are the outputs of twemproxy's own hashkit on x86-64 for a few keys chosen for their
edge cases: empty, one byte, every length remainder, bytes >= 0x80 (read as signed `char` there),
a hash tag. The integration tests check the same against a running nutcracker on many more keys.
"""

from __future__ import annotations

import pytest

from sidecars.ambassador import engine
from sidecars.ambassador.cluster import hashing
from sidecars.ambassador.cluster.sharding import HASHING, Ring, Server, default_name, ketama_points, moved_share

TWIN, WHY = engine.twin_of(hashing, "sidecars.ambassador.cluster._hashing_c")
BUILDS = [hashing, TWIN] if TWIN is not None else [hashing]

NAMES = [
    "one_at_a_time", "md5", "crc16", "crc32", "crc32a", "fnv1_64",
    "fnv1a_64", "fnv1_32", "fnv1a_32", "hsieh", "murmur", "jenkins",
]  # fmt: skip
KEYS = [b"", b"a", b"foo", b"key:000000000001", b"\xff\x80Az", b"{user1000}:profile", bytes(range(10))]
VECTORS = [
    [0, 3649838548, 0, 0, 0, 2216829733, 2216829733, 2166136261, 2166136261, 0, 0, 3735928572],
    [3392050242, 3111502092, 31879, 26807, 3904355907, 2248259518, 2248273036, 84696446, 3826002220,
     2472816263, 1262581116, 3768813200],
    [596015325, 3675831724, 205303702, 3187, 2356372769, 1805727027, 4275688823, 1083137555, 2851307223,
     1993659431, 3303027599, 2583187353],
    [2001924870, 1964159014, 963175132, 12075, 791383045, 2116155901, 1870535797, 2822210973, 611578645,
     249238381, 481916606, 2724167308],
    [3154106120, 890732283, 2458685913, 18374, 1204167691, 2741979945, 3064858577, 3403524745, 4234245297,
     157240514, 3705099840, 896737316],
    [427876964, 220551029, 855140628, 18477, 3358413875, 2438137886, 400546964, 4257962878, 1453000660,
     4241752362, 1108764390, 3565512916],
    [359706027, 1221946309, 645276536, 17772, 1164760902, 795284364, 3459335538, 3161358700, 797261938,
     1644313070, 574461043, 3036161074],
]  # fmt: skip


@pytest.mark.parametrize("index", range(len(NAMES)), ids=NAMES)
def test_hash_functions_match_twemproxy(index: int) -> None:
    name = NAMES[index]
    for build in BUILDS:
        assert [build.HASHES[name](key) for key in KEYS] == [row[index] for row in VECTORS], build.__name__


def test_rings_use_the_compiled_hashes() -> None:
    assert TWIN is not None, WHY  # the test environment installs with a compiler
    assert HASHING.module is TWIN


def test_every_twemproxy_hash_is_offered() -> None:
    assert sorted(hashing.HASHES) == sorted(NAMES)


def test_fnv1a_64_long_ascii_and_binary_keys_agree_with_the_bytewise_definition() -> None:
    # The ASCII path masks every few bytes, the other after every byte: both must be the C loop.
    def reference(key: bytes) -> int:
        h = 0x84222325
        for b in key:
            h = ((h ^ (b if b < 0x80 else b | 0xFFFFFF00)) * 0x1B3) & 0xFFFFFFFF
        return h

    for key in (b"x" * 251, bytes(range(256)), b"k" * 7, b"k" * 8, b"k" * 9):
        for build in BUILDS:
            assert build.fnv1a_64(key) == reference(key)


def test_ketama_points_follow_weights_in_single_precision() -> None:
    assert ketama_points(1, 3, 3) == 160
    assert [ketama_points(w, 6, 3) for w in (1, 2, 3)] == [80, 160, 240]
    # 1/25 * 40 * 25 is 39.99999... in float: twemproxy gives each of 25 equal servers 156 points.
    assert ketama_points(1, 25, 25) == 156


def test_servers_are_ordered_as_twemproxy_orders_them() -> None:
    ring = Ring([Server("zz", 1), Server("a", 1), Server("mmm", 1), Server("b", 1)], "modula")
    assert [s.name for s in ring.servers] == ["a", "b", "zz", "mmm"]


def test_modula_repeats_a_server_per_weight() -> None:
    ring = Ring([Server("a", 2), Server("b", 1)], "modula", "crc32a")
    for key in (b"x", b"y", b"z", b"w"):
        assert ring.index(key) == [0, 0, 1][hashing.crc32a(key) % 3]


def test_hash_tag_hashes_the_tagged_part_only_when_it_is_not_empty() -> None:
    ring = Ring([Server(f"s{i}", 1) for i in range(3)], hash_tag="{}")
    assert ring.hashed_part(b"{user1}:profile") == b"user1"
    assert ring.hashed_part(b"a{b}c{d}") == b"b"
    assert ring.hashed_part(b"{}:x") == b"{}:x"  # empty tag: the whole key
    assert ring.hashed_part(b"no{close") == b"no{close"
    assert ring.index(b"{user1}:profile") == ring.index(b"{user1}:settings") == ring.index(b"user1")


def test_one_server_pool_and_empty_key() -> None:
    assert Ring([Server("only", 1)]).index(b"anything") == 0
    assert Ring([], pool_size=3).index(b"k") == -1
    ring = Ring([Server(f"s{i}", 1) for i in range(3)])
    assert ring.key_hash(b"") == 0


def test_default_names_drop_the_memcached_port() -> None:
    assert default_name("10.0.0.1", 11211) == "10.0.0.1"
    assert default_name("10.0.0.1", 6379) == "10.0.0.1:6379"


def test_bad_ring_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        Ring([Server("a", 1), Server("a", 2)])
    with pytest.raises(ValueError, match="unknown hash"):
        Ring([Server("a", 1)], hash_name="sha1")
    with pytest.raises(ValueError, match="two characters"):
        Ring([Server("a", 1)], hash_tag="{")


def test_moved_share_of_removing_one_of_three_ketama_servers() -> None:
    full = Ring([Server(f"s{i}", 1) for i in range(3)])
    without = Ring([Server("s0", 1), Server("s2", 1)])
    share = moved_share(full, without)
    assert 0.2 < share < 0.45  # about the third s1 held; ketama moves nothing else
    assert moved_share(full, full) == 0.0


def test_random_spreads_over_the_live_servers_whatever_the_key() -> None:
    ring = Ring([Server(f"s{i}", 1) for i in range(3)], "random")
    assert {ring.index(b"same key") for _ in range(300)} == {0, 1, 2}
    assert ring.owner_of_hash(12345) == -1  # no key has a fixed place
    assert Ring([Server("only", 1)], "random").index(b"k") == 0
