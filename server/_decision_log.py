"""The decision log: every served decision with its exact features and probability, kept until its
reward window has closed and a grace period has passed.

The log is the join side of rewards (by event id), the replay store for repeated event ids, and the
source of the learner's examples. `InMemoryDecisionLog` is the embedded default: a dict plus a
deadline heap, bounded by `capacity`; its content is written to the data directory at shutdown and
read back at start-up so pending decisions survive a graceful restart.
"""

from __future__ import annotations

import enum
import heapq
import json
import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

Aggregation = Literal["first", "sum", "max"]


@dataclass(slots=True)
class Decision:
    """What a client is told: the chosen action, every candidate's probability, payload, model version."""

    event_id: str
    action_id: str
    probability: float
    ranking: tuple[tuple[str, float], ...]
    payload: Mapping[str, str]
    model_version: str


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


class InMemoryDecisionLog:
    """The embedded decision log: a dict by event id and a heap of window and expiry deadlines."""

    def __init__(
        self,
        capacity: int,
        learn: LearnSink,
        on_unactivated: Callable[[DecisionRecord], None] = lambda record: None,
        on_evicted: Callable[[DecisionRecord], None] = lambda record: None,
    ) -> None:
        self.capacity = capacity
        self._learn = learn
        self._on_unactivated = on_unactivated
        self._on_evicted = on_evicted
        self._learned_order: deque[str] = deque()  # learned decisions, oldest first: evicted first when full
        self._records: dict[str, DecisionRecord] = {}
        # (when, kind, event_id): kind 0 closes a window, 1 forgets the decision. Entries may be stale
        # (a window reopened by activation); each is checked against the record when it comes due.
        self._deadlines: list[tuple[float, int, str]] = []
        self._unlearned = 0

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[DecisionRecord]:
        return iter(self._records.values())

    def pending(self) -> int:
        """Decisions not yet learned (the join backlog)."""
        return self._unlearned

    async def get(self, event_id: str) -> DecisionRecord | None:
        return self._records.get(event_id)

    async def add(self, record: DecisionRecord) -> bool:
        return self.add_now(record)

    def add_now(self, record: DecisionRecord) -> bool:
        if len(self._records) >= self.capacity and not self._evict_learned():
            return False
        self._records[record.event_id] = record
        if not record.learned:
            self._unlearned += 1
        self._schedule(record)
        return True

    async def join(self, event_id: str, value: float, reward_id: str, at: float) -> JoinStatus:
        record = self._records.get(event_id)
        if record is None:
            return JoinStatus.UNKNOWN_EVENT
        low, high = record.reward_range
        if not low <= value <= high:
            return JoinStatus.INVALID
        if reward_id and reward_id in record.reward_ids:
            return JoinStatus.DUPLICATE
        end = record.window_end
        if record.learned or (end is not None and at > end):
            return JoinStatus.LATE
        if record.aggregation == "first" and record.rewards:  # held before activation; only the first counts
            return JoinStatus.LATE
        if reward_id:
            record.reward_ids += (reward_id,)
        if end is not None and record.aggregation == "first":
            self._hand_off(record, value, "reward")
        else:
            record.rewards += (value,)  # aggregated at window close, or held until activation
        return JoinStatus.ACCEPTED

    async def activate(self, event_id: str, now: float) -> bool:
        record = self._records.get(event_id)
        if record is None:
            return False
        if record.activated_at is None:
            record.activated_at = now
            self._schedule(record)
            if record.aggregation == "first" and record.rewards:
                self._hand_off(record, record.rewards[0], "reward")
        return True

    async def close_windows(self, now: float) -> int:
        closed, forgotten = self._due(now)
        for record in closed:
            if not record.rewards:
                self._hand_off(record, record.default_reward, "default")
            elif record.aggregation == "sum":
                self._hand_off(record, sum(record.rewards), "reward")
            else:  # max; `first` learned at its first reward and never reaches here with rewards
                self._hand_off(record, max(record.rewards), "reward")
        for record in forgotten:
            if record.activated_at is None:
                self._on_unactivated(record)
        return len(closed)

    async def discard(self, event_ids: Sequence[str]) -> None:
        for event_id in event_ids:
            record = self._records.pop(event_id, None)
            if record is not None and not record.learned:
                self._unlearned -= 1  # its heap entries find no record and are skipped

    def _hand_off(self, record: DecisionRecord, reward: float, source: Source) -> None:
        """Mark learned and give it to the learner: the one place a decision becomes learnable, once."""
        if not record.learned:
            record.learned = True
            self._unlearned -= 1
            self._learned_order.append(record.event_id)
            self._learn(record, reward, source)

    def _evict_learned(self) -> bool:
        """Make room by forgetting the oldest learned decision before its retention ends.

        A full log prefers losing what only serves replays and LATE statuses (a later reward for it then
        answers UNKNOWN_EVENT) to refusing a new decision its learning."""
        while self._learned_order:
            event_id = self._learned_order.popleft()
            record = self._records.get(event_id)
            if record is not None and record.learned:
                del self._records[event_id]
                self._on_evicted(record)
                return True
        return False

    def _schedule(self, record: DecisionRecord) -> None:
        end = record.window_end
        if end is not None and not record.learned:
            heapq.heappush(self._deadlines, (end, 0, record.event_id))
        heapq.heappush(self._deadlines, (record.expires_at, 1, record.event_id))

    def _due(self, now: float) -> tuple[list[DecisionRecord], list[DecisionRecord]]:
        closed: list[DecisionRecord] = []
        forgotten: list[DecisionRecord] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, kind, event_id = heapq.heappop(heap)
            record = self._records.get(event_id)
            if record is None:
                continue
            if kind == 0:
                end = record.window_end
                if not record.learned and end is not None and end <= now:
                    closed.append(record)
            elif record.expires_at <= now:
                del self._records[event_id]
                if not record.learned:
                    self._unlearned -= 1
                forgotten.append(record)
        return closed, forgotten

    def save(self, path: Path) -> int:
        """Write every retained decision as JSON lines (atomically); returns how many."""
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as f:
            for record in self._records.values():
                f.write(json.dumps(record.to_json(), separators=(",", ":")))
                f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return len(self._records)

    def load(self, path: Path) -> int:
        """Read decisions written by `save`; returns how many were restored."""
        restored = 0
        with path.open() as f:
            for line in f:
                if line.strip() and self.add_now(DecisionRecord.from_json(json.loads(line))):
                    restored += 1
        return restored
