"""The decision log on Redis: decisions, reward joins and the hand-off to the learner, atomic per decision.

Key layout 2 (`LAYOUT`). Decisions are spread over `shards` hash tags (`{d0}` ... `{dN}`), so a Redis
Cluster can spread them while each shard's keys stay in one slot:

- `<prefix>:{dN}:e:<event id>`: a decision's hash (its `doc`, reward state, and `dp`, its decision point);
- `<prefix>:{dN}:r:<event id>`: the reward ids seen for it;
- `<prefix>:{dN}:due:<decision point>`: window deadlines (a sorted set) of that decision point's decisions;
- `<prefix>:{dN}:learn:<decision point>`: the learn stream of that decision point's decisions.

Window deadlines and learn streams are per decision point, so each decision point is learned by one learner
(`tailor learn` processes share the decision points by lease) from streams and offsets of its own. Joining a
reward, activating a decision and closing windows are Lua scripts (a deferred decision never activated is
handed over too, when its time to be activated runs out, so the learner logs it), so whichever replica
receives a reward, a decision is handed to the learner exactly once; the hand-off is an entry in the stream
(at-least-once delivery to the learner, made idempotent by the stream offsets published with each model).
Every decision key expires with its retention (window + grace).

Layout 1 (releases before Redis Cluster support) had one due set and one learn stream per shard,
`<prefix>:{dN}:due` and `<prefix>:{dN}:learn`, mixing decision points, and decision hashes without `dp`.
`migrate_layout_1` moves what waits in them into layout 2 (the stream entries after the published
offset, then the deadlines), a batch per script, deleting what it moved so a crash midway repeats nothing;
the scripts read a layout-1 hash's decision point from its `doc`.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from .._redis import LuaScript, run_scripts, unavailable_on_error
from ._base import DecisionRecord, JoinStatus, Source

#: The key layout this module writes (see the module's docstring); kept in `<prefix>:{m}:layout`.
LAYOUT = 2

# Shared by the scripts: mark a decision learned and append it to its decision point's learn stream.
_HAND_OFF = """
local function point_of(rec)
  local point = redis.call('HGET', rec, 'dp')
  if point then return point end
  return cjson.decode(redis.call('HGET', rec, 'doc'))['decision_point']  -- a hash of layout 1
end
local function hand_off(rec, due, stream, event_id, reward, source)
  redis.call('HSET', rec, 'learned', '1')
  redis.call('ZREM', due, event_id)
  redis.call('XADD', stream, '*', 'event_id', event_id, 'reward', reward, 'source', source,
    'doc', redis.call('HGET', rec, 'doc'))
end
local function rewards_of(text)
  local out = {}
  for v in string.gmatch(text or '', '[^ ]+') do out[#out + 1] = tonumber(v) end
  return out
end
"""

_ADD = """
local rec, due = KEYS[1], KEYS[2]
redis.call('HSET', rec, unpack(ARGV, 4))
redis.call('PEXPIREAT', rec, ARGV[1])
if ARGV[2] ~= '' then redis.call('ZADD', due, ARGV[2], ARGV[3]) end
return 1
"""

_JOIN = (
    _HAND_OFF
    + """
local rec, rids = KEYS[1], KEYS[2]
local event_id, value, reward_id, at, tag = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), ARGV[5]
if redis.call('EXISTS', rec) == 0 then return 'unknown_event' end
local point = point_of(rec)
local due, stream = tag .. ':due:' .. point, tag .. ':learn:' .. point
local f = redis.call('HMGET', rec, 'low', 'high', 'learned', 'window_end', 'aggregation', 'rewards')
if not f[4] and f[3] == '1' then return 'unknown_event' end  -- handed over as never activated: forgotten
if value < tonumber(f[1]) or value > tonumber(f[2]) then return 'invalid' end
if reward_id ~= '' and redis.call('SISMEMBER', rids, reward_id) == 1 then return 'duplicate' end
local window_end = tonumber(f[4])
if f[3] == '1' or (window_end and at > window_end) then return 'late' end
if f[5] == 'first' and f[6] and f[6] ~= '' then return 'late' end
if reward_id ~= '' then
  redis.call('SADD', rids, reward_id)
  redis.call('PEXPIRE', rids, redis.call('PTTL', rec))
