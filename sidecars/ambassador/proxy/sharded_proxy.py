"""The request path of the redis and memcached listeners, less the protocols (`redis_proxy.py`,
`memcached_proxy.py` subclass the three classes here).

- `ShardedClient`, one per app connection, parses commands in bulk (whatever one read brought), routes
  each by key and queues it in arrival order; replies leave in that order, as they complete.
- `ShardLink`, one connection to one shard, shared by every client (twemproxy's model): commands are
  pipelined on it and replies come back in order, so a FIFO pairs them. A link that fails (connect
  refused, reset, timed out, a reply too large, garbage) fails every command it holds with an error
  naming the shard, closes, and is replaced by a new one on the next command.
- A command for several shards (MGET, DEL, get k1 k2 ...) becomes a `Fanout` of per-shard parts,
  merged when the last part has its reply.

Nothing here creates a task or a timer per command: links time out with one timer each (re-armed for
the oldest command). Writes are joined per turn of the event loop: whatever all clients sent to a
shard during one turn leaves in one write, and whatever replies a client got in one turn leave in
one write (`ShardedProxy.schedule`), so under load the system calls per command shrink.

Memory is bounded per client: `max_pending_per_client` commands in flight (then the client is not
read until replies drain), at most one partial command buffered (`max_command_bytes`), replies held
for a client that does not read stop its reading at the transport's high-water mark, and past
`max_client_buffer_bytes` the client is disconnected. A link holds at most one partial reply
(`max_reply_bytes`); a link whose socket buffer fills pauses the clients writing to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from sidecars.ambassador.cluster.endpoint import Outcome
from sidecars.ambassador.proxy.shards import Shard, ShardSet

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from sidecars.ambassador.cluster.cluster import Cluster
    from sidecars.ambassador.proxy.stats import ListenerStats
    from sidecars.ambassador.settings import ListenerConfig

# Why a client connection stopped reading (bits: several may hold at once).
PAUSE_PENDING = 1  # max_pending_per_client commands in flight
PAUSE_OUTPUT = 2  # its transport's write buffer is above the high-water mark
PAUSE_LINK = 4  # a shard connection it writes to is above its high-water mark

_CONNECTING, _READY, _CLOSED = 0, 1, 2
_ERRORS_LOGGED_PER_SEC = 10.0


class Command:
    """One command (or one shard's part of a fan-out) waiting for its reply."""

    __slots__ = ("client", "parent", "reply", "shard", "t0", "tag")

    def __init__(self, client: ShardedClient | None, shard: Shard | None, t0: float, tag: Any = None) -> None:
        self.client = client
        self.shard = shard
        self.t0 = t0
        self.tag = tag  # protocol data: what the reply looks like, how to merge it
        self.parent: Fanout | None = None
        self.reply: bytes | None = None


class Fanout:
    """A command split over shards: done when every part is, then `merge(parts)` is its reply."""

    __slots__ = ("client", "left", "merge", "parts", "reply")

    def __init__(self, client: ShardedClient, merge: Callable[[list[Command]], bytes]) -> None:
        self.client = client
        self.merge = merge
        self.parts: list[Command] = []
        self.left = 0
        self.reply: bytes | None = None


def complete(cmd: Command, reply: bytes) -> ShardedClient | None:
    """Record `reply`; returns the client whose queue may now flush (None if nothing completed)."""
    cmd.reply = reply
    parent = cmd.parent
    if parent is None:
        return cmd.client
    parent.left -= 1
    if parent.left:
        return None
    parent.reply = parent.merge(parent.parts)
    return parent.client


class ShardLink:
    """One connection to one shard; see the module docstring. Subclasses parse replies in
    `data_received`, pair each with the oldest command of `fifo` and record it with `complete()`
    (the hot loops inline it), then `schedule()` the writes to the clients."""

    def __init__(self, proxy: ShardedProxy, shard: Shard, slot: int) -> None:
        self.p = proxy
        self.shard = shard
        self.slot = slot
        self.transport: asyncio.Transport | None = None
        self.state = _CONNECTING
        self.fifo: deque[Command] = deque()
        self.backlog: list[bytes] = []  # written once connected
        self.out: list[bytes] = []  # written at the end of this turn of the event loop
        self.buf: bytearray | None = None
        self.need = 0
        self.paused = False
        self.waiters: set[ShardedClient] = set()
        # One timer per link, for the oldest command; it re-arms itself lazily as replies come in.
        self.timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = proxy.loop.create_task(self._connect())

    # -- the hot path ------------------------------------------------------------------------------

    def send(self, cmd: Command, raw: bytes) -> None:
        fifo = self.fifo
        if self.timer is None:
            self.timer = self.p.loop.call_at(cmd.t0 + self.p.timeout, self._on_timer)
        fifo.append(cmd)
        self.p.dirty.add(self)
        if self.state == _READY:
            self.out.append(raw)
        else:
            self.backlog.append(raw)

    def flush(self) -> None:
        out = self.out
        if out and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        self.out = []

    def joined(self, data: bytes) -> bytes | None:
        """`data` after the start of a reply an earlier read left in `buf`; None while that reply is
        still short of `need` bytes (the link fails once the partial reply exceeds max_reply_bytes)."""
        buf = self.buf
        if buf is None:
            return data
        buf += data
        if len(buf) < self.need:
            if len(buf) > self.p.max_reply:
                self.fail("reply_too_large", f"reply exceeds max_reply_bytes ({self.p.max_reply})")
            return None
        self.buf = None
        return bytes(buf)

    # -- connection -----------------------------------------------------------------------------------

    def handshake(self) -> list[tuple[bytes, str]]:
        """(raw command, its name) pairs sent first on a new connection; their replies are checked by
        `handshake_reply`, never sent to a client."""
        return []

    def handshake_reply(self, tag: str, reply: bytes) -> str | None:
        """None if a handshake reply is as expected, else the reason the link fails."""
        return None

    async def _connect(self) -> None:
        p = self.p
        ep = self.shard.endpoint
        ep.start_request()
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(p.connect_timeout):
                await p.loop.create_connection(cast(Callable[[], asyncio.Protocol], lambda: self), ep.host, ep.port)
        except (OSError, TimeoutError) as exc:
            ep.end_request(Outcome.CONNECT_FAILURE, time.perf_counter() - t0)
            if isinstance(exc, TimeoutError):
                reason = f"timeout after {p.connect_timeout:g}s"
            else:
                reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            self.fail("unavailable", f"unavailable (connect: {reason})")
            return
        except asyncio.CancelledError:
            ep.end_request(Outcome.LOCAL_ERROR, time.perf_counter() - t0)
            self.fail("unavailable", "unavailable (proxy stopping)")
            raise
        ep.end_request(Outcome.OK, time.perf_counter() - t0)
        if self.state == _CLOSED:  # failed or closed while connecting
            self._close_transport()
            return
        now = p.loop.time()
        first = [(raw, Command(None, self.shard, now, tag)) for raw, tag in self.handshake()]
        if first:
            self.fifo.extendleft(cmd for _, cmd in reversed(first))
        data = [raw for raw, _ in first] + self.backlog
        self.backlog = []
        self.state = _READY
        if data and self.transport is not None:
            self.transport.write(b"".join(data))
        p.stats.upstream_opened(ep.key)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state != _CLOSED:
            self.fail("connection_lost", "connection lost" + (f" ({exc})" if exc else ""))
        self.p.stats.upstream_closed(self.shard.endpoint.key)

    def eof_received(self) -> bool:
        return False  # the shard closed: connection_lost follows

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        waiters, self.waiters = self.waiters, set()
        for client in waiters:
            client.resume(PAUSE_LINK)

    def _on_timer(self) -> None:
        self.timer = None
        fifo = self.fifo
        if not fifo or self.state == _CLOSED:
            return
        due = fifo[0].t0 + self.p.timeout
        if due <= self.p.loop.time():
            ep = self.shard.endpoint
            ep.start_request()
            ep.end_request(Outcome.TIMEOUT, self.p.timeout)
            self.fail("timeout", f"timed out after {self.p.timeout:g}s")
        else:
            self.timer = self.p.loop.call_at(due, self._on_timer)

    # -- failure --------------------------------------------------------------------------------------

    def fail(self, kind: str, reason: str, outcome: Outcome | None = None) -> None:
        """Close the link; every command on it fails with `shard <name> <reason>`."""
        if self.state == _CLOSED:
            return
        was_ready = self.state == _READY
        self.state = _CLOSED
        shard = self.shard
        if shard.links[self.slot] is self:
            shard.links[self.slot] = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        self._close_transport()
        fifo, self.fifo = self.fifo, deque()
        self.backlog = []
        self.out = []
        if outcome is not None or (was_ready and fifo and kind == "connection_lost"):
            ep = shard.endpoint
            ep.start_request()
            ep.end_request(outcome or Outcome.RESET, 0.0)
        failed = [cmd for cmd in fifo if cmd.client is not None or cmd.parent is not None]
        shard.errors[kind] += len(failed)
        if failed:
            self.p.log_failure(shard, reason, len(failed))
        reply = self.p.error_reply(f"shard {shard.name} {reason}")
        replied = self.p.replied
        for cmd in failed:
            client = complete(cmd, reply)
            if client is not None:
                replied.add(client)
        self.p.schedule()
        for client in self.waiters:
            client.resume(PAUSE_LINK)
        self.waiters = set()

    def _close_transport(self) -> None:
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.abort()

    def close(self) -> None:
        self.fail("connection_lost", "connection closed (proxy stopping)")


class ShardedClient:
    """One app connection. Subclasses implement `parse(buf) -> (consumed, need)` which routes every
    complete command with `self.p.dispatch`/`self.local` and returns where it stopped."""

    def __init__(self, proxy: ShardedProxy) -> None:
        self.p = proxy
        self.id = next(proxy.ids)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.queue: deque[Command | Fanout] = deque()
        self.buf: bytearray | None = None
        self.need = 0
        self.paused = 0
        self.closed = False
        self.closing = False  # answer what is queued, then close

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.p.clients.add(self)
        self.p.stats.client_connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        self.queue.clear()  # commands in flight still complete on their links; their replies are dropped
        self.buf = None

    def eof_received(self) -> bool:
        # The app closed its sending side: answer what it sent, then close (as Redis does).
        self.closing = True
        self.flush()
        return True

    def pause_writing(self) -> None:
        self.pause(PAUSE_OUTPUT)

    def resume_writing(self) -> None:
        self.resume(PAUSE_OUTPUT)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        buf = self.buf
        if buf is not None:
            buf += data
            if len(buf) < self.need or self.paused:
                return
            data = bytes(buf)
            self.buf = None
        elif self.paused:
            self.buf = bytearray(data)
            return
        self._process(data)

    # -- parsing and replies -----------------------------------------------------------------------

    def parse(self, data: bytes) -> tuple[int, int]:
        raise NotImplementedError

    def _process(self, data: bytes) -> None:
        p = self.p
        p.now = p.loop.time()
        try:
            pos, need = self.parse(data)
        except ValueError as exc:  # the protocol's error type derives from ValueError
            self.p.stats.error("bad_request")
            self.p.log_bad_request(str(exc))
            self.queue_local(self.p.error_reply(f"ERR Protocol error: {exc}"))
            self.closing = True
            pos, need = len(data), 0
        if pos < len(data):
            self.buf = bytearray(data[pos:])
            self.need = need
        dirty = p.dirty
        if dirty:
            p.sending |= dirty
            for link in dirty:
                if link.paused:  # its socket buffer is full: read no more from this client for now
                    link.waiters.add(self)
                    self.pause(PAUSE_LINK)
            dirty.clear()
        p.replied.add(self)  # replies the proxy made itself, and anything completed meanwhile
        p.schedule()

    def queue_local(self, reply: bytes) -> None:
        """A reply the proxy makes itself (PING, an error), kept in order with the others."""
        cmd = Command(self, None, 0.0)
        cmd.reply = reply
        self.queue.append(cmd)

    def flush(self) -> None:
        """Write every completed reply at the head of the queue; manage the pending cap and closing."""
        if self.closed:
            return
        q = self.queue
        out = []
        while q and q[0].reply is not None:
            out.append(q.popleft().reply)
        transport = self.transport
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))  # type: ignore[arg-type]
            if transport.get_write_buffer_size() > self.p.max_client_buffer:
                self.p.stats.error("client_buffer_full")
                self.p.log_bad_request("client does not read its replies: disconnected")
                self._forget()
                transport.abort()
                return
        if self.paused & PAUSE_PENDING and len(q) <= self.p.resume_pending:
            self.resume(PAUSE_PENDING)
        if (self.closing or self.p.draining) and not q and self.buf is None:
            self.close()

    def pause(self, reason: int) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if self.paused or self.closed:
            return
        self.transport.resume_reading()
        buf = self.buf
        if buf is not None and len(buf) >= self.need:
            self.buf = None
            self._process(bytes(buf))

    def close(self) -> None:
        if self._forget():
            self.transport.close()

    def _forget(self) -> bool:
        """Leave the proxy's client set and count, once; True the first time."""
        if self.closed:
            return False
        self.closed = True
        self.p.clients.discard(self)
        self.p.stats.client_connections -= 1
        return True


