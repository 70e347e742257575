"""Published models in Redis: the learner's snapshots, versioned, read by every serving replica.

All model keys share one hash tag (`{m}`), so snapshots, together with the learn-stream offsets they
cover, are published in one script, and only by the learner that holds the lease of every decision point it
publishes for (`<prefix>:{m}:lease:<decision point>`, checked by the script; see
`server.learning._lease`). A learner that takes a decision point loads its published model and replays its
streams from the published offsets, so each decision's effect is in the model exactly once.

`<prefix>:{m}:kept` keeps the newest published model of every set of flags a decision point was learned
with (its blob is never trimmed), so a catalog rolled back across a learning-flags change resumes that
model. `<prefix>:{m}:commands:<decision point>` is the stream of model commands (import, reset) that replicas
queue for the learner of that decision point; the learner applies each once, publishes the result with the
model (the command's offset is among the published offsets, so its successor neither skips nor repeats one),
and writes the command's result (`<prefix>:{m}:result:<token>`, kept an hour) and audit event in the same
script. (Layout 1 had one `<prefix>:{m}:commands` for every decision point; a command queued there by a
replica of that release during an upgrade is not applied, and its caller is told so after its timeout.)
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from policies import BuiltWith, LearningSpec, VWPolicy

from .._redis import control_tag

_PUBLISH = """
local models, offsets, kept_models, audit, decisions = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local token, keep, audit_kept = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for k = 6, #KEYS do  -- the lease of every decision point published for
  if redis.call('GET', KEYS[k]) ~= token then return 0 end
end
local snapshots, results, events, lines = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local minid, maxlen = ARGV[8], ARGV[9]
local i = 10
for _ = 1, snapshots do
  local point, meta, blob_key, blob = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local old_key, kept = ARGV[i + 4], ARGV[i + 5]
  redis.call('SET', blob_key, blob)
  redis.call('HSET', models, point, meta)
  redis.call('HSET', kept_models, kept, meta)
  if old_key ~= '' then redis.call('DEL', old_key) end
  i = i + 6
end
for _ = 1, results do
  redis.call('SET', ARGV[i], ARGV[i + 1], 'EX', 3600)
  i = i + 2
end
for _ = 1, events do
  redis.call('LPUSH', audit, ARGV[i])
  i = i + 1
end
if events > 0 then redis.call('LTRIM', audit, 0, audit_kept - 1) end
for _ = 1, lines do
  redis.call('XADD', decisions, 'MINID', '~', minid, '*', 'z', ARGV[i])
  i = i + 1
end
if lines > 0 then redis.call('XTRIM', decisions, 'MAXLEN', '~', maxlen) end
while i <= #ARGV do
  redis.call('HSET', offsets, ARGV[i], ARGV[i + 1])
  i = i + 2
