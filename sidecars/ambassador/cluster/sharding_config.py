"""The settings of a redis or memcached listener's sharding: distribution, hash, shard names, limits.

Nested in a listener as `sharding:`. The names follow twemproxy's where they mean the same thing
(`distribution`, `hash`, `hash_tag`, `servers`), so a nutcracker.yml pool translates line by line
(docs/ambassador.md has the table).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sidecars.ambassador.cluster.config import parse_address
from sidecars.ambassador.cluster.hashing import HASHES
from sidecars.ambassador.cluster.sharding import DISTRIBUTIONS, Distribution

MIB = 1024 * 1024


class ServerEntry(NamedTuple):
    host: str
    port: int
    weight: int
    name: str | None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_server(text: str) -> ServerEntry:
    """twemproxy's "host:port:weight [name]"; ValueError saying what is wrong."""
    entry = text.strip()
    address_part, _, name = entry.partition(" ")
    name = name.strip()
    if name and any(c.isspace() for c in name):
        raise ValueError(f"{text!r}: a name has no spaces")
    rest, sep, weight_text = address_part.rpartition(":")
    if not sep or not weight_text.isdigit() or int(weight_text) < 1:
        raise ValueError(f'{text!r} is not "host:port:weight [name]" with a weight of at least 1')
    if rest.startswith("/"):
        raise ValueError(f"{text!r}: unix sockets are not supported")
    try:
        host, port = parse_address(rest)
    except ValueError as exc:
        raise ValueError(f'{text!r} is not "host:port:weight [name]": {exc}') from None
    return ServerEntry(host, port, int(weight_text), name or None)


class ShardingConfig(BaseModel):
    """How keys are spread over the cluster's endpoints (the shards), and the listener's limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    distribution: Distribution = Field(
        "ketama",
        description="ketama: consistent hashing (a shard leaving moves only its own keys); modula: hash "
        "modulo the total weight; random: any shard (replicated data only). As twemproxy computes them.",
    )
    hash: str = Field("fnv1a_64", description=f"Key hash, as twemproxy names it: {', '.join(HASHES)}.")
    hash_tag: str = Field(
        "",
        description='Two characters, e.g. "{}": a key with a non-empty part between them is placed by that '
        "part only, so related keys ({user1}:a, {user1}:b) share a shard.",
    )
    servers: list[str] = Field(
        [],
        description='Shard weights and names, in twemproxy syntax "host:port:weight [name]". A shard is '
        "named by its name, else host:port (just host for port 11211). Without cluster endpoints, these "
        "are the endpoints; with discovery, entries name and weigh the addresses discovery finds "
        "(others get weight 1 and the default name).",
    )
    on_shard_failure: Literal["keep", "eject"] = Field(
        "keep",
        description="keep: the ring never changes because of health; a failed shard's keys get errors "
        "naming the shard, until it answers again. eject (twemproxy's auto_eject_hosts): a failed shard "
        "leaves the ring and its keys move to the others; it comes back only after health_check."
        "healthy_threshold active checks in a row passed. Every ring change is logged and counted.",
    )
    timeout_secs: float = Field(
        2.0,
        gt=0,
        description="A shard must answer a command within this, or the command fails with 'timed out' and "
        "the connection to the shard is closed (commands pipelined behind it fail too).",
    )
    connections_per_shard: int = Field(
        1,
        ge=1,
        le=64,
        description="Connections to each shard, shared by all clients (each client always uses the same one, "
        "so its commands stay in order).",
    )
    max_pending_per_client: int = Field(
        1024,
        ge=1,
        description="Commands of one client in flight at once; beyond it the proxy stops reading from that "
        "client until replies drain (backpressure, nothing is refused).",
    )
    max_value_bytes: int = Field(
        8 * MIB,
        ge=1024,
        description="Largest value (one argument of a command). Larger: redis answers an error and closes the "
        "connection (as Redis does); memcached answers SERVER_ERROR object too large for cache and skips it.",
    )
    max_command_bytes: int = Field(
        16 * MIB, ge=1024, description="Largest command, all its arguments together; larger: error, connection closed."
    )
    max_reply_bytes: int = Field(
        64 * MIB,
        ge=1024,
        description="Largest reply from a shard; larger: the command fails and the connection to the shard is closed.",
    )
    max_client_buffer_bytes: int = Field(
        64 * MIB,
        ge=65536,
        description="Replies buffered for a client that does not read them; beyond it the client is "
        "disconnected (reads from it already stop at the transport's high-water mark).",
    )
    server_password_file: str | None = Field(
        None,
        description="redis: file holding the password sent to each shard (AUTH) on connect, e.g. a mounted "
        "Secret; also used by the redis health check.",
    )
    client_password_file: str | None = Field(
        None, description="redis: file holding a password the app must send (AUTH) before other commands."
    )
    database: int = Field(0, ge=0, description="redis: database selected on each shard connection (SELECT).")

    @field_validator("hash")
    @classmethod
    def _known_hash(cls, value: str) -> str:
        if value not in HASHES:
            raise ValueError(f"unknown hash {value!r}; known: {', '.join(HASHES)}")
        return value

    @field_validator("distribution", mode="before")
    @classmethod
    def _known_distribution(cls, value: object) -> object:
        if isinstance(value, str) and value not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {value!r}; known: {', '.join(DISTRIBUTIONS)}")
        return value

    @field_validator("hash_tag")
    @classmethod
    def _two_characters(cls, value: str) -> str:
        if value and (len(value) != 2 or not value.isascii()):
            raise ValueError(f'hash_tag must be two ASCII characters such as "{{}}", got {value!r}')
        return value

    @field_validator("servers")
    @classmethod
    def _valid_servers(cls, value: list[str]) -> list[str]:
        errors, names, addresses = [], set(), set()
        for i, text in enumerate(value):
            try:
                entry = parse_server(text)
            except ValueError as exc:
                errors.append(f"servers[{i}]: {exc}")
                continue
            if entry.address in addresses:
                errors.append(f"servers[{i}]: {entry.address} is listed twice")
            addresses.add(entry.address)
            if entry.name is not None:
                if entry.name in names:
                    errors.append(f"servers[{i}]: name {entry.name!r} is used twice")
                names.add(entry.name)
        if errors:
            raise ValueError("; ".join(errors))
        return value

    @model_validator(mode="after")
    def _coherent(self) -> ShardingConfig:
        if self.max_value_bytes > self.max_command_bytes:
            raise ValueError("max_value_bytes must not exceed max_command_bytes")
        return self

    def entries(self) -> list[ServerEntry]:
        return [parse_server(text) for text in self.servers]
