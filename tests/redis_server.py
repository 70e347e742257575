"""A private redis-server for tests: started on a free port, stopped by pid; never the shared one on 6379."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

from server.state import redis_connect
from server.tools.launcher import RedisClusterProcess, RedisProcess


class RedisServer(RedisProcess):
    """`redis-server` as a child process (scripts/test installs it when missing: a missing server is a setup
    error, not a skip)."""

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)


class RedisClusterServer(RedisClusterProcess):
    """A Redis Cluster of 3 primaries with a replica each, as child processes (see RedisClusterProcess)."""

    def client(self) -> aioredis.Redis:
        return redis_connect(self.url, cluster=True)


def async_client(kind: str, request: object) -> aioredis.Redis:
    """An asyncio client of the test's Redis: `redis` (the module's redis-server) or `cluster` (the session's
    Redis Cluster); `request` is the pytest request that provides them."""
    if kind == "cluster":
        cluster: RedisClusterServer = request.getfixturevalue("redis_cluster")  # type: ignore[attr-defined]
        return cluster.client()
    server: RedisServer = request.getfixturevalue("module_redis")  # type: ignore[attr-defined]
    return redis_connect(server.url)  # as the service makes it: the request path's lean pipelines included


def sync_client(url: str, cluster: bool) -> redis.Redis:
    """A blocking client (text replies) for a test to look at the state a server wrote: of one redis-server, or of
    the Redis Cluster `url` names a node of (typed as the single-server client, as `redis_connect` does)."""
    if cluster:
        return redis.RedisCluster.from_url(url, decode_responses=True)  # type: ignore[return-value]
    return redis.Redis.from_url(url, decode_responses=True)
