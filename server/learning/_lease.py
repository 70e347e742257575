"""Leader election through Redis: a lease (SET NX PX) that the leader renews and a standby waits for.

Only the holder of the current token may publish models (the publish script checks it), so a leader
that stalls past its lease and comes back cannot overwrite its successor's work.
"""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaderLease:
    def __init__(self, client: aioredis.Redis, key: str, ttl_seconds: float = 5.0) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = int(ttl_seconds * 1000)
        self.token = uuid.uuid4().hex
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it."""
        return bool(await self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))

    async def renew(self) -> bool:
        """Extend the lease; False means it was lost (expired and maybe taken by another)."""
        return bool(await self._renew(keys=[self.key], args=[self.token, self.ttl_ms]))

    async def release(self) -> None:
        await self._release(keys=[self.key], args=[self.token])
