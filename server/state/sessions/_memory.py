"""The embedded session store: an LRU-ordered dict of `SessionState`s with an idle TTL and a cap on sessions."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence

from server.core._events import TrackedEvent

from ._base import OpenDecision, SessionState


class InMemorySessionStore:
    """Sessions in an LRU-ordered dict: idle ones expire after `ttl_seconds`; beyond `capacity` the least
    recently used is evicted."""

    def __init__(self, capacity: int, ttl_seconds: float) -> None:
        self.capacity = capacity
        self.ttl_seconds = ttl_seconds
        self._sessions: OrderedDict[str, SessionState] = OrderedDict()
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[SessionState]:
        return iter(self._sessions.values())

    async def apply(
        self, session_id: str, events: Sequence[TrackedEvent], now: float
    ) -> tuple[list[int], list[OpenDecision]]:
        state = self._touch(session_id, now)
        applied = [i for i, event in enumerate(events) if state.apply(event)]
        return applied, list(state.decisions)

    async def apply_batch(
        self, events: Mapping[str, Sequence[TrackedEvent]], now: float
    ) -> dict[str, tuple[list[int], list[OpenDecision]]]:
        return {session_id: await self.apply(session_id, batch, now) for session_id, batch in events.items()}

    async def record_decision(self, session_id: str, decision: OpenDecision, action_id: str, logged: bool) -> None:
        self._touch(session_id, decision.decided_at).record_decision(decision, action_id, open_for_rewards=logged)

    async def drop_decisions(self, session_id: str, decisions: Sequence[OpenDecision]) -> None:
        state = self._sessions.get(session_id)
        if state is not None:
            gone = {d.event_id for d in decisions}
            state.decisions = [d for d in state.decisions if d.event_id not in gone]

    async def load(self, session_id: str, now: float) -> SessionState | None:
        return self._live(session_id, now)

    async def delete(self, session_id: str) -> SessionState | None:
        return self._sessions.pop(session_id, None)

    def _live(self, session_id: str, now: float) -> SessionState | None:
        state = self._sessions.get(session_id)
        if state is None:
            return None
        if now - state.last_seen > self.ttl_seconds:
            del self._sessions[session_id]
            self.expired += 1
            return None
        return state

    def _touch(self, session_id: str, now: float) -> SessionState:
        """The session's state, created if new, marked active now (LRU order and idle TTL)."""
        state = self._live(session_id, now)
        if state is None:
            state = SessionState(session_id, started_at=now, last_event_at=now, last_seen=now)
            self._sessions[session_id] = state
            if len(self._sessions) > self.capacity:
                self._sessions.popitem(last=False)
                self.evicted += 1
        else:
            state.last_seen = max(state.last_seen, now)
            self._sessions.move_to_end(session_id)
        return state

    def expire(self, now: float, budget: int = 1000) -> int:
        """Drop idle sessions, oldest first, at most `budget` per call (keeps each sweep short)."""
        dropped = 0
        sessions = self._sessions
        while sessions and dropped < budget:
            oldest = next(iter(sessions.values()))
            if now - oldest.last_seen <= self.ttl_seconds:
                break
            sessions.popitem(last=False)
            dropped += 1
        self.expired += dropped
        return dropped