class ShardedProxy:
    """Per-listener state of a redis or memcached listener: its shards and its client connections."""

    client_class: type[ShardedClient] = ShardedClient
    link_class: type[ShardLink] = ShardLink

    def __init__(
        self,
        config: ListenerConfig,
        cluster: Cluster,
        stats: ListenerStats,
        loop: asyncio.AbstractEventLoop,
        log: FilteringBoundLogger,
        shards: ShardSet,
    ) -> None:
        self.config = config
        self.sharding = config.sharding
        self.cluster = cluster
        self.stats = stats
        self.loop = loop
        self.log = log
        self.shards = shards
        self.clients: set[ShardedClient] = set()
        self.draining = False
        self.ids = itertools.count()
        self.dirty: set[ShardLink] = set()  # links the client being read sent to
        self.sending: set[ShardLink] = set()  # links with commands to write this turn
        self.replied: set[ShardedClient] = set()  # clients with replies to write this turn
        self._scheduled = False
        self.now = loop.time()
        sh = config.sharding
        self.timeout = sh.timeout_secs
        self.connect_timeout = config.connect_timeout_secs
        self.max_pending = sh.max_pending_per_client
        self.resume_pending = max(1, sh.max_pending_per_client // 2)
        self.max_value = sh.max_value_bytes
        self.max_command = sh.max_command_bytes
        self.max_reply = sh.max_reply_bytes
        self.max_client_buffer = sh.max_client_buffer_bytes
        self.eject = sh.on_shard_failure == "eject"
        self._log_tokens = _ERRORS_LOGGED_PER_SEC
        self._log_stamp = time.monotonic()
        self.suppressed = 0
        shards.on_removed(self._on_shard_removed)

    def __call__(self) -> ShardedClient:
        return self.client_class(self)

    # -- routing ---------------------------------------------------------------------------------------

    def link(self, shard: Shard, client: ShardedClient) -> ShardLink | str:
        """The connection `client` uses to `shard`, or the reason the shard cannot take commands."""
        links = shard.links
        slot = client.id % len(links)
        link: ShardLink | None = links[slot]
        if link is not None:
            return link
        # Known down: fail fast instead of a connect attempt per command.
        reason = shard.unavailable_reason(time.monotonic())
        if reason is not None:
            shard.errors["unavailable"] += 1
            return reason
        link = links[slot] = self.link_class(self, shard, slot)
        return link

    def error_reply(self, message: str) -> bytes:
        raise NotImplementedError

    def schedule(self) -> None:
        """Write what this turn of the event loop produced, once, at its end."""
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._write)

    def _write(self) -> None:
        self._scheduled = False
        links, self.sending = self.sending, set()
        for link in links:
            link.flush()
        clients, self.replied = self.replied, set()
        for client in clients:
            client.flush()

    # -- lifecycle -------------------------------------------------------------------------------------

    def sweep(self) -> None:
        """The listener's tick: ejection returns, counters mirrored into the listener's series."""
        self.shards.refresh()
        requests = self.stats.requests
        for shard in self.shards.shards.values():
            key = shard.endpoint.key
            failed = sum(shard.errors.values())
            requests[(key, 1)] = shard.requests  # 2xx class: answered by the shard
            if failed:
                requests[(key, 4)] = failed  # 5xx class: failed by the proxy
        if self.draining:
            for client in list(self.clients):
                client.flush()

    def start_drain(self) -> None:
        """Idle clients close now; busy ones once their queued commands are answered."""
        self.draining = True
        for client in list(self.clients):
            client.flush()

    def close_all(self) -> None:
        for client in list(self.clients):
            client.close()
        for shard in self.shards.shards.values():
            for link in shard.links:
                if link is not None:
                    link.close()

    def _on_shard_removed(self, shard: Shard) -> None:
        for link in shard.links:
            if link is not None:
                link.fail("unavailable", "removed by discovery")

    # -- logs ---------------------------------------------------------------------------------------------

    def _allow_log(self) -> bool:
        now = time.monotonic()
        self._log_tokens = min(_ERRORS_LOGGED_PER_SEC, self._log_tokens + (now - self._log_stamp) * 10.0)
        self._log_stamp = now
        if self._log_tokens >= 1.0:
            self._log_tokens -= 1.0
            return True
        self.suppressed += 1
        return False

    def log_failure(self, shard: Shard, reason: str, commands: int) -> None:
        if self._allow_log():
            suppressed, self.suppressed = self.suppressed, 0
            self.log.warning(
                "shard commands failed",
                listener=self.config.name,
                shard=shard.name,
                endpoint=shard.endpoint.key,
                reason=reason,
                commands=commands,
                suppressed_since_last=suppressed or None,
            )

    def log_bad_request(self, reason: str) -> None:
        if self._allow_log():
            suppressed, self.suppressed = self.suppressed, 0
            self.log.warning(
                "bad client input", listener=self.config.name, reason=reason, suppressed_since_last=suppressed or None
            )
