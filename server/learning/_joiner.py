"""The reward joiner: validates and counts rewards, explicit or derived by catalog rules, and joins
them to logged decisions through the decision log (which makes the join atomic per backend).

A decision is learned exactly once: at its first reward (aggregation `first`), or when its window
closes (`sum`, `max`, and any decision that got no reward, with the decision point's default reward).
Deferred decisions hold their rewards until Activate starts the window; one never activated is never
learned. Statuses are decided in the contract's order: INVALID, UNKNOWN_EVENT, DUPLICATE, LATE.
"""

from __future__ import annotations

import math

from server.core import Metrics, NotFound
from server.state.decision_log import DecisionLog, DecisionRecord, JoinStatus


class RewardJoiner:
    def __init__(self, decisions: DecisionLog, metrics: Metrics, max_id_bytes: int = 256) -> None:
        self.decisions = decisions
        self.max_id_bytes = max_id_bytes
        self.metrics = metrics
        self._counters = {s: metrics.rewards.labels(s.value) for s in JoinStatus}

    async def report(self, event_id: str, value: float, reward_id: str, now: float) -> JoinStatus:
        """An explicit reward from a client, joined as of `now`."""
        if not math.isfinite(value) or len(reward_id.encode()) > self.max_id_bytes:
            status = JoinStatus.INVALID
        elif not event_id or len(event_id.encode()) > self.max_id_bytes:
            status = JoinStatus.UNKNOWN_EVENT
        else:
            status = await self.decisions.join(event_id, value, reward_id, now)
        self._counters[status].inc()
        return status

    async def report_derived(self, record: DecisionRecord, value: float, reward_id: str, at: float) -> JoinStatus:
        """A reward derived by a catalog rule from a session event that happened at `at`."""
        status = await self.decisions.join(record.event_id, value, reward_id, at)
        self.metrics.rule_rewards.labels(record.decision_point, status.value).inc()
        return status

    async def activate(self, event_id: str, now: float) -> None:
        """Start a deferred decision's window; idempotent, and a no-op on a non-deferred decision."""
        if not await self.decisions.activate(event_id, now):
            raise NotFound(f"no decision with event_id {event_id!r} is retained (unknown or expired)")
