"""Redis plumbing shared by every Redis backend: key names, errors, and Lua scripts on pipelines.

Key names: every key of one session (or one decision shard) carries the same hash tag, so a Redis
Cluster keeps them in one slot and Lua scripts may touch them together. A Redis error on the request
path becomes `Unavailable` (`unavailable_on_error`).

Lua scripts on pipelines, without the extra round trip redis-py adds: a script registered with redis-py
and queued on a pipeline makes that pipeline send `SCRIPT EXISTS` and wait for the answer before it sends
anything else: one more round trip for every pipeline that carries a script, which on Tailor's paths is
every Decide's write and every TrackEvents fold. `LuaScript.queue` queues a bare `EVALSHA` instead, and
`run_scripts` runs a pipeline that holds only such scripts. Should Redis no longer know a script
(restarted, or its script cache flushed), every `EVALSHA` of that pipeline failed with NOSCRIPT and did
nothing, so the scripts are loaded and the pipeline is built and run once more; that is the only time a
script's text crosses the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import weakref
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar, cast

import hiredis
import redis
import redis._parsers.base
import redis.asyncio as aioredis
import redis.connection
from redis.exceptions import NoScriptError

from server.core import ResourceExhausted, Unavailable


def connect(url: str, cluster: bool = False, timeout: float | None = None) -> aioredis.Redis:
    """A client of one Redis server, or with `cluster` of the Redis Cluster that `url` names a node of.

    A cluster client offers the same commands and routes each by the hash slot of its keys (pipelines are
    split by node and sent to the nodes at once, so a pipelined round trip stays one phase; scripts are
    loaded on every primary; MOVED and failovers are followed). Every multi-key command and script of
    Tailor's stays in one slot by its hash tags, so the stores use either client alike: it is typed as the
    single-server client they are written against."""
    options: dict[str, Any] = {}
    if timeout is not None:
        options.update(socket_timeout=timeout, socket_connect_timeout=timeout)
    if cluster:
        return cast(aioredis.Redis, aioredis.RedisCluster.from_url(url, **options))
    client = aioredis.Redis.from_url(url, **options)
    if not url.startswith("rediss://"):  # TLS stays with redis-py's connections
        _POOLS[client] = LeanPool(url, timeout)
    return client


_TAG_ESCAPES = str.maketrans({"%": "%25", "{": "%7B", "}": "%7D"})


def hash_tag(value: str) -> str:
    """`{value}` with braces escaped: a client id can never end the tag early or start another."""
    return "{" + value.translate(_TAG_ESCAPES) + "}"


def control_tag(prefix: str) -> str:
    """The hash-tagged stem of the control-plane keys (published models, learn offsets, the leader lease, the
    catalog store, model commands): small, rarely written, and in one slot so one script may touch them all."""
    return f"{prefix}:{{m}}"


class SessionKeys:
    """The keys of one session: aggregates, cart, categories, seen event ids, open decisions, shown."""

    __slots__ = ("cart", "categories", "decisions", "main", "seen", "shown")

    def __init__(self, prefix: str, session_id: str) -> None:
        base = f"{prefix}:s:{hash_tag(session_id)}"
        self.main = base
        self.cart = base + ":cart"
        self.categories = base + ":cat"
        self.seen = base + ":seen"
        self.decisions = base + ":dec"
        self.shown = base + ":shown"

    def all(self) -> list[str]:
        return [self.main, self.cart, self.categories, self.seen, self.decisions, self.shown]


P = ParamSpec("P")
T = TypeVar("T")


def unavailable_on_error(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Turn Redis connection and server errors into `Unavailable` (UNAVAILABLE to clients; the decision
    path fails open on it), and a full Redis into `ResourceExhausted` (RESOURCE_EXHAUSTED: the write was
    refused, retry later), so nothing above the stores depends on redis-py's exception tree."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except redis.exceptions.OutOfMemoryError as err:
            raise ResourceExhausted(
                "shared state is full: Redis reached maxmemory and refuses writes (maxmemory-policy noeviction); "
                "nothing of this call was lost by eviction, retry later"
            ) from err
        except (redis.RedisError, OSError) as err:
            raise Unavailable(f"state store unavailable: {type(err).__name__}") from err

    return wrapper


class LuaScript:
    def __init__(self, client: aioredis.Redis, source: str) -> None:
        self.client = client
        self._script = client.register_script(source)  # computes the SHA locally; sends nothing

    def queue(self, pipe: Any, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Queue one run on a pipeline (run it with `run_scripts`)."""
        # As a raw command: redis-py's cluster pipeline blocks its `evalsha` method, yet routes the command
        # by the slot of its keys like any other.
        pipe.execute_command("EVALSHA", self._script.sha, len(keys), *keys, *args)

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run it on its own: one round trip on the request path's pipeline (loaded first if Redis lost it)."""
        [reply] = await run_scripts(self.client, lambda pipe: self.queue(pipe, keys, args), (self,))
        return reply

    async def load(self) -> None:
        await self.client.script_load(self._script.script)


