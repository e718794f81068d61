"""RESP framing, on both builds (the source and its compiled twin): commands parsed in bulk with their
raw bytes, replies delimited, every limit a clear error, and any split of the input into reads
giving the same result."""

from __future__ import annotations

from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecars.ambassador import engine
from sidecars.ambassador.proxy import resp

TWIN, WHY = engine.twin_of(resp, "sidecars.ambassador.proxy._resp_c")
BUILDS = [resp, TWIN] if TWIN is not None else [resp]
MIB = 1 << 20


def test_the_compiled_build_is_installed() -> None:
    assert TWIN is not None, WHY  # the test environment installs with a compiler


@pytest.fixture(params=BUILDS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def build(request: pytest.FixtureRequest) -> ModuleType:
    module: ModuleType = request.param
    return module


def parse(build: ModuleType, data: bytes, **limits: int) -> tuple[list[resp.Command], int, int, str | None]:
    out: list[resp.Command] = []
    pos, need, error = build.parse_commands(
        data, 0, out, limits.get("max_value", 8 * MIB), limits.get("max_command", 16 * MIB), limits.get("count", 10**6)
    )
    return out, pos, need, error


def test_pipelined_commands_keep_their_raw_bytes(build: ModuleType) -> None:
    one = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n"
    two = b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$5\r\na\r\nb\x00\r\n"
    data = one + b"*0\r\n*-1\r\n" + two + b"PING  hi\r\n"
    out, pos, need, error = parse(build, data)
    assert pos == len(data)
    assert out == [([b"GET", b"key"], one), ([b"SET", b"", b"a\r\nb\x00"], two), ([b"PING", b"hi"], None)]
    assert (error, need) == (None, 0)


def test_incomplete_input_says_how_much_more_it_needs(build: ModuleType) -> None:
    data = b"*2\r\n$3\r\nGET\r\n$1000\r\n" + b"x" * 10
    out, pos, need, error = parse(build, data)
    assert (out, pos, error) == ([], 0, None)
    assert need == len(b"*2\r\n$3\r\nGET\r\n$1000\r\n") + 1002
    out, pos, need, _ = parse(build, b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPI")
    assert len(out) == 1 and pos == 14 and need > 0


def test_a_count_limit_stops_parsing_with_the_rest_left(build: ModuleType) -> None:
    out, pos, need, _ = parse(build, b"*1\r\n$4\r\nPING\r\n" * 5, count=2)
    assert (len(out), pos, need) == (2, 28, 0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"*x\r\n", "invalid multibulk length"),
        (b"*1\r\n+PING\r\n", "expected '$', got '+'"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$4\r\nPINGxx", "bulk string not terminated by CRLF"),
        (b"*1\r\n$2000\r\n", "value of 2000 bytes exceeds max_value_bytes (1024)"),
        (b"*3\r\n" + (b"$1000\r\n" + b"x" * 1000 + b"\r\n") * 2 + b"$1000\r\n", "exceeds max_command_bytes (2048)"),
        (b"*" + b"1" * 40, "invalid multibulk length"),
        (b"*1\r\n$" + b"1" * 40, "value of"),
        (b"x" * (70 * 1024), "too big inline request"),
        (b"*99999999\r\n", "invalid multibulk length"),
    ],
)
def test_broken_input_is_an_error_naming_the_problem(build: ModuleType, data: bytes, message: str) -> None:
    out, _, _, error = parse(build, b"*1\r\n$4\r\nPING\r\n" + data, max_value=1024, max_command=2048)
    assert error is not None and message in error
    assert out == [([b"PING"], b"*1\r\n$4\r\nPING\r\n")]  # the commands before it are kept


REPLIES = [
    b"+OK\r\n",
    b"-ERR wrong\r\n",
    b":-42\r\n",
    b"$5\r\nh\r\nlo\r\n",
    b"$-1\r\n",
    b"$0\r\n\r\n",
    b"*-1\r\n",
    b"*0\r\n",
    b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n*1\r\n+x\r\n$-1\r\n",
]


@pytest.mark.parametrize("reply", REPLIES)
def test_reply_end_of_each_type_and_every_truncation(build: ModuleType, reply: bytes) -> None:
    data = b"+FIRST\r\n" + reply + b":7\r\n"
    assert build.reply_end(data, 8) == 8 + len(reply)
    for cut in range(8, 8 + len(reply)):
        need = build.reply_end(data[:cut], 8)
        assert need < 0 and 8 + -need <= 8 + len(reply), (cut, need)  # a lower bound, never more than owed


def test_reply_garbage_is_an_error(build: ModuleType) -> None:
    for bad in (b"?\r\n", b"$x\r\n", b"*a\r\n"):
        with pytest.raises(ValueError):
            build.reply_end(bad, 0)


def test_merging_helpers(build: ModuleType) -> None:
    assert build.array_elements(b"*3\r\n$1\r\na\r\n$-1\r\n:5\r\n") == [b"$1\r\na\r\n", b"$-1\r\n", b":5\r\n"]
    assert build.array_elements(b"-ERR x\r\n") is None
    assert build.integer_of(b":12\r\n") == 12 and build.integer_of(b"-ERR\r\n") is None
    assert build.encode([b"SET", b"k", b""]) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
    assert build.error("ERR two\r\nlines") == b"-ERR two  lines\r\n"


@given(
    commands=st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=5), min_size=1, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6),
)
def test_any_split_into_reads_parses_the_same(commands: list[list[bytes]], cuts: list[int]) -> None:
    data = b"".join(resp.encode(c) for c in commands)
    for build in BUILDS:
        got: list[list[bytes]] = []
        buf = b""
        edges = sorted({min(c, len(data)) for c in cuts} | {len(data)})
        start = 0
        for edge in edges:
            buf += data[start:edge]
            start = edge
            out: list[resp.Command] = []
            pos, need, error = build.parse_commands(buf, 0, out, MIB, MIB, 10**6)
            assert error is None
            assert need == 0 or len(buf) - pos < need
            got.extend(args for args, _ in out)
            buf = buf[pos:]
        assert got == commands and buf == b""
