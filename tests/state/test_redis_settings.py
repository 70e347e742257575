"""The start-up check of a Redis server's settings: eviction and persistence that could lose Tailor's state."""

from __future__ import annotations

import redis.asyncio as aioredis

from server.state import redis_settings_problems

from ..redis_server import RedisServer


async def test_eviction_and_missing_persistence_are_warned_about_and_safe_settings_are_quiet() -> None:
    server = RedisServer().start()  # its own: the test changes its settings
    client = aioredis.Redis(port=server.port)
    try:
        problems = await redis_settings_problems(client)  # the test server runs without persistence
        assert len(problems) == 1 and "no persistence" in problems[0]

        await client.config_set("maxmemory", "100mb")
        await client.config_set("maxmemory-policy", "allkeys-lru")
        problems = await redis_settings_problems(client)
        assert any("'allkeys-lru'" in p and "noeviction" in p for p in problems)

        await client.config_set("maxmemory-policy", "noeviction")
        await client.config_set("appendonly", "yes")
        assert await redis_settings_problems(client) == []
    finally:
        await client.aclose()
        server.stop()
