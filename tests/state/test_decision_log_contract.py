"""One contract suite for every DecisionLog backend: the embedded one and Redis (a real redis-server).

Whatever the backend, rewards join in the contract's status order, and each decision is handed to the
learner exactly once, with the reward its aggregation says, at the moment its aggregation says.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from server.state.decision_log import (
    Aggregation,
    Decision,
    DecisionLog,
    DecisionRecord,
    InMemoryDecisionLog,
    JoinStatus,
    RedisDecisionLog,
)

from ..redis_server import async_client

S = JoinStatus


@dataclass
class Backend:
    log: DecisionLog
    name: str
    handed: list[tuple[str, float, str]] = field(default_factory=list)

    async def learned(self) -> list[Any]:
        """(event id, reward, source) of every decision handed to the learner so far, in order."""
        if isinstance(self.log, RedisDecisionLog):
            entries = await self.log.read_learnable({})
            return [(e.record.event_id, e.reward, e.source) for e in entries]
        return list(self.handed)


@pytest.fixture(params=["memory", "redis", "cluster"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        b = Backend(InMemoryDecisionLog(1000, learn=lambda *a: None), "memory")
        b.log = InMemoryDecisionLog(1000, learn=lambda r, reward, source: b.handed.append((r.event_id, reward, source)))
        yield b
        return
    client = async_client(request.param, request)
    log = RedisDecisionLog(client, f"t{uuid.uuid4().hex[:8]}", shards=4, decision_points=("home",))
    yield Backend(log, request.param)
    await client.aclose()


def decision(
    event_id: str,
    aggregation: Aggregation = "first",
    window: float = 60.0,
    deferred: bool = False,
    created: float | None = None,
    reward_range: tuple[float, float] = (0.0, 1.0),
) -> DecisionRecord:
    now = time.time() if created is None else created
    return DecisionRecord(
        decision=Decision(event_id, "grid", 0.5, (("grid", 0.5), ("list", 0.5)), {"t": "grid_v1"}, "abc.1"),
        session_id="s1",
        decision_point="home",
        shared="shared |c device=mobile",
        actions=("|a id=grid", "|a id=list"),
        chosen=0,
        created_at=now,
        window_seconds=window,
        aggregation=aggregation,
        reward_range=reward_range,
        default_reward=0.1,
        grace_seconds=30.0,
        activated_at=None if deferred else now,
    )


async def test_a_logged_decision_reads_back(backend: Backend) -> None:
    record = decision("e1")
    assert await backend.log.add(record)
    got = await backend.log.get("e1")
    assert got is not None
    assert got.decision == record.decision
    assert (got.shared, got.actions, got.chosen, got.session_id) == (record.shared, record.actions, 0, "s1")
    assert got.window_end == pytest.approx(record.window_end) and not got.learned
    assert await backend.log.get("never") is None


async def test_statuses_follow_the_contract_order(backend: Backend) -> None:
    now = time.time()
    await backend.log.add(decision("e1"))
    assert await backend.log.join("never", 1.0, "", now) == S.UNKNOWN_EVENT
    assert await backend.log.join("e1", 1.5, "r1", now) == S.INVALID
    assert await backend.log.join("e1", 1.0, "r1", now) == S.ACCEPTED
    assert await backend.log.join("e1", 1.0, "r1", now) == S.DUPLICATE  # before LATE
    assert await backend.log.join("e1", 0.5, "r2", now) == S.LATE  # first: already learned
    assert await backend.learned() == [("e1", 1.0, "reward")]
    got = await backend.log.get("e1")
    assert got is not None and got.learned and got.reward_ids == ("r1",)


async def test_a_reward_after_the_window_is_late(backend: Backend) -> None:
    record = decision("e1", window=10)
    await backend.log.add(record)
    assert await backend.log.join("e1", 1.0, "", record.created_at + 11) == S.LATE
    assert await backend.learned() == []


@pytest.mark.parametrize(("aggregation", "expected"), [("sum", 1.5), ("max", 1.0)])
async def test_sum_and_max_learn_once_when_the_window_closes(
    backend: Backend, aggregation: Aggregation, expected: float
) -> None:
    record = decision("e1", aggregation=aggregation, window=5, reward_range=(0.0, 2.0))
    await backend.log.add(record)
    for value in (0.5, 1.0):
        assert await backend.log.join("e1", value, "", record.created_at + 1) == S.ACCEPTED
    assert await backend.log.close_windows(record.created_at + 4) == 0
    assert await backend.learned() == []
    assert await backend.log.close_windows(record.created_at + 6) == 1
    assert await backend.log.close_windows(record.created_at + 7) == 0
    assert await backend.learned() == [("e1", pytest.approx(expected), "reward")]


async def test_no_reward_learns_the_default_at_window_close(backend: Backend) -> None:
    record = decision("e1", window=5)
    await backend.log.add(record)
    assert await backend.log.close_windows(record.created_at + 6) == 1
    assert await backend.learned() == [("e1", pytest.approx(0.1), "default")]


async def test_deferred_decisions_hold_rewards_until_activated(backend: Backend) -> None:
    record = decision("e1", deferred=True, window=5)
    await backend.log.add(record)
    assert await backend.log.join("e1", 0.7, "r1", record.created_at + 1) == S.ACCEPTED
    assert await backend.log.join("e1", 0.9, "r2", record.created_at + 1) == S.LATE  # first: only one counts
    assert await backend.log.close_windows(record.created_at + 20) == 0  # its window has not started
    assert await backend.learned() == []
    assert await backend.log.activate("e1", record.created_at + 2)
    assert await backend.log.activate("e1", record.created_at + 3)  # idempotent
    assert await backend.learned() == [("e1", pytest.approx(0.7), "reward")]
    assert not await backend.log.activate("never", record.created_at)


async def test_activation_starts_the_window(backend: Backend) -> None:
    record = decision("e1", deferred=True, aggregation="max", window=5)
    await backend.log.add(record)
    start = record.created_at + 50
    assert await backend.log.activate("e1", start)
    got = await backend.log.get("e1")
    assert got is not None and got.window_end == pytest.approx(start + 5)
    assert await backend.log.join("e1", 0.4, "", start + 1) == S.ACCEPTED
    assert await backend.log.close_windows(start + 6) == 1
    assert await backend.learned() == [("e1", pytest.approx(0.4), "reward")]


async def test_discarded_decisions_are_gone_and_never_learned(backend: Backend) -> None:
    record = decision("e1", window=5)
    await backend.log.add(record)
    await backend.log.discard(["e1", "never"])
    assert await backend.log.get("e1") is None
    assert await backend.log.join("e1", 1.0, "", record.created_at) == S.UNKNOWN_EVENT
    assert await backend.log.close_windows(record.created_at + 6) == 0
    assert await backend.learned() == []


async def test_concurrent_rewards_learn_a_decision_exactly_once(backend: Backend) -> None:
    now = time.time()
    await backend.log.add(decision("e1"))
    statuses = await asyncio.gather(*(backend.log.join("e1", 1.0, f"r{i}", now) for i in range(50)))
    assert statuses.count(S.ACCEPTED) == 1 and statuses.count(S.LATE) == 49
    assert await backend.learned() == [("e1", 1.0, "reward")]
