"""File identity: device + inode, confirmed by a hash of the file's head.

The inode survives a rename (rename+create rotation) and the path does not; the head hash catches
what the inode cannot: an inode reused by a new file after the old one was deleted, and a file
truncated in place (copytruncate) even after it grew back past the old offset. A file shorter than
`fingerprint_bytes` is fingerprinted over what it has; the fingerprint is extended as the file
grows, and a comparison only ever uses the length that was stored, so the short head of a young
file still identifies it once it is long.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass


def file_key(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}"


def head_hash(head: bytes) -> str:
    return hashlib.blake2b(head, digest_size=8).hexdigest()


@dataclass(slots=True)
class Fingerprint:
    length: int  # bytes of the head covered; below the configured size only while the file is shorter
    digest: str

    @classmethod
    def of(cls, head: bytes) -> Fingerprint:
        return cls(len(head), head_hash(head))

    @property
    def identifies(self) -> bool:
        """Whether it can tell contents apart: the head of an empty file is every file's head."""
        return self.length > 0

    def matches(self, head: bytes) -> bool:
        """Whether `head` (at least as long as the file's first `length` bytes) starts the same file."""
        if len(head) < self.length:
            return False
        return head_hash(head[: self.length]) == self.digest


def read_head(fd: int, size: int) -> bytes:
    """The first `size` bytes of the open file `fd` (fewer when it is shorter), wherever it is read."""
    return os.pread(fd, size, 0)