end
return 1
"""


@dataclass(frozen=True, slots=True)
class DecisionLines:
    """Decision-log lines to add with a publish: the stream, the lines, and its bounds (age, entries)."""

    key: str
    lines: list[bytes]  # each a zlib-compressed DSJSON line (`server.state.evidence.pack`)
    oldest_kept: float  # epoch seconds: entries older than this are trimmed
    max_entries: int


#: Version of the entries of the model-command streams (`<prefix>:{m}:commands:<decision point>`).
COMMAND_FORMAT = 1
#: A caller waits this much past a command's deadline for the learner's publish.
COMMAND_GRACE_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class ModelCommand:
    """A model change for the decision point's learner to apply: `import_model` (with the model file) or
    `reset_model`."""

    stream: str  # the decision point's command stream
    entry_id: str
    token: str  # names the result
    decision_point: str
    action: str
    actor: str
    deadline: float  # Redis server time after which the command must not be applied
    data: bytes


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
        tag = control_tag(prefix)
        self.models_key = tag + ":models"
        self.offsets_key = tag + ":offsets"
        self.leader_key = tag + ":leader"  # layout 1's one lease
        self.learners_key = tag + ":learners"  # heartbeats: token -> expiry (ms)
        self.layout_key = tag + ":layout"  # the key layout of the decision log (`decision_log.LAYOUT`)
        self.kept_key = tag + ":kept"  # "<decision point>|<fingerprint>" -> meta: the newest model of each flags
        self._commands_prefix = tag + ":commands:"
        self._lease_prefix = tag + ":lease:"
        self._result_prefix = tag + ":result:"
        self._blob_prefix = tag + ":blob:"
        self._publish = client.register_script(_PUBLISH)

    def lease_key(self, decision_point: str) -> str:
        return self._lease_prefix + decision_point

    def commands_key(self, decision_point: str) -> str:
        return self._commands_prefix + decision_point

    def blob_key(self, decision_point: str, fingerprint: str, seq: int) -> str:
        return f"{self._blob_prefix}{decision_point}:{fingerprint}:{seq}"

    async def published(self) -> dict[str, PublishedModel]:
        """The published model of every decision point (one round trip; replicas poll it)."""
        raw: dict[Any, Any] = await self.client.hgetall(self.models_key)
        return {_text(key): _published(_text(key), value) for key, value in raw.items()}

    async def blob(self, model: PublishedModel) -> bytes | None:
        data: Any = await self.client.get(self.blob_key(model.decision_point, model.fingerprint, model.seq))
        return None if data is None else bytes(data)

    async def offsets(self) -> dict[str, str]:
        raw: dict[Any, Any] = await self.client.hgetall(self.offsets_key)
        return {_text(k): _text(v) for k, v in raw.items()}

    async def kept(self) -> dict[str, list[PublishedModel]]:
        """By decision point, the newest model of each set of flags it was ever learned with, newest first."""
        raw: dict[Any, Any] = await self.client.hgetall(self.kept_key)
        out: dict[str, list[PublishedModel]] = {}
        for key, value in raw.items():
            point = _text(key).split("|", 1)[0]
            out.setdefault(point, []).append(_published(point, value))
        for models in out.values():
            models.sort(key=lambda m: m.saved_at, reverse=True)
        return out

    async def publish(
        self,
        token: str,
        leases: list[str],
        snapshots: list[Snapshot],
        offsets: dict[str, str],
        results: dict[str, dict[str, Any]] | None = None,
        audit: tuple[str, int, list[dict[str, Any]]] | None = None,
        decisions: DecisionLines | None = None,
    ) -> bool:
        """Publish snapshots and the stream offsets they cover, atomically, if `token` still holds every one of
        `leases` (the lease keys of the decision points they are of); with them the results of model commands
        (by token), audit events (the catalog store's list, its bound) and the decision log's lines of the
        decisions those offsets cover."""
        results = results or {}
        audit_key, audit_kept, events = audit if audit is not None else (self.models_key + ":no-audit", 1, [])
        lines = decisions if decisions is not None else DecisionLines(self.models_key + ":no-decisions", [], 0.0, 1)
        args: list[Any] = [token, self.KEEP, audit_kept, len(snapshots), len(results), len(events), len(lines.lines)]
        args += [f"{int(lines.oldest_kept * 1000)}-0", lines.max_entries]
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
            blob_key = self.blob_key(s.decision_point, s.fingerprint, s.seq)
            args += [s.decision_point, meta, blob_key, s.blob, old, f"{s.decision_point}|{s.fingerprint}"]
        for result_token, result in results.items():
            args += [self._result_prefix + result_token, json.dumps(result)]
        args += [json.dumps(event, separators=(",", ":")) for event in events]
        args += lines.lines
        for stream, entry_id in offsets.items():
            args += [stream, entry_id]
        keys = [self.models_key, self.offsets_key, self.kept_key, audit_key, lines.key, *leases]
        return bool(await self._publish(keys=keys, args=args))

    # --- model commands (AdminService in Redis mode) -------------------------------------------------

    async def run_command(
        self, decision_point: str, action: str, actor: str, data: bytes, timeout_seconds: float
    ) -> dict[str, Any] | None:
        """Queue a command for the leading learner and wait for its result (None: not applied, and it never
        will be: the learner skips a command past its deadline)."""
        token = uuid.uuid4().hex
        deadline = await self._server_time() + timeout_seconds
        fields = {
            "format": COMMAND_FORMAT,
            "token": token,
            "decision_point": decision_point,
            "action": action,
            "actor": actor,
            "deadline": repr(deadline),
            "data": data,
        }
        await self.client.xadd(self.commands_key(decision_point), fields)  # type: ignore[arg-type]
        while True:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.get(self._result_prefix + token)
                pipe.execute_command("TIME")  # `pipe.time()` is blocked on a cluster pipeline
                raw, (seconds, micros) = await pipe.execute()
            if raw is not None:
                result: dict[str, Any] = json.loads(raw)
                return result
            if seconds + micros / 1e6 > deadline + COMMAND_GRACE_SECONDS:
                return None
            await asyncio.sleep(0.05)

    async def commands(self, after: dict[str, str], decision_points: Sequence[str]) -> tuple[list[ModelCommand], float]:
        """Commands for the decision points queued after the stream ids in `after` (by stream; none: all kept),
        and Redis's time now."""
        async with self.client.pipeline(transaction=False) as pipe:
            for point in decision_points:
                start = after.get(self.commands_key(point), "0")
                pipe.xrange(self.commands_key(point), min=f"({start}" if start != "0" else "-", count=100)
            pipe.execute_command("TIME")  # `pipe.time()` is blocked on a cluster pipeline
            *streams, (seconds, micros) = await pipe.execute()
        out = []
        for point, entries in zip(decision_points, streams, strict=True):
            out += [_command(self.commands_key(point), entry_id, raw) for entry_id, raw in entries]
        return out, seconds + micros / 1e6

    async def _server_time(self) -> float:
        seconds, micros = await self.client.time()
        return float(seconds) + micros / 1e6


def _command(stream: str, entry_id: Any, raw: dict[Any, Any]) -> ModelCommand:
    f = {_text(k): v for k, v in raw.items()}
    return ModelCommand(
        stream,
        _text(entry_id),
        _text(f["token"]),
        _text(f["decision_point"]),
        _text(f["action"]),
        _text(f["actor"]),
        float(_text(f["deadline"])),
        bytes(f.get("data", b"")),
    )


def _published(point: str, value: Any) -> PublishedModel:
    meta = json.loads(value)
    return PublishedModel(
        point, meta["fingerprint"], meta["seq"], meta["saved_at"], meta.get("vw_args"), meta.get("actions")
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
