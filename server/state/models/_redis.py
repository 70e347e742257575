"""Published models in Redis: the learner's snapshots, versioned, read by every serving replica.

All model keys share one hash tag (`{m}`), so a snapshot of every decision point, together with the
learn-stream offsets it covers, is published in one MULTI, and only by the current leader (the script
checks the leadership token). A new learner leader loads the published models and replays the streams
from the published offsets, so each decision's effect is in the model exactly once.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from policies import BuiltWith, LearningSpec, VWPolicy

_PUBLISH = """
local leader_key, models, offsets = KEYS[1], KEYS[2], KEYS[3]
local token, keep = ARGV[1], tonumber(ARGV[2])
if redis.call('GET', leader_key) ~= token then return 0 end
local n = tonumber(ARGV[3])
local i = 4
for _ = 1, n do
  local point, meta, blob_key, blob, old_key = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  redis.call('SET', blob_key, blob)
  redis.call('HSET', models, point, meta)
  if old_key ~= '' then redis.call('DEL', old_key) end
  i = i + 5
end
while i <= #ARGV do
  redis.call('HSET', offsets, ARGV[i], ARGV[i + 1])
  i = i + 2
end
return 1
"""


#: Version of the JSON kept per decision point in the models hash. 1 added `vw_args` and `actions` (the
#: learned-actions document); documents without `format` come from the first release and carry only
#: fingerprint, seq and saved_at.
META_FORMAT = 1


@dataclass(frozen=True, slots=True)
class PublishedModel:
    decision_point: str
    fingerprint: str
    seq: int
    saved_at: float
    vw_args: str | None = None  # None: published before the command line was recorded
    actions: dict[str, Any] | None = None  # the learned-actions document (None: published before it existed)

    @property
    def version(self) -> str:
        return f"{self.fingerprint}.{self.seq}"

    @property
    def built_with(self) -> BuiltWith:
        return BuiltWith(self.fingerprint, self.vw_args)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A model to publish: its identity and VW's serialized bytes."""

    decision_point: str
    fingerprint: str
    seq: int
    blob: bytes
    vw_args: str
    actions: dict[str, Any]


def policy_bytes(policy: VWPolicy) -> bytes:
    """VW's model file as bytes (VW only writes models to files)."""
    with tempfile.TemporaryDirectory(prefix="tailor-model-") as tmp:
        path = Path(tmp) / "model.vw"
        policy.save(path)
        return path.read_bytes()


def policy_from_bytes(spec: LearningSpec, blob: bytes) -> VWPolicy:
    with tempfile.TemporaryDirectory(prefix="tailor-model-") as tmp:
        path = Path(tmp) / "model.vw"
        path.write_bytes(blob)
        return VWPolicy(spec, model_file=path)


class RedisModelStore:
    KEEP = 2  # snapshots kept per model: the current one and the one before it

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        tag = f"{prefix}:{{m}}"
        self.models_key = tag + ":models"
        self.offsets_key = tag + ":offsets"
        self.leader_key = tag + ":leader"
        self._blob_prefix = tag + ":blob:"
        self._publish = client.register_script(_PUBLISH)

    def blob_key(self, decision_point: str, fingerprint: str, seq: int) -> str:
        return f"{self._blob_prefix}{decision_point}:{fingerprint}:{seq}"

    async def published(self) -> dict[str, PublishedModel]:
        """The published model of every decision point (one round trip; replicas poll it)."""
        raw: dict[Any, Any] = await self.client.hgetall(self.models_key)
        out: dict[str, PublishedModel] = {}
        for key, value in raw.items():
            point = key.decode() if isinstance(key, bytes) else key
            meta = json.loads(value)
            out[point] = PublishedModel(
                point, meta["fingerprint"], meta["seq"], meta["saved_at"], meta.get("vw_args"), meta.get("actions")
            )
        return out

    async def blob(self, model: PublishedModel) -> bytes | None:
        data: Any = await self.client.get(self.blob_key(model.decision_point, model.fingerprint, model.seq))
        return None if data is None else bytes(data)

    async def offsets(self) -> dict[str, str]:
        raw: dict[Any, Any] = await self.client.hgetall(self.offsets_key)
        return {_text(k): _text(v) for k, v in raw.items()}

    async def publish(self, token: str, snapshots: list[Snapshot], offsets: dict[str, str]) -> bool:
        """Publish snapshots and the stream offsets they cover, atomically, if `token` still leads."""
        args: list[Any] = [token, self.KEEP, len(snapshots)]
        now = time.time()
        for s in snapshots:
            meta = json.dumps(
                {
                    "format": META_FORMAT,
                    "fingerprint": s.fingerprint,
                    "seq": s.seq,
                    "saved_at": now,
                    "vw_args": s.vw_args,
                    "actions": s.actions,
                }
            )
            old = self.blob_key(s.decision_point, s.fingerprint, s.seq - self.KEEP) if s.seq > self.KEEP else ""
            args += [s.decision_point, meta, self.blob_key(s.decision_point, s.fingerprint, s.seq), s.blob, old]
        for stream, entry_id in offsets.items():
            args += [stream, entry_id]
        keys = [self.leader_key, self.models_key, self.offsets_key]
        return bool(await self._publish(keys=keys, args=args))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
