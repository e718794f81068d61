"""The memcached listener: the text protocol from the app, each key to its shard (see `sharded_proxy.py`).

- get, gets, gat, gats with many keys: one request per shard, the hits merged back in the order the
  keys were asked (a miss is simply absent, as from one server);
- set, add, replace, append, prepend, cas, delete, incr, decr, touch: to the key's shard. `noreply`
  is honoured towards the app but not sent on: the shard answers, the proxy drops the answer, so a
  shard's error on a noreply command can never shift the replies of the commands behind it;
- version, verbosity and quit are answered by the proxy; stats, flush_all and the other commands
  that address one server, and the meta commands, answer SERVER_ERROR naming why; unknown commands
  ERROR, as memcached does. A value larger than max_value_bytes answers "SERVER_ERROR object too
  large for cache" and its data is skipped without being buffered, as memcached does.
- the binary protocol is refused (the connection is closed and the refusal logged).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sidecars import __version__
from sidecars.ambassador.cluster.endpoint import Outcome
from sidecars.ambassador.proxy.sharded_proxy import (
    PAUSE_PENDING,
    Command,
    Fanout,
    ShardedClient,
    ShardedProxy,
    ShardLink,
    complete,
)

if TYPE_CHECKING:
    from sidecars.ambassador.proxy.shards import Shard

CRLF = b"\r\n"
END = b"END\r\n"
NO_SHARD = b"SERVER_ERROR no shard available (every shard is out of the ring)\r\n"
MAX_KEY_BYTES = 250
# A command line (a get with many keys is the longest) may not exceed this.
MAX_LINE_BYTES = 256 * 1024

# What a shard's reply to a command looks like.
LINE = 0  # one line: STORED, DELETED, a number, an error
VALUES = 1  # VALUE blocks up to END (or one error line)
QUIET = 2  # one line nobody reads (the app asked noreply)

_RETRIEVAL = {b"get": 1, b"gets": 1, b"gat": 2, b"gats": 2}  # index of the first key
_STORAGE = {b"set": 5, b"add": 5, b"replace": 5, b"append": 5, b"prepend": 5, b"cas": 6}  # tokens w/o noreply
_KEYED = {b"delete": (2, 3), b"incr": (3, 3), b"decr": (3, 3), b"touch": (3, 3)}  # (min, max) tokens w/o noreply
_REFUSED = {
    b"stats": "it addresses one server; ask each server directly",
    b"flush_all": "it needs every shard; run it on each server directly",
    b"cache_memlimit": "server administration; run it on each server directly",
    b"shutdown": "server administration; run it on each server directly",
    b"slabs": "server administration; run it on each server directly",
    b"lru": "server administration; run it on each server directly",
    b"lru_crawler": "server administration; run it on each server directly",
    b"watch": "server administration; run it on each server directly",
    b"extstore": "server administration; run it on each server directly",
    b"misbehave": "server administration; run it on each server directly",
    **dict.fromkeys((b"mg", b"ms", b"md", b"ma", b"mn", b"me"), "meta commands are not supported"),
}
_OK, _RESET = Outcome.OK, Outcome.RESET


class MemcachedError(ValueError):
    pass


class MemcachedClient(ShardedClient):
    def __init__(self, proxy: MemcachedProxy) -> None:
        super().__init__(proxy)
        self.mp = proxy
        self.skip = 0  # bytes of a refused value still to be dropped

    def data_received(self, data: bytes) -> None:
        if self.skip:
            dropped = min(self.skip, len(data))
            self.skip -= dropped
            data = data[dropped:]
            if not data:
                return
        if self.buf is None and data[:1] == b"\x80":
            self.p.stats.error("bad_request")
            self.p.log_bad_request("memcached binary protocol is not supported: connection closed")
            self.close()
            return
        super().data_received(data)

    def parse(self, data: bytes) -> tuple[int, int]:
        p = self.mp
        queue = self.queue
        end = len(data)
        pos = 0
        now = p.now
        while pos < end:
            if self.skip:  # the data block of a refused command: dropped, never buffered
                taken = min(self.skip, end - pos)
                pos += taken
                self.skip -= taken
                continue
            if len(queue) >= p.max_pending:
                self.pause(PAUSE_PENDING)
                return pos, 0
            nl = data.find(b"\n", pos)
            if nl < 0:
                if end - pos > MAX_LINE_BYTES:
                    raise MemcachedError("line too long")
                return pos, end - pos + 1
            line = data[pos : nl - 1 if nl > pos and data[nl - 1] == 13 else nl]
            tokens = line.split()
            start = pos
            pos = nl + 1
            if not tokens:
                self.queue_local(b"ERROR\r\n")
                continue
            name = tokens[0]
            first_key = _RETRIEVAL.get(name)
            if first_key is not None:
                self._retrieval(tokens, first_key, data[start:pos], now)
                continue
            fields = _STORAGE.get(name)
            if fields is not None:
                noreply = len(tokens) == fields + 1 and tokens[-1] == b"noreply"
                if len(tokens) != fields + noreply or not tokens[4].isdigit():
                    self.queue_local(b"CLIENT_ERROR bad command line format\r\n")
                    continue
                size = int(tokens[4])
                if size > p.max_value:
                    p.stats.error("value_too_large")
                    if not noreply:
                        self.queue_local(b"SERVER_ERROR object too large for cache\r\n")
                    self.skip = size + 2
                    continue
                stop = pos + size + 2
                if stop > end:
                    return start, stop - start
                if data[stop - 2 : stop] != CRLF:
                    raise MemcachedError("bad data chunk")
                raw = data[start:stop] if not noreply else b" ".join(tokens[:-1]) + CRLF + data[pos:stop]
                pos = stop
                self._keyed(tokens, raw, noreply, now)
                continue
            limits = _KEYED.get(name)
            if limits is not None:
                noreply = len(tokens) > limits[0] and tokens[-1] == b"noreply"
                count = len(tokens) - noreply
                if not limits[0] <= count <= limits[1]:
                    self.queue_local(b"ERROR\r\n")
                    continue
                raw = data[start:pos] if not noreply else b" ".join(tokens[:-1]) + CRLF
                self._keyed(tokens, raw, noreply, now)
                continue
            self._other(name, tokens)
        return pos, 0

    def _key_ok(self, key: bytes) -> bool:
        if len(key) > MAX_KEY_BYTES:
            self.queue_local(b"CLIENT_ERROR bad command line format\r\n")
            return False
        return True

    def _keyed(self, tokens: list[bytes], raw: bytes, noreply: bool, now: float) -> None:
        p = self.mp
        key = tokens[1]
        if not self._key_ok(key):
            return
        shard = p.shards.route(key)
        if shard is None:
            if not noreply:
                self.queue_local(NO_SHARD)
            return
        link = p.link(shard, self)
        if isinstance(link, str):
            if not noreply:
                self.queue_local(p.error_reply(f"shard {shard.name} {link}"))
            return
        if noreply:
            link.send(Command(None, shard, now, QUIET), raw)
            return
        cmd = Command(self, shard, now, LINE)
        self.queue.append(cmd)
        link.send(cmd, raw)

    def _retrieval(self, tokens: list[bytes], first_key: int, raw: bytes, now: float) -> None:
        p = self.mp
        keys = tokens[first_key:]
        if len(keys) == 1 and len(keys[0]) <= MAX_KEY_BYTES:
            # The common case, without the grouping a multi-key get needs.
            shard = p.shards.route(keys[0])
            link = p.link(shard, self) if shard is not None else None
            if link is None or isinstance(link, str):
                self.queue_local(NO_SHARD if shard is None else p.error_reply(f"shard {shard.name} {link}"))
                return
            cmd = Command(self, shard, now, VALUES)
            self.queue.append(cmd)
            link.send(cmd, raw)
            return
        if not keys:
            self.queue_local(b"ERROR\r\n")
            return
        for key in keys:
            if not self._key_ok(key):
                return
        route = p.shards.route
        groups: dict[Shard | None, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(route(key), []).append(i)
        if None in groups:
            self.queue_local(NO_SHARD)
            return
        prefix = tokens[:first_key]
        if len(groups) == 1:
            shard = next(iter(groups))
            assert shard is not None
            link = p.link(shard, self)
            if isinstance(link, str):
                self.queue_local(p.error_reply(f"shard {shard.name} {link}"))
                return
            cmd = Command(self, shard, now, VALUES)
            self.queue.append(cmd)
            link.send(cmd, raw)
            return
        fan = Fanout(self, _merge_values(keys))
        self.queue.append(fan)
        for shard, positions in groups.items():
            assert shard is not None
            cmd = Command(self, shard, now, (VALUES, positions))
            cmd.parent = fan
            fan.parts.append(cmd)
            fan.left += 1
            link = p.link(shard, self)
            if isinstance(link, str):
                complete(cmd, p.error_reply(f"shard {shard.name} {link}"))  # flushed when parsing ends
                continue
            link.send(cmd, b" ".join([*prefix, *(keys[i] for i in positions)]) + CRLF)

    def _other(self, name: bytes, tokens: list[bytes]) -> None:
        p = self.mp
        if name == b"version":
            self.queue_local(b"VERSION %s-sidecars\r\n" % __version__.encode())
        elif name == b"quit":
            self.closing = True
        elif name == b"verbosity":
            if tokens[-1] != b"noreply":
                self.queue_local(b"OK\r\n")
        elif name in _REFUSED:
            p.stats.error("unsupported_command")
            if name == b"ms" and len(tokens) > 2 and tokens[2].isdigit():
                self.skip = int(tokens[2]) + 2  # its data block follows
            reason = _REFUSED[name].encode()
            self.queue_local(b"SERVER_ERROR %s is not supported by this proxy: %s\r\n" % (name, reason))
        else:
            p.stats.error("unsupported_command")
            self.queue_local(b"ERROR\r\n")


def _items(reply: bytes) -> list[tuple[bytes, bytes]] | None:
    """(key, raw VALUE block) pairs of a retrieval reply; None when the reply is an error line."""
    items: list[tuple[bytes, bytes]] = []
    pos = 0
    while True:
        nl = reply.find(CRLF, pos)
        line = reply[pos:nl]
        if line == b"END":
            return items
        if not line.startswith(b"VALUE "):
            return None
        size = int(line.split()[3])
        stop = nl + 2 + size + 2
        items.append((line.split()[1], reply[pos:stop]))
        pos = stop


def _merge_values(keys: list[bytes]) -> Callable[[list[Command]], bytes]:
    def merge(parts: list[Command]) -> bytes:
        found: list[bytes | None] = [None] * len(keys)
        for part in parts:
            reply = part.reply or b""
            items = _items(reply)
            if items is None:
                return reply
            _, positions = part.tag
            j = 0
            for i in positions:  # hits come back in the order the keys were sent; misses are absent
                if j < len(items) and items[j][0] == keys[i]:
                    found[i] = items[j][1]
                    j += 1
        return b"".join(block for block in found if block is not None) + END

    return merge


class MemcachedLink(ShardLink):
    p: MemcachedProxy

    def data_received(self, received: bytes) -> None:
        data = self.joined(received)
        if data is None:
            return
        fifo = self.fifo
        now = self.p.loop.time()
        shard = self.shard
        touched = self.p.replied
        pos = 0
        end = len(data)
        find = data.find
        try:
            while pos < end:
                if not fifo:
                    self.fail("protocol", "sent a reply to no command", _RESET)
                    return
                cmd = fifo[0]
                tag = cmd.tag
                kind = tag if tag.__class__ is int else tag[0]
                if kind != VALUES:
                    nl = find(CRLF, pos)
                    stop = nl + 2 if nl >= 0 else -(end - pos + 1)
                else:
                    stop = self._values_end(data, pos)
                if stop < 0:
                    if -stop > self.p.max_reply or end - pos > self.p.max_reply:
                        self.fail("reply_too_large", f"reply exceeds max_reply_bytes ({self.p.max_reply})")
                        return
                    self.buf = bytearray(data[pos:])
                    self.need = -stop
                    break
                fifo.popleft()
                reply = data[pos:stop]
                pos = stop
                shard.observe(now - cmd.t0)
                if kind == QUIET:
                    continue
                client = complete(cmd, reply)
                if client is not None:
                    touched.add(client)
        except (ValueError, IndexError):
            self.fail("protocol", "sent an invalid reply", _RESET)
            return
        finally:
            self.p.schedule()
        ep = shard.endpoint
        if ep.consecutive_errors:
            ep.start_request()  # answers again: end the failure streak the outlier detector counts
            ep.end_request(_OK, 0.0)

    @staticmethod
    def _values_end(data: bytes, pos: int) -> int:
        """End of a retrieval reply at `pos`, or -(bytes needed from pos)."""
        start = pos
        end = len(data)
        while True:
            nl = data.find(CRLF, pos)
            if nl < 0:
                return -(end - start + 1)
            if data[pos : pos + 6] == b"VALUE ":
                stop = nl + 2 + int(data[pos:nl].split()[3]) + 2
                if stop > end:
                    return -(stop - start)
                pos = stop
                continue
            return nl + 2  # END, or an error line ending the reply


class MemcachedProxy(ShardedProxy):
    client_class = MemcachedClient
    link_class = MemcachedLink

    def error_reply(self, message: str) -> bytes:
        if message.startswith("ERR Protocol error: "):
            return b"CLIENT_ERROR " + message[20:].encode("utf-8", "replace") + CRLF
        return b"SERVER_ERROR " + message.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace") + CRLF