end
if window_end and f[5] == 'first' then
  hand_off(rec, due, stream, event_id, ARGV[2], 'reward')
else
  redis.call('HSET', rec, 'rewards', ((f[6] or '') .. ' ' .. ARGV[2]))
end
return 'accepted'
"""
)

_ACTIVATE = (
    _HAND_OFF
    + """
local rec, rids = KEYS[1], KEYS[2]
local event_id, now, tag = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if redis.call('EXISTS', rec) == 0 then return 0 end
local point = point_of(rec)
local due, stream = tag .. ':due:' .. point, tag .. ':learn:' .. point
local f = redis.call('HMGET', rec, 'window_end', 'window', 'grace', 'aggregation', 'rewards', 'learned')
if f[1] then return 1 end
if f[6] == '1' then return 0 end  -- handed over as never activated: forgotten
local window_end = now + tonumber(f[2])
redis.call('HSET', rec, 'window_end', string.format('%.17g', window_end), 'activated_at', ARGV[2])
redis.call('PEXPIREAT', rec, math.ceil((window_end + tonumber(f[3])) * 1000))
if redis.call('EXISTS', rids) == 1 then redis.call('PEXPIRE', rids, redis.call('PTTL', rec)) end
local rewards = rewards_of(f[5])
if f[4] == 'first' and #rewards > 0 then
  hand_off(rec, due, stream, event_id, string.format('%.17g', rewards[1]), 'reward')
elseif f[6] ~= '1' then
  redis.call('ZADD', due, window_end, event_id)
end
return 1
"""
)

_CLOSE = (
    _HAND_OFF
    + """
local due, stream = KEYS[1], KEYS[2]
local now, prefix, limit = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, limit)
local learned = 0
for _, event_id in ipairs(ids) do
  local rec = prefix .. event_id
  local f = redis.call('HMGET', rec, 'learned', 'aggregation', 'rewards', 'default', 'window_end')
  if f[1] == '0' and not f[5] then
    -- deferred and never activated: handed over once, so the learner logs it (_skipLearn) and never learns it
    hand_off(rec, due, stream, event_id, f[4], 'unactivated')
    redis.call('PEXPIRE', rec, 1000)
  elseif f[1] == '0' then
    local rewards = rewards_of(f[3])
    local reward, source = tonumber(f[4]), 'default'
    if #rewards > 0 then
      source = 'reward'
      reward = rewards[1]
      for i = 2, #rewards do
        if f[2] == 'sum' then reward = reward + rewards[i] elseif rewards[i] > reward then reward = rewards[i] end
      end
    end
    hand_off(rec, due, stream, event_id, string.format('%.17g', reward), source)
    learned = learned + 1
  else
    redis.call('ZREM', due, event_id)
  end
end
return learned
"""
)

_DISCARD = (
    _HAND_OFF
    + """
local rec, rids = KEYS[1], KEYS[2]
if redis.call('EXISTS', rec) == 1 then
  redis.call('ZREM', ARGV[2] .. ':due:' .. point_of(rec), ARGV[1])
  redis.call('DEL', rec, rids)
end
return 1
"""
)

# Layout 1 -> 2, one batch of one shard: returns 1 while there is more to move.
_MIGRATE = """
local old_stream, old_due = KEYS[1], KEYS[2]
local tag, after, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local function point_of_doc(doc) return cjson.decode(doc)['decision_point'] end
local start = '-'
if after ~= '0' then start = '(' .. after end
local entries = redis.call('XRANGE', old_stream, start, '+', 'COUNT', limit)
for _, entry in ipairs(entries) do
  local fields, doc = entry[2], nil
  for j = 1, #fields, 2 do if fields[j] == 'doc' then doc = fields[j + 1] end end
  redis.call('XADD', tag .. ':learn:' .. point_of_doc(doc), '*', unpack(fields))
  redis.call('XDEL', old_stream, entry[1])
