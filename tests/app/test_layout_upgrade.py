"""Upgrading Redis mode from key layout 1 (one learner, per-shard learn streams) to layout 2 (learners sharded by
decision point, streams per decision point) loses nothing and learns nothing twice.

Starts from the state the previous release wrote itself (`tests/fixtures/redis-layout-1/`, made by `make.py`
there with commit 1e30cf0): decisions learned and published, a backlog handed off but not learned, decisions
waiting for their windows, and a deferred decision never activated. Times are moved to the present (as if
the upgrade happened right after that release stopped, with 8 s more of window, so the test can reward
waiting decisions before they close).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from server.state.decision_log import JoinStatus, RedisDecisionLog
from server.state.evidence import unpack
from server.tools.launcher import LearnProcess
from tailor.v1 import decision_service_pb2 as pb

from ..conftest import ServeProcess
from ..deployments import eventually
from ..redis_server import RedisServer

LAYOUT_1 = Path(__file__).resolve().parents[1] / "fixtures" / "redis-layout-1"
MARGIN = 8.0  # seconds of window added, so the test acts before the waiting decisions' windows close


def restore(client: redis.Redis, prefix: str) -> dict[str, list[str]]:
    """Write the fixture's keys under `prefix`, times moved to the present; returns its answers."""
    state = json.loads((LAYOUT_1 / "state.json").read_text())
    shift = time.time() - state["dumped_at"] + MARGIN
    for old_name, entry in state["keys"].items():
        name = prefix + old_name[len("rel") :]
        kind, value = entry["type"], entry["value"]
        if kind == "string":
            client.set(name, base64.b64decode(value))
        elif kind == "hash":
            # field names that are key names (the published offsets, by stream) move to the prefix too
            fields = {prefix + k[3:] if k.startswith("rel:") else k: base64.b64decode(v) for k, v in value.items()}
            for moved in ("window_end", "activated_at"):
                if moved in fields and ":e:" in name:
                    fields[moved] = repr(float(fields[moved]) + shift).encode()
            client.hset(name, mapping=fields)
        elif kind == "zset":
            client.zadd(name, {member: score + shift for member, score in value})
        elif kind == "set":
            client.sadd(name, *value)
        elif kind == "list":
            client.rpush(name, *(base64.b64decode(v) for v in value))
        elif kind == "stream":
            for entry_id, fields in value:
                client.xadd(name, {k: base64.b64decode(v) for k, v in fields.items()}, id=entry_id)
        if entry["pttl"] > 0:
            client.pexpire(name, entry["pttl"] + int(MARGIN * 1000))
    answers: dict[str, list[str]] = json.loads((LAYOUT_1 / "answers.json").read_text())
    return answers


def legacy_hand_off(client: redis.Redis, prefix: str, event_id: str) -> str:
    """What a layout-1 replica's reward join writes: an entry in its shard's one stream (here a copy of one the
    fixture holds, under another event id)."""
    state = json.loads((LAYOUT_1 / "state.json").read_text())
    _, fields = state["keys"]["rel:{d0}:learn"]["value"][-1]
    entry = {k: base64.b64decode(v) for k, v in fields.items()}
    doc = json.loads(entry["doc"])
    doc["decision"]["event_id"] = event_id
    entry.update(event_id=event_id.encode(), doc=json.dumps(doc).encode())
    client.xadd(f"{prefix}:{{d0}}:learn", entry)  # type: ignore[arg-type]
    return event_id


def logged(client: redis.Redis, prefix: str) -> list[dict[str, Any]]:
    entries: Any = client.xrange(f"{prefix}:{{m}}:decisions")
    return [json.loads(unpack(fields[b"z"])) for _, fields in entries]


async def join_now(port: int, prefix: str, event_ids: list[str]) -> list[JoinStatus]:
    """Rewards through this release's decision log, on hashes layout 1 wrote (no `dp` field)."""
    client = aioredis.Redis(port=port)
    log = RedisDecisionLog(client, prefix)
    try:
        return [await log.join(e, 1.0, f"up-{e}", time.time()) for e in event_ids]
    finally:
        await client.aclose()


def test_layout_1_is_upgraded_in_place_and_every_decision_is_learned_once(
    tmp_path: Path, module_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAILOR_DECISION_LOG_PSEUDONYMIZE", "false")  # as the fixture was written
    prefix = f"up{uuid.uuid4().hex[:6]}"
    raw = redis.Redis(port=module_redis.port)
    answers = restore(raw, prefix)
    published, backlog, waiting, deferred = (answers[k] for k in ("published", "backlog", "waiting", "deferred"))
    before = {str(doc["EventId"]) for doc in logged(raw, prefix)}
    assert before == set(published)  # the previous release logged what it learned and published

    # Rewards reach two waiting decisions before any process of this release has touched the state.
    assert asyncio.run(join_now(module_redis.port, prefix, waiting[:2])) == [JoinStatus.ACCEPTED] * 2

    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    for path in (LAYOUT_1 / "catalogs").glob("*.yaml"):
        (catalogs / path.name).write_text(path.read_text())
    learner = LearnProcess(catalogs, module_redis.url, prefix, tmp_path / "learn.log").start()
    replica = ServeProcess(catalogs, tmp_path / "data", "--redis-url", module_redis.url, "--redis-prefix", prefix)
    try:
        replica.wait_serving()
        replica.client.activate(deferred[0])  # a deferred decision of layout 1, activated by this release
        [result] = replica.client.report_rewards([(deferred[0], 1.0, "late-activated")])
        assert result.status == pb.REWARD_STATUS_ACCEPTED
        fresh = replica.client.decide("after", "cart_offer")
        replica.client.report_rewards([(fresh.event_id, 1.0, "fresh")])
        # A replica of the previous release, still running in a rolling upgrade, hands a decision off in layout 1.
        late = legacy_hand_off(raw, prefix, "legacy-late")
        everything = set(published) | set(backlog) | set(waiting) | set(deferred) | {fresh.event_id, late}

        def all_learned() -> bool:
            return {str(doc["EventId"]) for doc in logged(raw, prefix)} == everything

        assert eventually(all_learned, timeout=MARGIN + 20), learner.log_path.read_text()[-3000:]
    finally:
        replica.stop()
        learner.stop()
    lines = logged(raw, prefix)
    assert len(lines) == len({str(doc["EventId"]) for doc in lines}) == 93  # each exactly once
    cost = {str(doc["EventId"]): doc["_label_cost"] for doc in lines}
    assert all(cost[e] == -1.0 for e in [*backlog, *waiting[:2], *deferred])  # with their rewards
    assert all(cost[e] == 0.0 for e in waiting[2:])  # closed with the default reward

    # Layout 2 only is left: no per-shard streams or deadlines, the layout recorded, layout 1's lease blocked.
    keys = {k.decode() for k in raw.scan_iter(f"{prefix}:*")}
    assert not [k for k in keys if k.endswith((":learn", ":due"))]
    assert raw.get(f"{prefix}:{{m}}:layout") == b"2"
    assert raw.get(f"{prefix}:{{m}}:leader") == b"layout-2"
    raw_models: dict[bytes, bytes] = raw.hgetall(f"{prefix}:{{m}}:models")  # type: ignore[assignment]
    models = {k.decode(): json.loads(v) for k, v in raw_models.items()}
    assert {k: (m["fingerprint"], m["seq"] > 1) for k, m in models.items()} == {
        "home_layout": ("dc74cc26", True),
        "cart_offer": ("dc74cc26", True),
    }  # the previous release's models, resumed and learned on
    raw.close()
