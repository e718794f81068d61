"""The key hash functions twemproxy (nutcracker) offers, bit for bit, so a key lands on the same shard.

Each function maps a key to an unsigned 32-bit integer exactly as twemproxy 0.5 on x86-64 does,
quirks included, because a difference of one bit moves the key to another server:

- twemproxy reads keys through `char *`, which is signed on x86-64: in `fnv1*`, `one_at_a_time` and
  one branch of `hsieh` a byte >= 0x80 enters the arithmetic sign-extended (0xFFFFFF80, not 0x80).
  Only keys with such bytes are affected; `_SIGNED` turns a byte into the value C sees.
- `fnv1a_64` is not FNV-1a 64: it runs in 32 bits from the low halves of the 64-bit offset basis and
  prime. `fnv1_64` is truly 64-bit, but only its low 32 bits are returned, and those depend only on
  the low 32 bits of every step, so it runs in 32 bits too.
- `crc32` is libmemcached's: bits 16..30 of the standard CRC-32 (`crc32a` is the standard one).
- `crc16` never masks its 32-bit register to 16 bits.

All arithmetic is modulo 2**32. Where masking after every byte would cost more than the big-integer
growth it prevents, the loops mask every few bytes: xor with a value below 2**32 and multiplication
both commute with reduction modulo 2**32, so the result is the same.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable

HashFunction = Callable[[bytes], int]

_M32 = 0xFFFFFFFF
# A byte as twemproxy's signed `char` turns it into a uint32.
_SIGNED = tuple(b if b < 0x80 else b | 0xFFFFFF00 for b in range(256))

_FNV1A_64_INIT = 0xCBF29CE484222325 & _M32
_FNV_64_PRIME = 0x100000001B3 & _M32
_FNV_32_INIT = 2166136261
_FNV_32_PRIME = 16777619
# Mask every this many bytes: the product grows by at most 32 bits per byte, the loop stays in small ints.
_STRIDE = 8


def fnv1a_64(key: bytes) -> int:
    h = _FNV1A_64_INIT
    if key.isascii():
        n = 0
        for b in key:
            h = (h ^ b) * _FNV_64_PRIME
            n += 1
            if n == _STRIDE:
                h &= _M32
                n = 0
        return h & _M32
    signed = _SIGNED
    for b in key:
        h = ((h ^ signed[b]) * _FNV_64_PRIME) & _M32
    return h


def fnv1_64(key: bytes) -> int:
    h = _FNV1A_64_INIT
    signed = _SIGNED
    for b in key:
        h = ((h * _FNV_64_PRIME) & _M32) ^ signed[b]
    return h


def fnv1a_32(key: bytes) -> int:
    h = _FNV_32_INIT
    signed = _SIGNED
    for b in key:
        h = ((h ^ signed[b]) * _FNV_32_PRIME) & _M32
    return h


def fnv1_32(key: bytes) -> int:
    h = _FNV_32_INIT
    signed = _SIGNED
    for b in key:
        h = ((h * _FNV_32_PRIME) & _M32) ^ signed[b]
    return h


def one_at_a_time(key: bytes) -> int:
    h = 0
    signed = _SIGNED
    for b in key:
        h = (h + signed[b]) & _M32
        h = (h + (h << 10)) & _M32
        h ^= h >> 6
    h = (h + (h << 3)) & _M32
    h ^= h >> 11
    return (h + (h << 15)) & _M32


def md5(key: bytes) -> int:
    return int.from_bytes(hashlib.md5(key).digest()[:4], "little")


def crc32(key: bytes) -> int:
    return (zlib.crc32(key) >> 16) & 0x7FFF


def crc32a(key: bytes) -> int:
    return zlib.crc32(key)


def _crc16_table() -> tuple[int, ...]:
    # CRC-16/XMODEM (polynomial 0x1021), the table twemproxy uses.
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC16 = _crc16_table()


def crc16(key: bytes) -> int:
    crc = 0
    table = _CRC16
    for b in key:
        crc = ((crc << 8) & _M32) ^ table[((crc >> 8) ^ b) & 0xFF]
    return crc


def hsieh(key: bytes) -> int:
    n = len(key)
    if n == 0:
        return 0
    h = 0
    rem = n & 3
    i = 0
    for _ in range(n >> 2):
        h = (h + (key[i] | key[i + 1] << 8)) & _M32
        tmp = (((key[i + 2] | key[i + 3] << 8) << 11) ^ h) & _M32
        h = ((h << 16) & _M32) ^ tmp
        i += 4
        h = (h + (h >> 11)) & _M32
    if rem == 3:
        h = (h + (key[i] | key[i + 1] << 8)) & _M32
        h ^= (h << 16) & _M32
        h ^= (_SIGNED[key[i + 2]] << 18) & _M32
        h = (h + (h >> 11)) & _M32
    elif rem == 2:
        h = (h + (key[i] | key[i + 1] << 8)) & _M32
        h ^= (h << 11) & _M32
        h = (h + (h >> 17)) & _M32
    elif rem == 1:
        h = (h + key[i]) & _M32
        h ^= (h << 10) & _M32
        h = (h + (h >> 1)) & _M32
    h ^= (h << 3) & _M32
    h = (h + (h >> 5)) & _M32
    h ^= (h << 4) & _M32
    h = (h + (h >> 17)) & _M32
    h ^= (h << 25) & _M32
    return (h + (h >> 6)) & _M32


def murmur(key: bytes) -> int:
    m = 0x5BD1E995
    n = len(key)
    h = ((0xDEADBEEF * n) & _M32) ^ n
    i = 0
    while n - i >= 4:
        k = (key[i] | key[i + 1] << 8 | key[i + 2] << 16 | key[i + 3] << 24) * m & _M32
        k ^= k >> 24
        k = k * m & _M32
        h = (h * m & _M32) ^ k
        i += 4
    rem = n - i
    if rem:
        if rem == 3:
            h ^= key[i + 2] << 16
        if rem >= 2:
            h ^= key[i + 1] << 8
        h ^= key[i]
        h = h * m & _M32
    h ^= h >> 13
    h = h * m & _M32
    return h ^ (h >> 15)


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M32


def jenkins(key: bytes) -> int:
    """Bob Jenkins' lookup3 `hashlittle` with initval 13 (its three read paths give the same value)."""
    n = len(key)
    a = b = c = (0xDEADBEEF + n + 13) & _M32
    i = 0
    while n - i > 12:
        a = (a + int.from_bytes(key[i : i + 4], "little")) & _M32
        b = (b + int.from_bytes(key[i + 4 : i + 8], "little")) & _M32
        c = (c + int.from_bytes(key[i + 8 : i + 12], "little")) & _M32
        a = (a - c) & _M32
        a ^= _rot(c, 4)
        c = (c + b) & _M32
        b = (b - a) & _M32
        b ^= _rot(a, 6)
        a = (a + c) & _M32
        c = (c - b) & _M32
        c ^= _rot(b, 8)
        b = (b + a) & _M32
        a = (a - c) & _M32
        a ^= _rot(c, 16)
        c = (c + b) & _M32
        b = (b - a) & _M32
        b ^= _rot(a, 19)
        a = (a + c) & _M32
        c = (c - b) & _M32
        c ^= _rot(b, 4)
        b = (b + a) & _M32
        i += 12
    tail = key[i:]
    if not tail:
        return c
    tail = tail + bytes(12 - len(tail))
    a = (a + int.from_bytes(tail[0:4], "little")) & _M32
    b = (b + int.from_bytes(tail[4:8], "little")) & _M32
    c = (c + int.from_bytes(tail[8:12], "little")) & _M32
    c ^= b
    c = (c - _rot(b, 14)) & _M32
    a ^= c
    a = (a - _rot(c, 11)) & _M32
    b ^= a
    b = (b - _rot(a, 25)) & _M32
    c ^= b
    c = (c - _rot(b, 16)) & _M32
    a ^= c
    a = (a - _rot(c, 4)) & _M32
    b ^= a
    b = (b - _rot(a, 14)) & _M32
    c ^= b
    return (c - _rot(b, 24)) & _M32


# twemproxy's names (its `hash:` setting).
HASHES: dict[str, HashFunction] = {
    "one_at_a_time": one_at_a_time,
    "md5": md5,
    "crc16": crc16,
    "crc32": crc32,
    "crc32a": crc32a,
    "fnv1_64": fnv1_64,
    "fnv1a_64": fnv1a_64,
    "fnv1_32": fnv1_32,
    "fnv1a_32": fnv1a_32,
    "hsieh": hsieh,
    "murmur": murmur,
    "jenkins": jenkins,
}
