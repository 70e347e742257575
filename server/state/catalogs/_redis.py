"""The catalog store in Redis (Redis mode): one store for every replica and the learner.

Keys (format 1, every entry a JSON object carrying `format`), all under the control-plane hash tag `{m}`
that the published models use too, so a model command's publish and its audit event are one script:

- `<prefix>:{m}:cat:v:<decision point>`: a list of every version, oldest first (deletions included);
- `<prefix>:{m}:cat:latest`: a hash, decision point -> its latest version number (deletions included);
- `<prefix>:{m}:cat:current`: a hash, decision point -> its current version (existing ones only);
- `<prefix>:{m}:cat:dir`: a hash, decision point -> content hash of its catalog file as last applied;
- `<prefix>:{m}:cat:audit`: a list of audit events, newest first, the newest `audit_kept` kept;
- `<prefix>:{m}:cat:epoch`: a counter that every new version increments; replicas and the learner poll it
  (one GET) and reload the current catalogs when it moves.

Every change is one Lua script that writes only if the decision point's latest version is still the one
the change was computed from (`CatalogStore._commit`).
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from .._redis import LuaScript, control_tag, unavailable_on_error
from ._store import AuditEvent, CatalogStore, CatalogVersion, DirectoryChange

_COMMIT = """
local latest_key, current_key, versions_key, audit_key, epoch_key, dir_key = unpack(KEYS)
local point, base, version, current, event, kept, applied, sha = unpack(ARGV)
local latest = tonumber(redis.call('HGET', latest_key, point) or '0')
if base ~= '' and latest ~= tonumber(base) then return 0 end
if version ~= '' then
  redis.call('RPUSH', versions_key, version)
  redis.call('HSET', latest_key, point, latest + 1)
  if current ~= '' then redis.call('HSET', current_key, point, current) else redis.call('HDEL', current_key, point) end
  redis.call('INCR', epoch_key)
end
if event ~= '' then
  redis.call('LPUSH', audit_key, event)
  redis.call('LTRIM', audit_key, 0, tonumber(kept) - 1)
end
if applied == 'set' then
  redis.call('HSET', dir_key, point, sha)
elseif applied == 'del' then
  redis.call('HDEL', dir_key, point)
end
return 1
"""


def catalog_keys(prefix: str) -> dict[str, str]:
    """The store's key names (the learner's publish script writes the audit list too)."""
    base = control_tag(prefix) + ":cat:"
    return {name: base + name for name in ("latest", "current", "audit", "epoch", "dir")} | {"versions": base + "v:"}


class RedisCatalogStore(CatalogStore):
    def __init__(self, client: aioredis.Redis, prefix: str, audit_kept: int = 10_000) -> None:
        self.client = client
        self.audit_kept = audit_kept
        self.keys = catalog_keys(prefix)
        self._commit_script = LuaScript(client, _COMMIT)

    @unavailable_on_error
    async def current(self) -> dict[str, CatalogVersion]:
        raw: dict[Any, Any] = await self.client.hgetall(self.keys["current"])
        versions = (CatalogVersion.from_json(json.loads(v)) for v in raw.values())
        return {v.decision_point: v for v in versions}

    @unavailable_on_error
    async def history(self, decision_point: str) -> list[CatalogVersion]:
        raw: list[Any] = await self.client.lrange(self.keys["versions"] + decision_point, 0, -1)
        return [CatalogVersion.from_json(json.loads(v)) for v in raw]

    @unavailable_on_error
    async def audit(self, limit: int = 100, decision_point: str | None = None) -> list[AuditEvent]:
        raw: list[Any] = await self.client.lrange(self.keys["audit"], 0, (limit if decision_point is None else 0) - 1)
        events = [AuditEvent.from_json(json.loads(v)) for v in raw]
        return [e for e in events if decision_point is None or e.decision_point == decision_point][:limit]

    @unavailable_on_error
    async def directory(self) -> dict[str, str]:
        raw: dict[Any, Any] = await self.client.hgetall(self.keys["dir"])
        return {_text(k): _text(v) for k, v in raw.items()}

    @unavailable_on_error
    async def epoch(self) -> int:
        return int(await self.client.get(self.keys["epoch"]) or 0)

    @unavailable_on_error
    async def _latest(self, decision_point: str) -> CatalogVersion | None:
        raw = await self.client.lindex(self.keys["versions"] + decision_point, -1)
        return None if raw is None else CatalogVersion.from_json(json.loads(raw))

    @unavailable_on_error
    async def _commit(
        self,
        decision_point: str,
        base: int | None,
        version: CatalogVersion | None,
        event: AuditEvent | None,
        applied: DirectoryChange | None = None,
    ) -> bool:
        k = self.keys
        keys = [k["latest"], k["current"], k["versions"] + decision_point, k["audit"], k["epoch"], k["dir"]]
        entry = _json(version.to_json()) if version is not None else ""
        args = [
            decision_point,
            "" if base is None else base,
            entry,
            entry if version is not None and version.document is not None else "",
            _json(event.to_json()) if event is not None else "",
            self.audit_kept,
            "" if applied is None else "set" if applied[1] is not None else "del",
            applied[1] or "" if applied is not None else "",
        ]
        return bool(await self._commit_script(keys, args))


def _json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
