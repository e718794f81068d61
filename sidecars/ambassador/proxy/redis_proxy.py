"""The redis listener: RESP2 from the app, each command to the shard of its key (see `sharded_proxy.py`).

What each command becomes (`COMMANDS`):
- one key (GET, SET, HGETALL, ...): forwarded as received to that key's shard;
- MGET, MSET, DEL, UNLINK, EXISTS, TOUCH: split by shard and merged (MGET in key order, the others
  summed or all-OK). A split MSET is not atomic across shards; keys in one shard stay atomic.
- several keys that must be on one shard (RENAME, SINTER, EVAL, ...): forwarded when every key is on
  the same shard (use a hash tag), else an error naming the reason;
- PING, ECHO, QUIT, SELECT of the configured database, CLIENT SETNAME/GETNAME/SETINFO, AUTH (when
  the app must authenticate) and HELLO (RESP2 only: HELLO 3 answers -NOPROTO, so clients fall
  back): answered by the proxy;
- everything that cannot work through shared, sharded connections (MULTI, blocking pops, pub/sub,
  KEYS, SCAN, FLUSHALL, server administration, unknown commands): an error saying why, and the
  connection stays open.

Errors made by the proxy start with "ERR shard <name> ..." when a shard failed, so an app's log says
which shard; a shard's own errors (WRONGTYPE, ...) pass through untouched.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sidecars.ambassador import engine
from sidecars.ambassador.cluster.endpoint import Outcome
from sidecars.ambassador.proxy import resp
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
    import asyncio

    from structlog.typing import FilteringBoundLogger

    from sidecars.ambassador.cluster.cluster import Cluster
    from sidecars.ambassador.proxy.shards import Shard, ShardSet
    from sidecars.ambassador.proxy.stats import ListenerStats
    from sidecars.ambassador.settings import ListenerConfig

# The compiled build of the parser when it is installed (setup.py); its ProtocolError is its own class.
RESP = engine.fastest(resp, "sidecars.ambassador.proxy._resp_c")
parse_commands = RESP.module.parse_commands
reply_end = RESP.module.reply_end
array_elements = RESP.module.array_elements
ProtocolError: type[ValueError] = RESP.module.ProtocolError

# Kinds of commands.
SINGLE = 0  # the key is argument 1
SPLIT = 1  # multi-key, split by shard and merged: MGET, MSET, DEL-like sums
SAME = 2  # several keys that must share a shard
LOCAL = 3  # answered by the proxy
REFUSED = 4  # cannot work through this proxy: the reason is the spec's argument

Spec = tuple[int, Any]

_SINGLE_KEY = """
GET SET SETNX SETEX PSETEX GETSET GETDEL GETEX APPEND STRLEN INCR DECR INCRBY DECRBY INCRBYFLOAT GETRANGE
SETRANGE SUBSTR GETBIT SETBIT BITCOUNT BITPOS BITFIELD BITFIELD_RO EXPIRE PEXPIRE EXPIREAT PEXPIREAT
EXPIRETIME PEXPIRETIME TTL PTTL PERSIST TYPE DUMP RESTORE SORT SORT_RO MOVE HGET HSET HSETNX HMSET HMGET
HDEL HEXISTS HGETALL HKEYS HVALS HLEN HSTRLEN HINCRBY HINCRBYFLOAT HRANDFIELD HSCAN LPUSH RPUSH LPUSHX
RPUSHX LPOP RPOP LLEN LINDEX LINSERT LRANGE LREM LSET LTRIM LPOS SADD SREM SCARD SISMEMBER SMISMEMBER
SMEMBERS SRANDMEMBER SPOP SSCAN ZADD ZINCRBY ZREM ZCARD ZCOUNT ZLEXCOUNT ZSCORE ZMSCORE ZRANK ZREVRANK
ZRANGE ZRANGEBYSCORE ZREVRANGEBYSCORE ZRANGEBYLEX ZREVRANGEBYLEX ZREVRANGE ZREMRANGEBYRANK
ZREMRANGEBYSCORE ZREMRANGEBYLEX ZPOPMIN ZPOPMAX ZRANDMEMBER ZSCAN PFADD GEOADD GEODIST GEOHASH GEOPOS
GEOSEARCH GEORADIUS_RO GEORADIUSBYMEMBER_RO XADD XLEN XRANGE XREVRANGE XDEL XTRIM XACK XCLAIM XAUTOCLAIM
XPENDING XSETID
"""
# (first key, last key (-1: the last argument), step)
_SAME_SHARD: dict[str, tuple[int, int, int]] = {
    **dict.fromkeys(("RENAME", "RENAMENX", "COPY", "SMOVE", "RPOPLPUSH", "LMOVE", "LCS"), (1, 2, 1)),
    **dict.fromkeys(("GEOSEARCHSTORE", "ZRANGESTORE"), (1, 2, 1)),
    **dict.fromkeys(("SDIFF", "SINTER", "SUNION", "SDIFFSTORE", "SINTERSTORE", "SUNIONSTORE"), (1, -1, 1)),
    **dict.fromkeys(("PFCOUNT", "PFMERGE"), (1, -1, 1)),
    "MSETNX": (1, -1, 2),
    "BITOP": (2, -1, 1),
}
# Commands with a key count: (index of the count, index of the first counted key, extra key before it)
_NUMKEYS: dict[str, tuple[int, int, int]] = {
    **dict.fromkeys(("EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"), (2, 3, 0)),
    **dict.fromkeys(("ZUNIONSTORE", "ZINTERSTORE", "ZDIFFSTORE"), (2, 3, 1)),
    **dict.fromkeys(("ZUNION", "ZINTER", "ZDIFF", "SINTERCARD", "ZINTERCARD", "LMPOP", "ZMPOP"), (1, 2, 0)),
}
_REFUSED = {
    "transactions need a connection of their own; shard connections are shared by all clients": (
        "MULTI EXEC DISCARD WATCH UNWATCH"
    ),
    "blocking commands would stall a shard connection shared by all clients": (
        "BLPOP BRPOP BRPOPLPUSH BLMOVE BLMPOP BZPOPMIN BZPOPMAX BZMPOP WAIT WAITAOF"
    ),
    "pub/sub is not sharded; connect to a server directly": (
        "SUBSCRIBE PSUBSCRIBE SSUBSCRIBE UNSUBSCRIBE PUNSUBSCRIBE SUNSUBSCRIBE PUBLISH SPUBLISH PUBSUB"
    ),
    "it needs every shard; run it on each server directly": "KEYS SCAN RANDOMKEY DBSIZE FLUSHDB FLUSHALL SWAPDB",
    "server administration; run it on each server directly": (
        "INFO CONFIG DEBUG SAVE BGSAVE BGREWRITEAOF LASTSAVE SHUTDOWN SLAVEOF REPLICAOF ROLE SYNC PSYNC "
        "MONITOR SLOWLOG LATENCY MODULE ACL CLUSTER READONLY READWRITE ASKING FAILOVER SCRIPT FUNCTION "
        "COMMAND TIME LOLWUT RESET OBJECT MEMORY MIGRATE"
    ),
}


def _table() -> dict[bytes, Spec]:
    table: dict[str, Spec] = {}
    for name in _SINGLE_KEY.split():
        table[name] = (SINGLE, None)
    for name, positions in _SAME_SHARD.items():
        table[name] = (SAME, positions)
    for name, numkeys in _NUMKEYS.items():
        table[name] = (SAME, numkeys)
    for reason, names in _REFUSED.items():
        for name in names.split():
            table[name] = (REFUSED, reason)
    for name in ("MGET", "MSET", "DEL", "UNLINK", "EXISTS", "TOUCH"):
        table[name] = (SPLIT, name)
    for name in ("PING", "ECHO", "QUIT", "SELECT", "CLIENT", "AUTH", "HELLO", "GEORADIUS", "GEORADIUSBYMEMBER"):
        table[name] = (LOCAL, name)
    for name in ("XREAD", "XREADGROUP", "XGROUP", "XINFO"):
        table[name] = (LOCAL, name)
    # Spelled as clients send them (upper or lower case), so most lookups need no .upper().
    out: dict[bytes, Spec] = {}
    for name, spec in table.items():
        out[name.encode()] = out[name.lower().encode()] = spec
    return out


COMMANDS = _table()
_OK, _RESET = Outcome.OK, Outcome.RESET
NO_SHARD = resp.error("ERR no shard available (every shard is out of the ring)")
_NUMKEYS_BY_NAME = {k.encode(): v for k, v in _NUMKEYS.items()}
_ALLOWED_BEFORE_AUTH = frozenset({b"AUTH", b"HELLO", b"QUIT"})


def _wrong_args(name: bytes) -> bytes:
    return resp.error(f"ERR wrong number of arguments for '{name.decode('latin-1').lower()}' command")


class RedisClient(ShardedClient):
    def __init__(self, proxy: RedisProxy) -> None:
        super().__init__(proxy)
        self.rp = proxy
        self.authenticated = proxy.client_password is None
        self.client_name = b""

    def parse(self, data: bytes) -> tuple[int, int]:
        p = self.rp
        queue = self.queue
        commands: list[resp.Command] = []
        room = p.max_pending - len(queue)
        if room <= 0:
            self.pause(PAUSE_PENDING)
            return 0, 0
        pos, need, error = parse_commands(data, 0, commands, p.max_value, p.max_command, room)
        now = p.now
        route = p.shards.route
        link_for = p.link
        table = COMMANDS
        for args, raw in commands:
            spec = table.get(args[0]) or table.get(args[0].upper())
            if not self.authenticated and args[0].upper() not in _ALLOWED_BEFORE_AUTH:
                self.queue_local(resp.error("NOAUTH Authentication required."))
                continue
            if spec is not None and spec[0] == SINGLE and len(args) > 1:
                # The common case, inline: one key, forwarded as received.
                shard = route(args[1])
                if shard is None:
                    self.queue_local(NO_SHARD)
                    continue
                link = link_for(shard, self)
                if type(link) is str:
                    self.queue_local(p.error_reply(f"shard {shard.name} {link}"))
                    continue
                cmd = Command(self, shard, now)
                queue.append(cmd)
                link.send(cmd, raw if raw is not None else resp.encode(args))  # type: ignore[union-attr]
                continue
            self._other(args, raw, spec, now)
        if error is not None:
            raise ProtocolError(error)  # after the commands before it: their replies come first
        if len(queue) >= p.max_pending and pos < len(data):
            self.pause(PAUSE_PENDING)
        return pos, need

    # -- the less common commands -----------------------------------------------------------------------

    def _other(self, args: list[bytes], raw: bytes | None, spec: Spec | None, now: float) -> None:
        p = self.rp
        name = args[0].upper()
        if spec is None:
            p.stats.error("unsupported_command")
            self.queue_local(resp.error(f"ERR unsupported command '{name[:64].decode('latin-1')}' (not sharded)"))
            return
        kind, arg = spec
        if kind == SINGLE:
            self.queue_local(_wrong_args(name))
        elif kind == REFUSED:
            p.stats.error("unsupported_command")
            self.queue_local(resp.error(f"ERR {name.decode('latin-1')} is not supported by this proxy: {arg}"))
        elif kind == SPLIT:
            self._split(name, args, raw, now)
        elif kind == SAME:
            keys = self._keys(name, args, arg)
            if isinstance(keys, bytes):
                self.queue_local(keys)
            else:
                self._same_shard(name, args, raw, keys, now)
        else:
            self._local(name, args, raw, now)

    @staticmethod
    def _keys(name: bytes, args: list[bytes], positions: tuple[int, int, int]) -> list[bytes] | bytes:
        """The keys of a SAME command, or an error reply."""
        if name in _NUMKEYS_BY_NAME:
            count_at, first, extra = positions
            if len(args) <= count_at:
                return _wrong_args(name)
            try:
                count = int(args[count_at])
            except ValueError:
                return resp.error("ERR value is not an integer or out of range")
            if count < 0 or first + count > len(args):
                return resp.error("ERR Number of keys can't be greater than number of args")
            keys = ([args[1]] if extra else []) + args[first : first + count]
            if not keys:
                return resp.error(f"ERR {name.decode()} with no keys cannot be routed to a shard")
            return keys
        first, last, step = positions
        stop = len(args) if last == -1 else last + 1
        if len(args) <= first or (last != -1 and len(args) < stop):
            return _wrong_args(name)
        return args[first:stop:step]

    def _same_shard(self, name: bytes, args: list[bytes], raw: bytes | None, keys: list[bytes], now: float) -> None:
        p = self.rp
        shards = {p.shards.route(k) for k in keys}
        if len(shards) > 1:
            p.stats.error("cross_shard")
            self.queue_local(
                resp.error(
                    f"ERR the keys of {name.decode('latin-1')} are on different shards; "
                    "give them a common hash tag such as {user1}"
                )
            )
            return
        self._forward(shards.pop(), args, raw, now)

    def _forward(self, shard: Shard | None, args: list[bytes], raw: bytes | None, now: float) -> None:
        p = self.rp
        if shard is None:
            self.queue_local(NO_SHARD)
            return
        link = p.link(shard, self)
        if isinstance(link, str):
            self.queue_local(p.error_reply(f"shard {shard.name} {link}"))
            return
        cmd = Command(self, shard, now)
        self.queue.append(cmd)
        link.send(cmd, raw if raw is not None else resp.encode(args))

    def _split(self, name: bytes, args: list[bytes], raw: bytes | None, now: float) -> None:
        p = self.rp
        pairs = name == b"MSET"
        step = 2 if pairs else 1
        if len(args) < 2 or (pairs and len(args) % 2 == 0):
            self.queue_local(_wrong_args(name))
            return
        route = p.shards.route
        groups: dict[Shard | None, list[int]] = {}
        for i in range(1, len(args), step):
            groups.setdefault(route(args[i]), []).append(i)
        if None in groups:
            self.queue_local(NO_SHARD)
            return
        if len(groups) == 1:
            self._forward(next(iter(groups)), args, raw, now)
            return
        merge: Callable[[list[Command]], bytes]
        if name == b"MGET":
            merge = _merge_mget(len(args) - 1)
        elif pairs:
            merge = _merge_all_ok
        else:
            merge = _merge_sum
        fan = Fanout(self, merge)
        self.queue.append(fan)
        for shard, positions in groups.items():
            assert shard is not None
            part_args = [name]
            for i in positions:
                part_args.extend(args[i : i + step])
            cmd = Command(self, shard, now, positions)
            cmd.parent = fan
            fan.parts.append(cmd)
            fan.left += 1
            link = p.link(shard, self)
            if isinstance(link, str):
                complete(cmd, p.error_reply(f"shard {shard.name} {link}"))  # flushed when parsing ends
                continue
            link.send(cmd, resp.encode(part_args))

    def _local(self, name: bytes, args: list[bytes], raw: bytes | None, now: float) -> None:
        p = self.rp
        n = len(args)
        if name == b"PING":
            self.queue_local(resp.PONG if n == 1 else resp.bulk(args[1]) if n == 2 else _wrong_args(name))
        elif name == b"ECHO":
            self.queue_local(resp.bulk(args[1]) if n == 2 else _wrong_args(name))
        elif name == b"QUIT":
            self.queue_local(resp.OK)
            self.closing = True
        elif name == b"SELECT":
            if n != 2:
                self.queue_local(_wrong_args(name))
            elif args[1] == str(p.sharding.database).encode():
                self.queue_local(resp.OK)
            else:
                self.queue_local(
                    resp.error(f"ERR only database {p.sharding.database} is served here (set sharding.database)")
                )
        elif name == b"AUTH":
            self._auth(args[1:])
        elif name == b"HELLO":
            self._hello(args)
        elif name == b"CLIENT":
            self._client(args)
        elif name in (b"GEORADIUS", b"GEORADIUSBYMEMBER"):
            upper = [a.upper() for a in args]
            keys = args[1:2] + [args[i + 1] for i, a in enumerate(upper[:-1]) if a in (b"STORE", b"STOREDIST")]
            if n < 2:
                self.queue_local(_wrong_args(name))
            else:
                self._same_shard(name, args, raw, keys, now)
        elif name in (b"XREAD", b"XREADGROUP"):
            self._xread(name, args, raw, now)
        elif name in (b"XGROUP", b"XINFO"):
            if n < 3:
                self.queue_local(_wrong_args(name))
            elif args[1].upper() == b"HELP":
                self.queue_local(resp.error(f"ERR {name.decode()} HELP is not supported by this proxy"))
            else:
                self._forward(p.shards.route(args[2]), args, raw, now)

    def _xread(self, name: bytes, args: list[bytes], raw: bytes | None, now: float) -> None:
        upper = [a.upper() for a in args]
        if b"BLOCK" in upper:
            self.rp.stats.error("unsupported_command")
            self.queue_local(
                resp.error(
                    f"ERR {name.decode()} BLOCK is not supported by this proxy: blocking commands would "
                    "stall a shard connection shared by all clients"
                )
            )
            return
        if b"STREAMS" not in upper:
            self.queue_local(resp.error("ERR syntax error"))
            return
        rest = args[upper.index(b"STREAMS") + 1 :]
        if not rest or len(rest) % 2:
            self.queue_local(resp.error("ERR Unbalanced 'xread' list of streams"))
            return
        self._same_shard(name, args, raw, rest[: len(rest) // 2], now)

    def _auth(self, creds: list[bytes]) -> None:
        refused = self._check_auth(creds)
        self.queue_local(refused or resp.OK)

    def _check_auth(self, creds: list[bytes]) -> bytes | None:
        """None when `creds` ([password] or [user, password]) authenticate the client, else the error."""
        p = self.rp
        if p.client_password is None:
            return resp.error("ERR AUTH <password> called without any password configured for the default user")
        if len(creds) not in (1, 2):
            return _wrong_args(b"AUTH")
        user_ok = len(creds) == 1 or creds[0] == b"default"
        if user_ok and hmac.compare_digest(creds[-1], p.client_password):
            self.authenticated = True
            return None
        p.stats.error("auth_failed")
        p.log_bad_request("AUTH with a wrong password")
        return resp.error("WRONGPASS invalid username-password pair or user is disabled.")

    def _hello(self, args: list[bytes]) -> None:
        if len(args) > 1 and args[1] != b"2":
            if not args[1].isdigit():
                self.queue_local(resp.error("ERR Protocol version is not an integer or out of range"))
            else:
                self.queue_local(resp.error("NOPROTO this proxy speaks RESP2 only; use protocol 2"))
            return
        upper = [a.upper() for a in args]
        if b"AUTH" in upper:
            i = upper.index(b"AUTH")
            refused = self._check_auth(args[i + 1 : i + 3])
            if refused is not None:
                self.queue_local(refused)
                return
        elif not self.authenticated:
            self.queue_local(resp.error("NOAUTH HELLO must be called with the client already authenticated"))
            return
        if b"SETNAME" in upper and upper.index(b"SETNAME") + 1 < len(args):
            self.client_name = args[upper.index(b"SETNAME") + 1]
        fields = [
            *(resp.bulk(b) for b in (b"server", b"redis", b"version", b"7.0.0", b"proto")),
            resp.integer(2),
            resp.bulk(b"id"),
            resp.integer(self.id + 1),
            *(resp.bulk(b) for b in (b"mode", b"standalone", b"role", b"master", b"modules")),
            resp.array([]),
        ]
        self.queue_local(resp.array(fields))

    def _client(self, args: list[bytes]) -> None:
        sub = args[1].upper() if len(args) > 1 else b""
        if sub == b"SETNAME" and len(args) == 3:
            self.client_name = args[2]
            self.queue_local(resp.OK)
        elif sub == b"GETNAME" and len(args) == 2:
            self.queue_local(resp.bulk(self.client_name) if self.client_name else resp.NIL)
        elif sub == b"SETINFO" and len(args) == 4:
            self.queue_local(resp.OK)
        elif sub == b"ID" and len(args) == 2:
            self.queue_local(resp.integer(self.id + 1))
        else:
            self.rp.stats.error("unsupported_command")
            self.queue_local(
                resp.error(
                    f"ERR CLIENT {sub[:32].decode('latin-1')} is not supported by this proxy "
                    "(only SETNAME, GETNAME, SETINFO, ID)"
                )
            )


def _merge_mget(count: int) -> Callable[[list[Command]], bytes]:
    def merge(parts: list[Command]) -> bytes:
        values: list[bytes] = [resp.NIL] * count
        for part in parts:
            reply = part.reply or b""
            items = array_elements(reply)
            if items is None or len(items) != len(part.tag):
                return reply if reply[:1] == b"-" else resp.error("ERR unexpected MGET reply from a shard")
            for position, item in zip(part.tag, items, strict=True):
                values[position - 1] = item
        return resp.array(values)

    return merge


def _merge_sum(parts: list[Command]) -> bytes:
    total = 0
    for part in parts:
        reply = part.reply or b""
        value = resp.integer_of(reply)
        if value is None:
            return reply if reply[:1] == b"-" else resp.error("ERR unexpected reply from a shard")
        total += value
    return resp.integer(total)


def _merge_all_ok(parts: list[Command]) -> bytes:
    for part in parts:
        if part.reply != resp.OK:
            return part.reply or resp.error("ERR no reply from a shard")
    return resp.OK


class RedisLink(ShardLink):
    p: RedisProxy

    def handshake(self) -> list[tuple[bytes, str]]:
        first = []
        if self.p.server_password is not None:
            first.append((resp.encode([b"AUTH", self.p.server_password]), "AUTH"))
        if self.p.sharding.database:
            first.append((resp.encode([b"SELECT", str(self.p.sharding.database).encode()]), "SELECT"))
        return first

    def handshake_reply(self, tag: str, reply: bytes) -> str | None:
        if reply == resp.OK:
            return None
        return f"{tag} failed: {reply[:80].decode('latin-1').strip()}"

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
        try:
            while pos < end:
                stop = reply_end(data, pos)
                if stop < 0:
                    if -stop > self.p.max_reply:
                        self.fail("reply_too_large", f"reply exceeds max_reply_bytes ({self.p.max_reply})")
                        return
                    self.buf = bytearray(data[pos:])
                    self.need = -stop
                    break
                if not fifo:
                    self.fail("protocol", "sent a reply to no command", _RESET)
                    return
                cmd = fifo.popleft()
                reply = data[pos:stop]
                pos = stop
                if cmd.client is None and cmd.parent is None:
                    why = self.handshake_reply(cmd.tag, reply)
                    if why is not None:
                        self.fail("auth", why, _RESET)
                        return
                    continue
                shard.observe(now - cmd.t0)
                cmd.reply = reply
                parent = cmd.parent
                if parent is None:
                    touched.add(cmd.client)  # type: ignore[arg-type]
                else:
                    parent.left -= 1
                    if not parent.left:
                        parent.reply = parent.merge(parent.parts)
                        touched.add(parent.client)
        except ProtocolError as exc:
            self.fail("protocol", f"sent an invalid reply ({exc})", _RESET)
            return
        finally:
            self.p.schedule()
        ep = shard.endpoint
        if ep.consecutive_errors:
            ep.start_request()  # answers again: end the failure streak the outlier detector counts
            ep.end_request(_OK, 0.0)


class RedisProxy(ShardedProxy):
    client_class = RedisClient
    link_class = RedisLink

    def __init__(
        self,
        config: ListenerConfig,
        cluster: Cluster,
        stats: ListenerStats,
        loop: asyncio.AbstractEventLoop,
        log: FilteringBoundLogger,
        shards: ShardSet,
        *,
        server_password: bytes | None,
        client_password: bytes | None,
    ) -> None:
        super().__init__(config, cluster, stats, loop, log, shards)
        self.server_password = server_password
        self.client_password = client_password

    def error_reply(self, message: str) -> bytes:
        return resp.error(message if message[:4] in ("ERR ", "NOAU") else f"ERR {message}")
