"""Session context in Redis: the same aggregates as `SessionState`, folded atomically by Lua scripts.

Each session is a handful of keys under one hash tag (`server/state/_redis.py`: `SessionKeys`): the aggregates hash,
the cart, decayed category weights, the ids of events already seen, the open decisions and what was
shown. Events are folded server-side by one script per session and batch, so replicas that receive
events of the same session concurrently never race, and a batch costs one round trip. Every key
expires after the idle TTL, refreshed by each update: memory is bounded by TTLs.

The fold mirrors `SessionState.apply` line for line; the contract tests run the same events through
both stores and compare the intent features.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis

from server.core import TrackedEvent

from .._redis import LuaScript, SessionKeys, run_scripts, unavailable_on_error
from ._base import (
    _DECAY,
    MAX_CART_ITEMS,
    MAX_CATEGORIES,
    MAX_OPEN_DECISIONS,
    MAX_SEEN_EVENT_IDS,
    MAX_SHOWN,
    OpenDecision,
    SessionState,
)

#: The session hash's layout. 1 (release 0.1, no `format` field): no `discounted` count. 2: `discounted`.
#: A fold stamps the format when it starts a session, so a session never mixes layouts.
SESSION_FORMAT = 2
_DISCOUNTED_SINCE = 2

_FOLD = """
local main, cart, cats, seen, decs, shown = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local now, ttl, decay = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local max_cart, max_cats, max_seen = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local st = redis.call('HMGET', main, 'events', 'started_at', 'last_event_at', 'seen_seq', 'last_add_to_cart_at')
local events = tonumber(st[1]) or 0
local started, last = tonumber(st[2]) or now, tonumber(st[3]) or now
local seq, last_atc = tonumber(st[4]) or 0, tonumber(st[5])
local applied = {}
if events == 0 then redis.call('HSETNX', main, 'format', @FORMAT@) end
for i = 7, #ARGV, 7 do
  local kind, t, product, category = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  local price, discount, id = tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5]), ARGV[i + 6]
  local fresh = true
  if id ~= '' then
    if redis.call('ZSCORE', seen, id) then
      fresh = false
    else
      seq = seq + 1
      redis.call('ZADD', seen, seq, id)
      if redis.call('ZCARD', seen) > max_seen then redis.call('ZREMRANGEBYRANK', seen, 0, 0) end
    end
  end
  if fresh then
    if events == 0 then
      started, last = t, t
    elseif t >= last then
      redis.call('HINCRBYFLOAT', main, 'gap_total', t - last)
      redis.call('HINCRBY', main, 'gaps', 1)
      last = t
    elseif t < started then
      started = t
    end
    events = events + 1
    redis.call('HINCRBY', main, 'c:' .. kind, 1)
    if category ~= '' then
      local w, as_of = 0.0, t
      local old = redis.call('HGET', cats, category)
      if old then
        local sp = string.find(old, ' ')
        w, as_of = tonumber(string.sub(old, 1, sp - 1)), tonumber(string.sub(old, sp + 1))
      end
      if t >= as_of then
        w, as_of = w * math.exp(-decay * (t - as_of)) + 1.0, t
      else
        w = w + math.exp(-decay * (as_of - t))
      end
      redis.call('HSET', cats, category, string.format('%.17g %.17g', w, as_of))
      if redis.call('HLEN', cats) > max_cats then
        local all = redis.call('HGETALL', cats)
        local weakest, weakest_w = nil, nil
        for j = 1, #all, 2 do
          local v = all[j + 1]
          local ww = tonumber(string.sub(v, 1, string.find(v, ' ') - 1))
          if weakest_w == nil or ww < weakest_w then weakest, weakest_w = all[j], ww end
        end
        redis.call('HDEL', cats, weakest)
      end
    end
    if price > 0 and (kind == 'product_view' or kind == 'click' or kind == 'add_to_cart') then
      redis.call('HINCRBY', main, 'priced', 1)
      redis.call('HINCRBYFLOAT', main, 'price_log_total', math.log(1 + price))
      redis.call('HINCRBYFLOAT', main, 'discount_total', discount)
      if discount > 0 then redis.call('HINCRBY', main, 'discounted', 1) end
    end
    if kind == 'add_to_cart' then
      if last_atc == nil or t > last_atc then last_atc = t end
      if product ~= '' and (redis.call('HEXISTS', cart, product) == 1 or redis.call('HLEN', cart) < max_cart) then
        redis.call('HSET', cart, product, string.format('%.17g', price))
      end
    elseif kind == 'remove_from_cart' then
      redis.call('HDEL', cart, product)
    elseif kind == 'purchase' then
      redis.call('HINCRBYFLOAT', main, 'purchase_value', price)
      redis.call('DEL', cart)
    end
    applied[#applied + 1] = (i - 7) / 7
  end
end
redis.call('HSET', main, 'events', events, 'started_at', string.format('%.17g', started),
  'last_event_at', string.format('%.17g', last), 'seen_seq', seq, 'last_seen', string.format('%.17g', now))
if last_atc then redis.call('HSET', main, 'last_add_to_cart_at', string.format('%.17g', last_atc)) end
for _, key in ipairs(KEYS) do redis.call('EXPIRE', key, ttl) end
return {applied, redis.call('LRANGE', decs, 0, -1)}
"""

_RECORD_DECISION = """
local main, decs, shown = KEYS[1], KEYS[5], KEYS[6]
local now, ttl, entry, field, open, max_open, max_shown =
  ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
redis.call('HSETNX', main, 'started_at', now)
redis.call('HSETNX', main, 'last_event_at', now)
redis.call('HSETNX', main, 'events', 0)
redis.call('HSET', main, 'last_seen', now)
if open == '1' then
  redis.call('RPUSH', decs, entry)
  redis.call('LTRIM', decs, -max_open, -1)
end
if redis.call('HEXISTS', shown, field) == 1 or redis.call('HLEN', shown) < max_shown then
  redis.call('HINCRBY', shown, field, 1)
end
for _, key in ipairs(KEYS) do redis.call('EXPIRE', key, ttl) end
return 1
"""


def _decision_entry(d: OpenDecision) -> str:
    return f"{d.event_id}\t{d.decision_point}\t{d.decided_at!r}"


def _open_decision(entry: str) -> OpenDecision:
    event_id, point, at = entry.split("\t")
    return OpenDecision(event_id, point, float(at))


class RedisSessionStore:
    """The `SessionStore` on Redis. Sessions expire by key TTL; there is no per-process session cap."""

    def __init__(self, client: aioredis.Redis, prefix: str, ttl_seconds: float) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = max(1, round(ttl_seconds))
        self._fold = LuaScript(client, _FOLD.replace("@FORMAT@", str(SESSION_FORMAT)))
        self._record = LuaScript(client, _RECORD_DECISION)
        self.scripts = (self._fold, self._record)

    def keys(self, session_id: str) -> SessionKeys:
        return SessionKeys(self.prefix, session_id)

    def _queue_fold(self, pipe: Any, session_id: str, events: Sequence[TrackedEvent], now: float) -> None:
        args: list[Any] = [repr(now), self.ttl, repr(_DECAY), MAX_CART_ITEMS, MAX_CATEGORIES, MAX_SEEN_EVENT_IDS]
        for e in events:
            args += [e.kind, repr(e.timestamp), e.product_id, e.category, repr(e.price), repr(e.discount), e.id]
        self._fold.queue(pipe, self.keys(session_id).all(), args)

    @unavailable_on_error
    async def apply(
        self, session_id: str, events: Sequence[TrackedEvent], now: float
    ) -> tuple[list[int], list[OpenDecision]]:
        """Fold one session's events; returns the indexes of those applied (not duplicates) and its open decisions."""
        return (await self.apply_batch({session_id: events}, now))[session_id]

    @unavailable_on_error
    async def apply_batch(
        self, events: Mapping[str, Sequence[TrackedEvent]], now: float
    ) -> dict[str, tuple[list[int], list[OpenDecision]]]:
        """Fold several sessions' events in one pipelined round trip (one script per session)."""

        def build(pipe: Any) -> None:
            for session_id, batch in events.items():
                self._queue_fold(pipe, session_id, batch, now)

        replies = await run_scripts(self.client, build, self.scripts)
        return {
            session_id: ([int(i) for i in applied], [_open_decision(_text(x)) for x in entries])
            for session_id, (applied, entries) in zip(events, replies, strict=True)
        }

    def queue_record_decision(
        self, pipe: Any, session_id: str, decision: OpenDecision, action_id: str, logged: bool
    ) -> None:
        field = f"{decision.decision_point}\t{action_id}"
        args: list[Any] = [repr(decision.decided_at), self.ttl, _decision_entry(decision), field]
        args += ["1" if logged else "0", MAX_OPEN_DECISIONS, MAX_SHOWN]
        self._record.queue(pipe, self.keys(session_id).all(), args)

    @unavailable_on_error
    async def record_decision(self, session_id: str, decision: OpenDecision, action_id: str, logged: bool) -> None:
        await run_scripts(
            self.client,
            lambda pipe: self.queue_record_decision(pipe, session_id, decision, action_id, logged),
            self.scripts,
        )

    @unavailable_on_error
    async def drop_decisions(self, session_id: str, decisions: Sequence[OpenDecision]) -> None:
        """Remove decisions that can earn nothing more from the session's open list."""
        key = self.keys(session_id).decisions
        async with self.client.pipeline(transaction=False) as pipe:
            for d in decisions:
                pipe.lrem(key, 0, _decision_entry(d))
            await pipe.execute()

    def queue_load(self, pipe: Any, session_id: str) -> None:
        """Queue the reads of a session (five replies, for `parse_load`)."""
        keys = self.keys(session_id)
        pipe.hgetall(keys.main)
        pipe.hgetall(keys.cart)
        pipe.hgetall(keys.categories)
        pipe.lrange(keys.decisions, 0, -1)
        pipe.hgetall(keys.shown)

    @staticmethod
    def parse_load(session_id: str, replies: Sequence[Any]) -> SessionState | None:
        main, cart, categories, decisions, shown = replies
        return _state(session_id, main, cart, categories, decisions, shown) if main else None

    @unavailable_on_error
    async def load(self, session_id: str, now: float = 0.0) -> SessionState | None:
        """The session's state (`now` is unused: Redis expires idle sessions by key TTL)."""
        async with self.client.pipeline(transaction=False) as pipe:
            self.queue_load(pipe, session_id)
            replies = await pipe.execute()
        return self.parse_load(session_id, replies)

    @unavailable_on_error
    async def delete(self, session_id: str) -> SessionState | None:
        state = await self.load(session_id, 0.0)
        if state is not None:
            await self.client.delete(*self.keys(session_id).all())
        return state


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _state(
    session_id: str,
    main: dict[Any, Any],
    cart: dict[Any, Any],
    categories: dict[Any, Any],
    decisions: list[Any],
    shown: dict[Any, Any],
) -> SessionState:
    m = {_text(k): _text(v) for k, v in main.items()}
    state = SessionState(
        session_id,
        started_at=float(m["started_at"]),
        last_event_at=float(m["last_event_at"]),
        last_seen=float(m.get("last_seen", m["started_at"])),
    )
    state.events = int(m.get("events", 0))
    state.counts = {k[2:]: int(v) for k, v in m.items() if k.startswith("c:")}
    state.gap_total = float(m.get("gap_total", 0.0))
    state.gaps = int(m.get("gaps", 0))
    state.last_add_to_cart_at = float(m["last_add_to_cart_at"]) if "last_add_to_cart_at" in m else None
    state.cart = {_text(k): float(v) for k, v in cart.items()}
    for k, v in categories.items():
        weight, as_of = _text(v).split(" ")
        state.categories[_text(k)] = (float(weight), float(as_of))
    state.priced = int(m.get("priced", 0))
    state.price_log_total = float(m.get("price_log_total", 0.0))
    state.discount_total = float(m.get("discount_total", 0.0))
    # A session folded before format 2 never counted its discounted products: unknown until it expires.
    state.discounted = int(m.get("discounted", 0)) if int(m.get("format", 1)) >= _DISCOUNTED_SINCE else None
    state.purchase_value = float(m.get("purchase_value", 0.0))
    state.seen_ids = OrderedDict()
    state.decisions = [_open_decision(_text(x)) for x in decisions]
    for k, v in shown.items():
        point, action = _text(k).split("\t", 1)
        state.shown.setdefault(point, {})[action] = int(v)
    return state