class LeanPipeline:
    """A non-transactional pipeline of the few commands the request path queues, packed by hand, written to one
    connection of a `LeanPool` and read back with hiredis in one go: none of redis-py's per-command objects,
    response callbacks, retry layers or per-reply timers (one deadline for the whole round trip). Replies are
    converted as redis-py's callbacks would (HGETALL: a dict, SMEMBERS: a set) and error replies raised as
    redis-py's exceptions (NOSCRIPT as `NoScriptError`, a full Redis as `OutOfMemoryError`), once every reply
    was read, so a connection stays in step; anything that breaks off a round trip closes its connection.

    For one Redis server over TCP or a Unix socket (`pipeline` picks it); `rediss://` and a Redis Cluster keep
    redis-py's pipelines, which bring TLS and slot routing."""

    __slots__ = ("_commands", "_converters", "_pool")

    def __init__(self, pool: LeanPool) -> None:
        self._pool = pool
        self._commands: list[tuple[Any, ...]] = []
        self._converters: list[Callable[[Any], Any] | None] = []

    def hgetall(self, key: str) -> None:
        self._commands.append(("HGETALL", key))
        self._converters.append(_pairs)

    def smembers(self, key: str) -> None:
        self._commands.append(("SMEMBERS", key))
        self._converters.append(set)

    def lrange(self, key: str, start: int, end: int) -> None:
        self._commands.append(("LRANGE", key, start, end))
        self._converters.append(None)

    def execute_command(self, *args: Any) -> None:
        self._commands.append(args)
        self._converters.append(None)

    async def execute(self) -> list[Any]:
        commands, converters = self._commands, self._converters
        self._commands, self._converters = [], []
        replies = await self._pool.round_trip(_pack(commands), len(commands))
        error: redis.ResponseError | None = None
        for i, (reply, convert) in enumerate(zip(replies, converters, strict=True)):
            if isinstance(reply, hiredis.ReplyError):
                replies[i] = _error(reply)
                error = error or replies[i]
            elif convert is not None and reply is not None:
                replies[i] = convert(reply)
        if error is not None:
            raise error
        return replies

    async def __aenter__(self) -> LeanPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class LeanPool:
    """Connections for `LeanPipeline`s: opened on demand (AUTH and SELECT as the URL says), reused last in first
    out, closed when a round trip breaks off (a timeout, a cancelled call, a dropped connection)."""

    def __init__(self, url: str, timeout: float | None) -> None:
        options: dict[str, Any] = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
        self._path: str | None = options.get("path")
        self._host: str = options.get("host", "localhost")
        self._port: int = int(options.get("port", 6379))
        self._auth = [a for a in (options.get("username"), options.get("password")) if a]
        self._db = int(options.get("db", 0) or 0)
        self.timeout = timeout
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, hiredis.Reader]] = []

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, hiredis.Reader]:
        if self._path is not None:
            stream = await asyncio.open_unix_connection(self._path)
        else:
            stream = await asyncio.open_connection(self._host, self._port)
            sock = stream[1].get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = (*stream, hiredis.Reader())
        hello = ([("AUTH", *self._auth)] if self._auth else []) + ([("SELECT", self._db)] if self._db else [])
        if hello:
            for reply in await self._exchange(connection, _pack(hello), len(hello)):
                if isinstance(reply, hiredis.ReplyError):
                    connection[1].close()
                    raise _error(reply)
        return connection

    @staticmethod
    async def _exchange(
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter, hiredis.Reader], data: bytes, count: int
    ) -> list[Any]:
        reader, writer, parser = connection
        writer.write(data)
        await writer.drain()
        replies: list[Any] = []
        while len(replies) < count:
            reply = parser.gets()
            if reply is False:
                chunk = await reader.read(65536)
                if not chunk:
                    raise redis.ConnectionError("Redis closed the connection")
                parser.feed(chunk)
                continue
            replies.append(reply)
        return replies

    async def round_trip(self, data: bytes, count: int) -> list[Any]:
        """Send packed commands and read their `count` replies (error replies as `hiredis.ReplyError`)."""
        connection = None
        try:
            async with asyncio.timeout(self.timeout):
                connection = self._idle.pop() if self._idle else await self._open()
                replies = await self._exchange(connection, data, count)
        except TimeoutError as err:
            if connection is not None:
                connection[1].close()
            raise redis.TimeoutError("Redis did not answer in time") from err
        except OSError as err:
            if connection is not None:
                connection[1].close()
            raise redis.ConnectionError(f"Redis connection failed: {err}") from err
        except BaseException:
            if connection is not None:
                connection[1].close()
            raise
        self._idle.append(connection)
        return replies

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer, _ in idle:
            writer.close()
        for _, writer, _ in idle:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _error(reply: hiredis.ReplyError) -> redis.ResponseError:
    """redis-py's exception for an error reply (NOSCRIPT: `NoScriptError`, OOM: `OutOfMemoryError`, ...)."""
    error: redis.ResponseError = redis._parsers.base.BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]
    return error


