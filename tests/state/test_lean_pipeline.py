"""The request path's lean pipeline (`server.state.redis_pipeline`) on a real redis-server: replies as redis-py's
pipeline gives them, an error reply raised only after every reply was read (the connection stays in step), and
a broken-off call drops its connection instead of leaving replies on it for the next caller."""

from __future__ import annotations

import uuid

import pytest
import redis

from server.state import redis_connect, redis_pipeline
from server.state._redis import LeanPipeline, close_pipelines

from ..redis_server import RedisServer


async def test_replies_match_redis_pys_pipeline(module_redis: RedisServer) -> None:
    client = redis_connect(module_redis.url)
    k = f"lean:{uuid.uuid4().hex}"
    await client.hset(k + ":h", mapping={"a": "1", "b": "2"})
    await client.sadd(k + ":s", "x", "y")
    await client.rpush(k + ":l", "p", "q")

    def queue(pipe: object) -> None:
        pipe.hgetall(k + ":h")  # type: ignore[attr-defined]
        pipe.hgetall(k + ":missing")  # type: ignore[attr-defined]
        pipe.smembers(k + ":s")  # type: ignore[attr-defined]
        pipe.lrange(k + ":l", 0, -1)  # type: ignore[attr-defined]
        pipe.execute_command("EXISTS", k + ":h")  # type: ignore[attr-defined]

    lean = redis_pipeline(client)
    assert isinstance(lean, LeanPipeline)
    queue(lean)
    async with client.pipeline(transaction=False) as reference:
        queue(reference)
        expected = await reference.execute()
    assert await lean.execute() == expected
    await close_pipelines(client)
    await client.aclose()


async def test_an_error_reply_is_raised_after_every_reply_and_the_connection_stays_in_step(
    module_redis: RedisServer,
) -> None:
    client = redis_connect(module_redis.url)  # idle connections are reused: the next pipeline gets the same one
    k = f"lean:{uuid.uuid4().hex}"
    await client.set(k, "text")
    pipe = redis_pipeline(client)
    pipe.hgetall(k)  # WRONGTYPE
    pipe.execute_command("SET", k + ":after", "written")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        await pipe.execute()
    assert await client.get(k + ":after") == b"written"  # the command after the error ran
    again = redis_pipeline(client)
    again.execute_command("GET", k)
    assert await again.execute() == [b"text"]  # and the connection reads its own replies, not stale ones
    await close_pipelines(client)
    await client.aclose()


async def test_a_timed_out_call_drops_its_connection(module_redis: RedisServer) -> None:
    client = redis_connect(module_redis.url, timeout=0.2)
    slow = redis_pipeline(client)
    slow.execute_command("BLPOP", f"lean:{uuid.uuid4().hex}", "0.5")  # answers after 0.5 s
    slow.execute_command("PING")
    with pytest.raises(redis.TimeoutError):
        await slow.execute()
    fine = redis_pipeline(client)
    fine.execute_command("ECHO", "mine")
    assert await fine.execute() == [b"mine"]  # not the BLPOP or PING replies left over from the slow call
    await close_pipelines(client)
    await client.aclose()
