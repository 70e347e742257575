"""A private redis-server for tests: started on a free port, stopped by pid; never the shared one on 6379."""

from __future__ import annotations

import redis

from server.tools.launcher import RedisProcess


class RedisServer(RedisProcess):
    """`redis-server` as a child process (scripts/test installs it when missing: a missing server is a setup
    error, not a skip)."""

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)