end
if #entries == limit then return 1 end
redis.call('DEL', old_stream)  -- what is left was learned before the upgrade
local due = redis.call('ZRANGE', old_due, 0, limit - 1, 'WITHSCORES')
for j = 1, #due, 2 do
  local doc = redis.call('HGET', tag .. ':e:' .. due[j], 'doc')
  if doc then redis.call('ZADD', tag .. ':due:' .. point_of_doc(doc), due[j + 1], due[j]) end
  redis.call('ZREM', old_due, due[j])
end
if #due == 2 * limit then return 1 end
return 0
"""


@dataclass(slots=True)
class LearnEntry:
    """One decision handed to the learner, as read from a shard's stream."""

    stream: str
    entry_id: str
    record: DecisionRecord
    reward: float
    source: Source
    unactivated: bool = False  # a deferred decision never activated: logged (_skipLearn), never learned


@dataclass(slots=True)
class ShardBacklog:
    """One learn stream's wait for the learner (`RedisDecisionLog.backlog`): a shard's, of one decision point."""

    stream: str
    past_due: int  # windows past their deadline, not closed yet
    stream_length: int  # entries in the learn stream (read ones included, until trimmed)
    oldest: float | None  # epoch seconds since which the oldest waiting decision waits


#: How long a deferred decision's hash outlives its time to be activated, so that closing windows can hand it to
#: the learner as never activated (until then it can still be activated, as in embedded mode until the sweep).
UNACTIVATED_MARGIN_MS = 600_000


class ShardKeys:
    __slots__ = ("legacy_due", "legacy_stream", "prefix", "tag")

    def __init__(self, prefix: str, shard: int) -> None:
        self.tag = f"{prefix}:{{d{shard}}}"
        self.prefix = self.tag + ":e:"  # + event id: a decision's hash
        self.legacy_due = self.tag + ":due"  # layout 1
        self.legacy_stream = self.tag + ":learn"  # layout 1

    def record(self, event_id: str) -> str:
        return self.prefix + event_id

    def reward_ids(self, event_id: str) -> str:
        return self.tag + ":r:" + event_id

    def due(self, decision_point: str) -> str:
        return f"{self.tag}:due:{decision_point}"

    def stream(self, decision_point: str) -> str:
        return f"{self.tag}:learn:{decision_point}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _fmt(x: float) -> str:
    return repr(float(x))


