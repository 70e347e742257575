"""The decision log: every served decision with its exact features and probability, kept until its
reward window has closed and a grace period has passed.

The log is the join side of rewards (by event id), the replay store for repeated event ids, and the
source of the learner's examples. This module holds the records and the `DecisionLog` interface that
the in-memory (`_memory.py`) and Redis (`_redis.py`) backends implement.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Aggregation = Literal["first", "sum", "max"]
Arm = Literal["policy", "apprentice", "holdout"]


@dataclass(slots=True)
class Decision:
    """What a client is told: the chosen action, every candidate's probability, payload, model version."""

    event_id: str
    action_id: str
    probability: float
    ranking: tuple[tuple[str, float], ...]
    payload: Mapping[str, str]
    model_version: str
    # How it was served: "policy" (drawn from the learned policy), "apprentice" (apprentice mode: the baseline,
    # or with apprentice_exploration the model's draw), "holdout" (a holdout session: the baseline, not learned).
    arm: Arm = "policy"
    model_action_id: str = ""  # apprentice: the action the model would have chosen ...
    model_probability: float = 0.0  # ... and its probability under the model


@dataclass(slots=True)
class DecisionRecord:
    """A logged decision with all a learner needs to learn it exactly once."""

    decision: Decision
    session_id: str
    decision_point: str
    shared: str  # VW shared line, exactly as predicted on
    actions: tuple[str, ...]  # VW action lines, in candidate order
    chosen: int
    created_at: float
    window_seconds: float
    aggregation: Aggregation
    reward_range: tuple[float, float]
    default_reward: float
    grace_seconds: float
    activated_at: float | None  # None while a deferred decision waits for Activate
    # Tuples, not a list and a set: a retained record then holds no container of its own besides the
    # record and its Decision, which keeps the cyclic GC's work (and its pauses) small at 500k records.
    rewards: tuple[float, ...] = ()
    reward_ids: tuple[str, ...] = ()
    learned: bool = False
    baseline: str | None = None  # the catalog's baseline action when decided (None: not recorded)

    @property
    def event_id(self) -> str:
        return self.decision.event_id

    @property
    def probability(self) -> float:
        return self.decision.probability

    @property
    def window_end(self) -> float | None:
        """When the reward window closes; None until a deferred decision is activated."""
        return None if self.activated_at is None else self.activated_at + self.window_seconds

    @property
    def expires_at(self) -> float:
        """When the decision is forgotten (rewards then count as UNKNOWN_EVENT)."""
        start = self.created_at if self.activated_at is None else self.activated_at
        return start + self.window_seconds + self.grace_seconds

    def to_json(self) -> dict[str, Any]:
        d = self.decision
        return {
            "decision": {
                "event_id": d.event_id,
                "action_id": d.action_id,
                "probability": d.probability,
                "ranking": [list(r) for r in d.ranking],
                "payload": d.payload,
                "model_version": d.model_version,
                # Written only when not "policy": records of earlier releases (and their readers) stay as they were.
                **(
                    {"arm": d.arm, "model_action_id": d.model_action_id, "model_probability": d.model_probability}
                    if d.arm != "policy"
                    else {}
                ),
            },
            "session_id": self.session_id,
            "decision_point": self.decision_point,
            "shared": self.shared,
            "actions": list(self.actions),
            "chosen": self.chosen,
            "created_at": self.created_at,
            "window_seconds": self.window_seconds,
            "aggregation": self.aggregation,
            "reward_range": list(self.reward_range),
            "default_reward": self.default_reward,
            "grace_seconds": self.grace_seconds,
            "activated_at": self.activated_at,
            "rewards": list(self.rewards),
            "reward_ids": sorted(self.reward_ids),
            "learned": self.learned,
            **({"baseline": self.baseline} if self.baseline is not None else {}),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> DecisionRecord:
        d = doc["decision"]
        decision = Decision(
            event_id=d["event_id"],
            action_id=d["action_id"],
            probability=d["probability"],
            ranking=tuple((a, p) for a, p in d["ranking"]),
            payload=d["payload"],
            model_version=d["model_version"],
            arm=d.get("arm", "policy"),
            model_action_id=d.get("model_action_id", ""),
            model_probability=d.get("model_probability", 0.0),
        )
        low, high = doc["reward_range"]
        return cls(
            decision=decision,
            session_id=doc["session_id"],
            decision_point=doc["decision_point"],
            shared=doc["shared"],
            actions=tuple(doc["actions"]),
            chosen=doc["chosen"],
            created_at=doc["created_at"],
            window_seconds=doc["window_seconds"],
            aggregation=doc["aggregation"],
            reward_range=(low, high),
            default_reward=doc["default_reward"],
            grace_seconds=doc["grace_seconds"],
            activated_at=doc["activated_at"],
            rewards=tuple(doc["rewards"]),
            reward_ids=tuple(doc["reward_ids"]),
            learned=doc["learned"],
            baseline=doc.get("baseline"),
        )


class JoinStatus(enum.Enum):
    """What became of one reward (the contract's RewardStatus)."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    UNKNOWN_EVENT = "unknown_event"
    LATE = "late"
    INVALID = "invalid"


Source = Literal["reward", "default"]


class LearnSink(Protocol):
    """Where a decision goes once it is to be learned, with its reward: the learner's queue or stream."""

    def __call__(self, record: DecisionRecord, reward: float, source: Source) -> None: ...


class DecisionLog(Protocol):
    """Where decisions wait for their rewards, and where rewards are joined to them.

    The join is part of the log so that a backend can make it atomic (the Redis backend runs it as one
    Lua script): a decision is handed to the learner exactly once, whichever replica got the reward.
    Statuses are decided in the contract's order: INVALID (out of range), UNKNOWN_EVENT, DUPLICATE, LATE.
    """

    async def get(self, event_id: str) -> DecisionRecord | None: ...

    async def add(self, record: DecisionRecord) -> bool:
        """Log a decision; False when the log is full (the decision is then served but not learned)."""
        ...

    async def join(self, event_id: str, value: float, reward_id: str, at: float) -> JoinStatus:
        """Join one finite reward that happened at `at`; learn the decision now if its aggregation says so."""
        ...

    async def activate(self, event_id: str, now: float) -> bool:
        """Start a deferred decision's window (idempotent); False if the decision is not retained."""
        ...

    async def close_windows(self, now: float) -> int:
        """Learn every decision whose window has closed unlearned; forget expired ones. Returns how many learned."""
        ...

    async def discard(self, event_ids: Sequence[str]) -> None:
        """Forget decisions now (privacy deletes); they are never learned."""
        ...
