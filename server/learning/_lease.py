"""How `tailor learn` processes share the decision points: a lease per decision point, held by one learner.

Each learner has a token and heartbeats into `<prefix>:{m}:learners` (a sorted set: token -> expiry). Every
turn (a third of the lease time) it renews the leases it holds, counts the live learners, and moves toward
its fair share, ceil(decision points / live learners): it takes free leases (`SET NX PX`) while it has
fewer, and hands back its surplus (after publishing what it learned of them) while it has more. Its first
turn only says it is there (learners started together then see each other and each takes its share at
once, instead of the first taking everything and handing most of it back). A killed
learner's leases lapse after the lease time and its heartbeat with them, so the others take its decision
points; a new learner makes the others hand some back. Everything runs in Redis's clock (scripts call TIME).

Only the holder of a decision point's lease may publish its model (the publish script checks every lease it
publishes for), so a learner that stalls past its lease and comes back cannot overwrite its successor's work.

`<prefix>:{m}:leader` was the one lease of layout 1 (one learner for everything): learners of this layout
hold it for ever with the value `LEGACY_LEADER_BLOCK`, so a learner of an earlier release started by
mistake waits as a standby instead of learning beside them.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from server.state.models import RedisModelStore

#: The value layout-2 learners keep in layout 1's leader key.
LEGACY_LEADER_BLOCK = "layout-2"

_NOW_MS = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# KEYS: the learners' heartbeats. ARGV: token, ttl (ms), lease key prefix, the decision points held.
# Returns the live learners and the decision points whose lease was lost.
_RENEW = (
    _NOW_MS
    + """
local learners, token, ttl, base = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
redis.call('ZADD', learners, now + ttl, token)
redis.call('ZREMRANGEBYSCORE', learners, '-inf', now)
redis.call('PEXPIRE', learners, ttl * 10)
local lost = {}
for i = 4, #ARGV do
  local key = base .. ARGV[i]
  if redis.call('GET', key) == token then redis.call('PEXPIRE', key, ttl) else lost[#lost + 1] = ARGV[i] end
end
return {redis.call('ZCARD', learners), lost}
"""
)

# KEYS: the learners' heartbeats (routes the script to the control slot). ARGV: token, ttl (ms), lease key prefix,
# how many to take, the candidates in order. Returns the taken ones.
_ACQUIRE = """
local token, ttl, base, want = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local taken = {}
for i = 5, #ARGV do
  if #taken >= want then break end
  if redis.call('SET', base .. ARGV[i], token, 'NX', 'PX', ttl) then taken[#taken + 1] = ARGV[i] end
end
return taken
"""

# KEYS: the learners' heartbeats. ARGV: token, lease key prefix, the decision points to hand back
# (all and the heartbeat too when the learner stops: `leave` = 1 in ARGV[3]).
_RELEASE = """
local learners, token, base, leave = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
for i = 4, #ARGV do
  local key = base .. ARGV[i]
  if redis.call('GET', key) == token then redis.call('DEL', key) end
end
if leave == '1' then redis.call('ZREM', learners, token) end
return 1
"""


@dataclass(frozen=True, slots=True)
class LeaseTurn:
    """What one turn changed: decision points whose lease was lost, taken, or to hand back (after a publish)."""

    lost: frozenset[str]
    taken: frozenset[str]
    surplus: frozenset[str]
    learners: int


class DecisionPointLeases:
    def __init__(self, client: aioredis.Redis, store: RedisModelStore, ttl_seconds: float = 5.0) -> None:
        self.client = client
        self.store = store
        self.ttl_ms = int(ttl_seconds * 1000)
        self.token = uuid.uuid4().hex
        self.held: set[str] = set()
        self.turns = 0
        self._renew = client.register_script(_RENEW)
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)

    def keys(self, decision_points: Iterable[str]) -> list[str]:
        return [self.store.lease_key(point) for point in decision_points]

    async def turn(self, decision_points: Sequence[str]) -> LeaseTurn:
        """Renew, count the learners, and take free leases up to the fair share of `decision_points` (the
        catalogs); returns what changed, with the surplus the caller hands back (`release`) once published."""
        base = self.store.lease_key("")
        live, lost_raw = await self._renew(
            keys=[self.store.learners_key], args=[self.token, self.ttl_ms, base, *sorted(self.held)]
        )
        lost = frozenset(_text(x) for x in lost_raw)
        self.held -= lost
        gone = self.held - set(decision_points)  # catalogs deleted: hand them back
        share = math.ceil(len(decision_points) / max(1, int(live)))
        taken: frozenset[str] = frozenset()
        if self.turns > 0 and len(self.held) - len(gone) < share:
            # Candidates in an order of this learner's own, so learners starting together spread.
            free = sorted((p for p in decision_points if p not in self.held), key=lambda p: _rank(p, self.token))
            want = share - (len(self.held) - len(gone))
            got = (
                await self._acquire(keys=[self.store.learners_key], args=[self.token, self.ttl_ms, base, want, *free])
                if free
                else []
            )
            taken = frozenset(_text(x) for x in got)
            self.held |= taken
        kept = sorted(self.held - gone, key=lambda p: _rank(p, self.token))
        surplus = frozenset(gone) | frozenset(kept[share:])
        self.turns += 1
        return LeaseTurn(lost, taken, surplus, int(live))

    async def release(self, decision_points: Iterable[str], leave: bool = False) -> None:
        """Hand leases back (the caller published them first); with `leave`, all of them and the heartbeat."""
        points = sorted(self.held if leave else set(decision_points))
        base = self.store.lease_key("")
        await self._release(keys=[self.store.learners_key], args=[self.token, base, "1" if leave else "0", *points])
        self.held -= set(points)

    def forget(self) -> None:
        """After Redis failed under the learner: hold nothing until the next turn says otherwise."""
        self.held.clear()


def _rank(decision_point: str, token: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_OID, token + decision_point).hex


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
