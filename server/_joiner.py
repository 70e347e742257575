"""The reward joiner: rewards meet logged decisions by event id, inside each decision's window.

A decision is learned exactly once: at its first reward (aggregation `first`), or when its window
closes (`sum`, `max`, and any decision that got no reward, with the decision point's default reward).
Deferred decisions hold their rewards until Activate starts the window; one never activated is never
learned. Statuses are decided in the contract's order: INVALID, UNKNOWN_EVENT, DUPLICATE, LATE.
"""

from __future__ import annotations

import enum
import math

from ._decision_log import DecisionLog, DecisionRecord
from ._errors import NotFound
from ._learner import Learner
from ._metrics import Metrics


class JoinStatus(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    UNKNOWN_EVENT = "unknown_event"
    LATE = "late"
    INVALID = "invalid"


class RewardJoiner:
    def __init__(self, decisions: DecisionLog, learner: Learner, metrics: Metrics, max_id_bytes: int = 256) -> None:
        self.decisions = decisions
        self.max_id_bytes = max_id_bytes
        self.learner = learner
        self.metrics = metrics
        self._counters = {s: metrics.rewards.labels(s.value) for s in JoinStatus}

    def report(self, event_id: str, value: float, reward_id: str, now: float) -> JoinStatus:
        """An explicit reward from a client, joined as of `now`."""
        status = self._join(event_id, value, reward_id, now)
        self._counters[status].inc()
        return status

    def report_derived(self, record: DecisionRecord, value: float, reward_id: str, at: float) -> JoinStatus:
        """A reward derived by a catalog rule from a session event that happened at `at`."""
        status = self._join(record.event_id, value, reward_id, at)
        self.metrics.rule_rewards.labels(record.decision_point, status.value).inc()
        return status

    def _join(self, event_id: str, value: float, reward_id: str, now: float) -> JoinStatus:
        if not math.isfinite(value) or len(reward_id.encode()) > self.max_id_bytes:
            return JoinStatus.INVALID
        record = self.decisions.get(event_id)
        if record is None:
            return JoinStatus.UNKNOWN_EVENT
        low, high = record.reward_range
        if not low <= value <= high:
            return JoinStatus.INVALID
        if reward_id and reward_id in record.reward_ids:
            return JoinStatus.DUPLICATE
        end = record.window_end
        if record.learned or (end is not None and now > end):
            return JoinStatus.LATE
        if record.aggregation == "first" and record.rewards:  # held before activation; only the first counts
            return JoinStatus.LATE
        if reward_id:
            record.reward_ids.add(reward_id)
        if end is not None and record.aggregation == "first":
            self._learn(record, value, "reward")
        else:
            record.rewards.append(value)  # aggregated at window close, or held until activation
        return JoinStatus.ACCEPTED

    def activate(self, event_id: str, now: float) -> None:
        """Start a deferred decision's window; idempotent, and a no-op on a non-deferred decision."""
        record = self.decisions.get(event_id)
        if record is None:
            raise NotFound(f"no decision with event_id {event_id!r} is retained (unknown or expired)")
        if record.activated_at is not None:
            return
        self.decisions.activate(record, now)
        if record.aggregation == "first" and record.rewards:
            self._learn(record, record.rewards[0], "reward")

    def close_windows(self, now: float) -> None:
        """Learn every decision whose window has closed unlearned; count the deferred ones never activated."""
        closed, forgotten = self.decisions.due(now)
        for record in closed:
            if not record.rewards:
                self._learn(record, record.default_reward, "default")
            elif record.aggregation == "sum":
                self._learn(record, sum(record.rewards), "reward")
            else:  # max; `first` learned at its first reward and never reaches here with rewards
                self._learn(record, max(record.rewards), "reward")
        for record in forgotten:
            if record.activated_at is None:
                self.metrics.decisions_expired_unactivated.labels(record.decision_point).inc()

    def _learn(self, record: DecisionRecord, reward: float, source: str) -> None:
        self.decisions.mark_learned(record)
        self.learner.submit(record, reward, "default" if source == "default" else "reward")