class RedisDecisionLog:
    """The `DecisionLog` on Redis (no capacity limit: memory is bounded by each decision's TTL).

    What waits for learning is per decision point: `close_windows`, `read_learnable` and `backlog` act on
    `decision_points` (a learner sets it to the decision points it holds) unless given others."""

    def __init__(
        self, client: aioredis.Redis, prefix: str, shards: int = 16, decision_points: Sequence[str] = ()
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.shards = [ShardKeys(prefix, i) for i in range(shards)]
        self.decision_points: Sequence[str] = decision_points
        self._add = LuaScript(client, _ADD)
        self._join = LuaScript(client, _JOIN)
        self._activate = LuaScript(client, _ACTIVATE)
        self._close = LuaScript(client, _CLOSE)
        self._migrate = LuaScript(client, _MIGRATE)
        self._discard = LuaScript(client, _DISCARD)
        self.scripts = (self._add, self._join, self._activate, self._close, self._migrate, self._discard)

    def shard(self, event_id: str) -> ShardKeys:
        return self.shards[zlib.crc32(event_id.encode()) % len(self.shards)]

    def streams(self, decision_point: str) -> list[str]:
        """The learn streams of a decision point, one per shard."""
        return [s.stream(decision_point) for s in self.shards]

    def _keys(self, event_id: str) -> list[str]:
        s = self.shard(event_id)
        return [s.record(event_id), s.reward_ids(event_id)]

    def queue_add(self, pipe: Any, record: DecisionRecord) -> None:
        """Queue the decision's atomic write (hash, expiry, window deadline) on a pipeline (`run_scripts`)."""
        s = self.shard(record.event_id)
        fields: dict[str, str] = {
            "doc": json.dumps(record.to_json(), separators=(",", ":")),
            "dp": record.decision_point,
            "learned": "1" if record.learned else "0",
            "low": _fmt(record.reward_range[0]),
            "high": _fmt(record.reward_range[1]),
            "aggregation": record.aggregation,
            "default": _fmt(record.default_reward),
            "window": _fmt(record.window_seconds),
            "grace": _fmt(record.grace_seconds),
            "rewards": " ".join(_fmt(r) for r in record.rewards),
        }
        end = record.window_end
        expires_ms = int(record.expires_at * 1000) + 1
        if end is not None:
            fields["window_end"] = _fmt(end)
            fields["activated_at"] = _fmt(record.activated_at or 0.0)
            due = "" if record.learned else _fmt(end)
        else:  # deferred: due when its time to be activated runs out; kept a little longer for that hand-off
            due = "" if record.learned else _fmt(record.expires_at)
            expires_ms += UNACTIVATED_MARGIN_MS
        args: list[Any] = [expires_ms, due, record.event_id]
        for name, value in fields.items():
            args += [name, value]
        self._add.queue(pipe, [s.record(record.event_id), s.due(record.decision_point)], args)

    def queue_get(self, pipe: Any, event_id: str) -> None:
        """Queue the reads of a decision (two replies, for `parse_get`)."""
        s = self.shard(event_id)
        pipe.hgetall(s.record(event_id))
        pipe.smembers(s.reward_ids(event_id))

    @staticmethod
    def parse_get(fields: dict[Any, Any], reward_ids: Any) -> DecisionRecord | None:
        if not fields:
            return None
        return _record({_text(k): _text(v) for k, v in fields.items()}, reward_ids)

    @unavailable_on_error
    async def add(self, record: DecisionRecord) -> bool:
        await run_scripts(self.client, lambda pipe: self.queue_add(pipe, record), self.scripts)
        return True

    @unavailable_on_error
    async def get(self, event_id: str) -> DecisionRecord | None:
        async with self.client.pipeline(transaction=False) as pipe:
            self.queue_get(pipe, event_id)
            fields, reward_ids = await pipe.execute()
        return self.parse_get(fields, reward_ids)

    @unavailable_on_error
    async def join(self, event_id: str, value: float, reward_id: str, at: float) -> JoinStatus:
        args = [event_id, _fmt(value), reward_id, _fmt(at), self.shard(event_id).tag]
        status = await self._join(keys=self._keys(event_id), args=args)
        return JoinStatus(_text(status))

    @unavailable_on_error
    async def activate(self, event_id: str, now: float) -> bool:
        args = [event_id, _fmt(now), self.shard(event_id).tag]
        return bool(await self._activate(keys=self._keys(event_id), args=args))

    @unavailable_on_error
    async def close_windows(self, now: float, limit: int = 500, decision_points: Sequence[str] | None = None) -> int:
        """Close due windows of the decision points in every shard: one script per shard and decision point, all in
        one pipelined round trip."""
        points = self.decision_points if decision_points is None else decision_points
        if not points:
            return 0

        def build(pipe: Any) -> None:
            for s in self.shards:
                for point in points:
                    self._close.queue(pipe, [s.due(point), s.stream(point)], [_fmt(now), s.prefix, limit])

        replies = await run_scripts(self.client, build, self.scripts)
        return sum(int(n) for n in replies)

    @unavailable_on_error
    async def backlog(
        self, after: dict[str, str], now: float, decision_points: Sequence[str] | None = None
    ) -> list[ShardBacklog]:
        """What waits for the learner in each learn stream of the decision points: windows past due but not
        closed, the stream's length, and the oldest waiting time (a due deadline, or the hand-off time of the
        first entry after `after`). One pipelined round trip of cheap reads (no entry bodies but the first
        unread one)."""
        points = self.decision_points if decision_points is None else decision_points
        pairs = [(s, point) for s in self.shards for point in points]
        if not pairs:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for s, point in pairs:
                due, stream = s.due(point), s.stream(point)
                pipe.zcount(due, "-inf", _fmt(now))
                pipe.zrange(due, 0, 0, withscores=True)
                pipe.xlen(stream)
                start = after.get(stream)
                pipe.xrange(stream, min="(" + start if start and start != "0" else "-", count=1)
            replies: list[Any] = await pipe.execute()
        found: list[ShardBacklog] = []
        for i, (s, point) in enumerate(pairs):
            due_count, first_due, length, first_entry = replies[4 * i : 4 * i + 4]
            oldest = [score for _, score in first_due if score <= now]
            if first_entry:
                oldest.append(int(_text(first_entry[0][0]).split("-")[0]) / 1000.0)  # stream ids start with ms
            found.append(ShardBacklog(s.stream(point), int(due_count), int(length), min(oldest) if oldest else None))
        return found

    @unavailable_on_error
    async def discard(self, event_ids: Sequence[str]) -> None:
        def build(pipe: Any) -> None:
            for event_id in event_ids:
                self._discard.queue(pipe, self._keys(event_id), [event_id, self.shard(event_id).tag])

        if event_ids:
            await run_scripts(self.client, build, self.scripts)

    @unavailable_on_error
    async def read_learnable(
        self, after: dict[str, str], count: int = 500, decision_points: Sequence[str] | None = None
    ) -> list[LearnEntry]:
        """Up to about `count` entries handed to the learner after the given stream ids (`0` for the beginning),
        oldest first within each stream, of the decision points. One XREAD per shard (its streams share its
        slot), pipelined: one round trip, and on a Redis Cluster (where the shards live on several nodes) one
        phase."""
        points = self.decision_points if decision_points is None else decision_points
        if not points:
            return []
        each = max(1, -(-count // (len(self.shards) * len(points))))  # `count` in all: a bounded turn of learning
        async with self.client.pipeline(transaction=False) as pipe:
            for s in self.shards:
                pipe.xread({s.stream(p): after.get(s.stream(p), "0") for p in points}, count=each)
            replies: list[Any] = await pipe.execute()
        entries: list[LearnEntry] = []
        for stream, items in (found for reply in replies if reply for found in reply):
            for entry_id, fields in items:
                f = {_text(k): _text(v) for k, v in fields.items()}
                record = DecisionRecord.from_json(json.loads(f["doc"]))
                unactivated = f["source"] == "unactivated"
                source: Source = "default" if f["source"] == "default" or unactivated else "reward"
                entry = LearnEntry(_text(stream), _text(entry_id), record, float(f["reward"]), source, unactivated)
                entries.append(entry)
        return entries

    @unavailable_on_error
    async def migrate_layout_1(self, offsets: dict[str, str], batch: int = 1000) -> None:
        """Move what waits in layout 1's per-shard streams and deadlines (see the module's docstring) into
        layout 2: the stream entries after `offsets` (the published offsets, by layout-1 stream name), then
        the deadlines. Idempotent, and safe beside replicas of the earlier release still writing layout 1:
        run it again and it moves what they wrote since."""
        for s in self.shards:
            keys, args = [s.legacy_stream, s.legacy_due], [s.tag, offsets.get(s.legacy_stream, "0"), batch]
            while int(await self._migrate(keys=keys, args=args)):
                pass


def _record(f: dict[str, str], reward_ids: Any) -> DecisionRecord:
    doc: dict[str, Any] = json.loads(f["doc"])
    record = DecisionRecord.from_json(doc)
    record.learned = f.get("learned") == "1"
    record.rewards = tuple(float(x) for x in f.get("rewards", "").split())
    record.reward_ids = tuple(sorted(_text(x) for x in reward_ids))
    if "activated_at" in f:
        record.activated_at = float(f["activated_at"])
    return record