def _pack(commands: Sequence[tuple[Any, ...]]) -> bytes:
    """RESP arrays of bulk strings (what redis-py's `pack_command` makes, without its per-argument machinery)."""
    out: list[bytes] = []
    for args in commands:
        out.append(b"*%d\r\n" % len(args))
        for arg in args:
            if isinstance(arg, bytes):
                data = arg
            elif isinstance(arg, str):
                data = arg.encode()
            elif isinstance(arg, int):
                data = b"%d" % arg
            elif isinstance(arg, float):
                data = repr(arg).encode()
            else:
                data = bytes(arg)
            out.append(b"$%d\r\n" % len(data))
            out.append(data)
            out.append(b"\r\n")
    return b"".join(out)


def _pairs(flat: list[Any] | dict[Any, Any]) -> dict[Any, Any]:
    if isinstance(flat, dict):  # RESP3 already pairs them
        return flat
    return dict(zip(flat[::2], flat[1::2], strict=True))


_POOLS: weakref.WeakKeyDictionary[Any, LeanPool] = weakref.WeakKeyDictionary()


def pipeline(client: aioredis.Redis) -> Any:
    """A non-transactional pipeline for the request path: a `LeanPipeline` on a client `connect` made for one
    Redis server over TCP or a Unix socket, redis-py's pipeline otherwise (TLS; a Redis Cluster, whose pipeline
    splits by node and sends the parts at once; a client made elsewhere)."""
    pool = _POOLS.get(client)
    return LeanPipeline(pool) if pool is not None else client.pipeline(transaction=False)


async def close_pipelines(client: aioredis.Redis) -> None:
    """Close the lean pipelines' connections of a client (with the client, at shutdown)."""
    pool = _POOLS.pop(client, None)
    if pool is not None:
        await pool.close()


async def run_scripts(client: aioredis.Redis, build: Callable[[Any], None], scripts: Sequence[LuaScript]) -> list[Any]:
    """Build a pipeline of `LuaScript.queue` calls only, run it in one round trip, return its replies."""
    for attempt in (1, 2):
        async with pipeline(client) as pipe:
            build(pipe)
            try:
                replies: list[Any] = await pipe.execute()
                return replies
            except NoScriptError:
                if attempt == 2:
                    raise
        for script in scripts:
            await script.load()
    raise AssertionError("unreachable")


async def settings_problems(client: aioredis.Redis) -> list[str]:
    """What in the Redis server's settings could lose Tailor's state, as warnings to log at start-up.

    Tailor needs keys never to be evicted (decision log entries and models carry TTLs or none, and an
    evicted decision is a lost reward) and, to survive a Redis restart, persistence. A managed Redis that
    refuses CONFIG GET cannot be checked: that is said too."""
    try:
        config = await client.config_get("maxmemory*")
        config.update(await client.config_get("appendonly"))
        config.update(await client.config_get("save"))
    except redis.RedisError as err:
        return [
            f"cannot read the Redis settings ({err}): make sure maxmemory-policy is noeviction and persistence is on"
        ]
    problems = []
    policy = _text(config.get("maxmemory-policy", ""))
    if int(_text(config.get("maxmemory", "0")) or 0) > 0 and policy != "noeviction":
        problems.append(
            f"Redis maxmemory-policy is {policy!r} with a maxmemory limit: Redis may evict Tailor's decisions "
            "and models when memory fills up; set maxmemory-policy noeviction (writes then fail, and Tailor "
            "counts them, instead of state vanishing)"
        )
    if _text(config.get("appendonly", "no")) != "yes" and not _text(config.get("save", "")).strip():
        problems.append(
            "Redis has no persistence (appendonly no, no save points): a Redis restart loses every session, "
            "retained decision and published model; enable appendonly yes (appendfsync everysec)"
        )
    return problems


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
