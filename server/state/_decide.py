"""The state one decision reads and writes, in as few round trips as the backend allows.

Decide needs the session's state (and, for a repeated event id, the logged decision) before it can
decide, and must log the decision and remember it in the session before it answers. Embedded, these are
plain calls; on Redis they are one pipelined read and one pipelined write, so a decision costs two
round trips whatever the stores behind it.
"""

from __future__ import annotations

from typing import Any, Protocol

import redis.asyncio as aioredis

from server.core import Metrics
from server.state.decision_log import DecisionLog, DecisionRecord, RedisDecisionLog
from server.state.sessions import OpenDecision, RedisSessionStore, SessionState, SessionStore

from ._redis import pipeline, run_scripts, unavailable_on_error


class DecideState(Protocol):
    async def read(
        self, session_id: str, event_id: str, now: float
    ) -> tuple[DecisionRecord | None, SessionState | None]:
        """The decision already logged under `event_id` (if any, and if given) and the session's state."""
        ...

    async def write(self, record: DecisionRecord, action_id: str) -> bool:
        """Log the decision and remember it in its session; False if it could not be logged for learning."""
        ...


class EmbeddedDecideState:
    def __init__(self, sessions: SessionStore, decisions: DecisionLog) -> None:
        self.sessions = sessions
        self.decisions = decisions

    async def read(
        self, session_id: str, event_id: str, now: float
    ) -> tuple[DecisionRecord | None, SessionState | None]:
        known = await self.decisions.get(event_id) if event_id else None
        return known, await self.sessions.load(session_id, now)

    async def write(self, record: DecisionRecord, action_id: str) -> bool:
        logged = await self.decisions.add(record)
        opened = OpenDecision(record.event_id, record.decision_point, record.created_at)
        await self.sessions.record_decision(record.session_id, opened, action_id, logged)
        return logged


class RedisDecideState:
    def __init__(
        self, client: aioredis.Redis, sessions: RedisSessionStore, decisions: RedisDecisionLog, metrics: Metrics
    ) -> None:
        self.client = client
        self.sessions = sessions
        self.decisions = decisions
        self._scripts = (*decisions.scripts, *sessions.scripts)
        self._reads = metrics.redis_round_trips.labels("decide_read")
        self._writes = metrics.redis_round_trips.labels("decide_write")

    @unavailable_on_error
    async def read(
        self, session_id: str, event_id: str, now: float
    ) -> tuple[DecisionRecord | None, SessionState | None]:
        async with pipeline(self.client) as pipe:
            self.sessions.queue_load(pipe, session_id)
            if event_id:
                self.decisions.queue_get(pipe, event_id)
            replies = await pipe.execute()
        self._reads.inc()
        known = self.decisions.parse_get(replies[5], replies[6]) if event_id else None
        return known, self.sessions.parse_load(session_id, replies[:5])

    @unavailable_on_error
    async def write(self, record: DecisionRecord, action_id: str) -> bool:
        opened = OpenDecision(record.event_id, record.decision_point, record.created_at)

        def build(pipe: Any) -> None:
            self.decisions.queue_add(pipe, record)
            self.sessions.queue_record_decision(pipe, record.session_id, opened, action_id, logged=True)

        await run_scripts(self.client, build, self._scripts)
        self._writes.inc()
        return True
