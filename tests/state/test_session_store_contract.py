"""One contract suite for every SessionStore backend: the embedded one and Redis (a real redis-server).

Each backend must fold the same events into the same intent features as the reference fold
(`SessionState.apply`), keep duplicates out, bound its state, remember decisions and expire idle
sessions.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from server.core import EVENT_KINDS, TrackedEvent
from server.sessions import intent_features
from server.state.sessions import (
    MAX_CATEGORIES,
    MAX_OPEN_DECISIONS,
    InMemorySessionStore,
    OpenDecision,
    RedisSessionStore,
    SessionState,
    SessionStore,
)
from server.state.sessions._base import _DECAY, MAX_CART_ITEMS, MAX_SEEN_EVENT_IDS

from ..redis_server import RedisServer, async_client

TTL = 1.0


@dataclass
class Backend:
    store: SessionStore
    name: str

    async def after_ttl(self) -> float:
        """A `now` at which the sessions touched so far are idle past the TTL (Redis: wait for expiry)."""
        if self.name != "memory":
            await asyncio.sleep(TTL + 1.1)  # key TTLs are whole seconds
            return time.time()
        return time.time() + TTL + 1


@pytest.fixture(params=["memory", "redis", "cluster"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        yield Backend(InMemorySessionStore(capacity=1000, ttl_seconds=TTL), "memory")
        return
    client = async_client(request.param, request)
    yield Backend(RedisSessionStore(client, f"t{uuid.uuid4().hex[:8]}", TTL), request.param)
    await client.aclose()


def random_events(session: str, count: int, seed: int, now: float) -> list[TrackedEvent]:
    rng = random.Random(seed)
    return [
        TrackedEvent(
            session,
            rng.choice(EVENT_KINDS),
            now - rng.uniform(0, 900),
            f"p{rng.randint(0, 8)}",
            rng.choice(["", "shoes", "bags", "hats", "coats"]),
            rng.choice([0.0, 9.5, 49.0, 120.0, 480.0]),
            rng.choice([0.0, 0.1, 0.5]),
            rng.choice(["", "", "a", "b", "c", f"u{rng.random()}"]),
        )
        for _ in range(count)
    ]


def reference(session: str, events: list[TrackedEvent], now: float) -> SessionState:
    state = SessionState(session, started_at=now, last_event_at=now, last_seen=now)
    for e in events:
        state.apply(e)
    return state


def same_features(a: SessionState, b: SessionState, now: float) -> None:
    fa, fb = dict(intent_features(a, now)), dict(intent_features(b, now))
    assert fa.keys() == fb.keys()
    for key, value in fa.items():
        if isinstance(value, str):
            assert fb[key] == value, key
        else:
            assert fb[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_folds_events_like_the_reference(backend: Backend, seed: int) -> None:
    now = time.time()
    session = f"s-{seed}-{{odd}}:id"  # braces and colons must not break keys
    events = random_events(session, 60, seed, now)
    applied, _ = await backend.store.apply(session, events[:30], now)
    applied2, _ = await backend.store.apply(session, events[30:], now)
    expected = reference(session, events, now)
    assert len(applied) + len(applied2) == expected.events  # duplicates by id are not applied
    state = await backend.store.load(session, now)
    assert state is not None
    same_features(expected, state, now + 3)


async def test_a_batch_of_sessions_folds_like_one_at_a_time(backend: Backend) -> None:
    now = time.time()
    batches = {f"b{i}": random_events(f"b{i}", 15, 10 + i, now) for i in range(5)}
    folded = await backend.store.apply_batch(batches, now)
    for session, events in batches.items():
        expected = reference(session, events, now)
        assert len(folded[session][0]) == expected.events
        state = await backend.store.load(session, now)
        assert state is not None
        same_features(expected, state, now + 1)


async def test_duplicate_event_ids_apply_once(backend: Backend) -> None:
    now = time.time()
    e = TrackedEvent("s1", "click", now, id="e-1")
    applied, _ = await backend.store.apply("s1", [e, e], now)
    again, _ = await backend.store.apply("s1", [e], now)
    assert (applied, again) == ([0], [])
    state = await backend.store.load("s1", now)
    assert state is not None and state.counts == {"click": 1}


async def test_state_stays_bounded(backend: Backend) -> None:
    now = time.time()
    events = [
        TrackedEvent("s1", "product_view", now - 100 + i / 10, category=f"c{i}") for i in range(3 * MAX_CATEGORIES)
    ]
    await backend.store.apply("s1", events, now)
    for i in range(MAX_OPEN_DECISIONS + 10):
        await backend.store.record_decision("s1", OpenDecision(f"e{i}", "home", now), "grid", logged=True)
    state = await backend.store.load("s1", now)
    assert state is not None
    assert len(state.categories) == MAX_CATEGORIES
    assert len(state.decisions) == MAX_OPEN_DECISIONS
    assert state.decisions[-1].event_id == f"e{MAX_OPEN_DECISIONS + 9}"  # the newest are kept


async def test_decisions_are_remembered_and_dropped(backend: Backend) -> None:
    now = time.time()
    first, second = OpenDecision("e1", "home", now), OpenDecision("e2", "cart", now + 1)
    await backend.store.record_decision("s1", first, "grid", logged=True)
    await backend.store.record_decision("s1", second, "pct10", logged=True)
    await backend.store.record_decision("s1", OpenDecision("e3", "home", now + 2), "grid", logged=False)
    _, open_decisions = await backend.store.apply("s1", [TrackedEvent("s1", "page_view", now + 3)], now + 3)
    assert [d.event_id for d in open_decisions] == ["e1", "e2"]
    await backend.store.drop_decisions("s1", [first])
    state = await backend.store.load("s1", now + 3)
    assert state is not None
    assert [d.event_id for d in state.decisions] == ["e2"]
    assert state.shown == {"home": {"grid": 2}, "cart": {"pct10": 1}}


async def test_a_decision_alone_starts_a_session(backend: Backend) -> None:
    now = time.time()
    await backend.store.record_decision("fresh", OpenDecision("e1", "home", now), "grid", logged=True)
    state = await backend.store.load("fresh", now)
    assert state is not None and state.events == 0 and state.started_at == pytest.approx(now)


async def test_unknown_deleted_and_idle_sessions_are_gone(backend: Backend) -> None:
    now = time.time()
    assert await backend.store.load("never", now) is None
    await backend.store.apply("gone", [TrackedEvent("gone", "click", now)], now)
    deleted = await backend.store.delete("gone")
    assert deleted is not None and deleted.counts == {"click": 1}
    assert await backend.store.load("gone", now) is None
    assert await backend.store.delete("gone") is None
    await backend.store.apply("idle", [TrackedEvent("idle", "click", now)], now)
    later = await backend.after_ttl()
    assert await backend.store.load("idle", later) is None


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "release-0.1"


async def test_a_redis_session_folded_by_the_previous_release_reads_on(module_redis: RedisServer) -> None:
    """Sessions in flight across an upgrade: 0.1 folded them without the `discounted` count (session format 1).

    They keep every feature they had; `discounted_share` stays absent (unknown, never a wrong 0) until they
    expire, also after later events, while sessions started after the upgrade get it."""
    client = aioredis.Redis(port=module_redis.port)
    store = RedisSessionStore(client, f"t{uuid.uuid4().hex[:8]}", 60.0)
    now = time.time()
    events = [e for e in random_events("old", 60, 4, now) if e.kind != "purchase"]
    assert any(e.discount > 0 and e.price > 0 for e in events)
    args: list[str | int] = [repr(now), 60, repr(_DECAY), MAX_CART_ITEMS, MAX_CATEGORIES, MAX_SEEN_EVENT_IDS]
    for e in events[:30]:
        args += [e.kind, repr(e.timestamp), e.product_id, e.category, repr(e.price), repr(e.discount), e.id]
    fold_01 = (FIXTURES / "session_fold.lua").read_text()
    await client.eval(fold_01, 6, *store.keys("old").all(), *args)
    assert not await client.hexists(store.keys("old").main, "format")

    await store.apply("old", events[30:], now)
    await store.apply("new", events, now)
    old, new = await store.load("old", now), await store.load("new", now)
    assert old is not None and new is not None
    expected = dict(intent_features(reference("x", events, now), now + 3))
    assert "discounted_share" in expected
    assert dict(intent_features(new, now + 3)) == pytest.approx(expected)
    del expected["discounted_share"]
    assert dict(intent_features(old, now + 3)) == pytest.approx(expected)
    await client.aclose()
