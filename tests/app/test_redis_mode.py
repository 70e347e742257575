"""Redis mode end to end: two `tailor serve` replicas and `tailor learn` sharing a private redis-server.

Decisions made on one replica are rewarded through the other and learned once by the one learner; new
models reach both replicas without a restart; a killed learner loses nothing and learns nothing twice;
a standby learner takes over; and when Redis goes away the replicas keep deciding and recover by
themselves when it returns.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import redis
from google.protobuf import json_format

from server.core import LearnConfig
from server.learning import SharedLearner
from server.state.evidence import unpack
from server.tools.launcher import metric_sum
from tailor.v1 import decision_service_pb2 as pb

from ..conftest import LAYOUTS, ServeProcess, write_catalog
from ..deployments import RedisDeployment, eventually
from ..redis_server import RedisServer

E = pb.EventType


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


class Cluster(RedisDeployment):
    def __init__(self, tmp: Path, redis_server: RedisServer) -> None:
        super().__init__(tmp, redis_server.url)
        self.redis = redis_server

    def stream_counts(self) -> tuple[int, dict[str, str], dict[str, str]]:
        """(entries ever added to the learn streams, their last ids, the offsets the published models cover)."""
        client = self.redis.client()
        added, last = 0, {}
        for key in client.scan_iter(f"{self.prefix}:*:learn:*"):
            info = client.xinfo_stream(key)
            added += info["entries-added"]
            last[key] = info["last-generated-id"]
        offsets = {str(k): str(v) for k, v in client.hgetall(f"{self.prefix}:{{m}}:offsets").items()}
        client.close()
        return added, last, offsets


@pytest.fixture
def cluster(tmp_path: Path, redis_server: RedisServer) -> Iterator[Cluster]:
    c = Cluster(tmp_path, redis_server)
    yield c
    c.stop()


def test_decided_on_one_replica_rewarded_through_the_other_learned_once(cluster: Cluster) -> None:
    a, b = cluster.replica(), cluster.replica()
    learner = cluster.learner()
    decisions = [a.client.decide(f"s{i}", "home_layout", context={"seg": f"g{i % 3}"}) for i in range(30)]
    start_version = decisions[0].model_version
    statuses = [b.client.report_rewards([(d.event_id, 1.0, "r")])[0].status for d in decisions[:20]]
    assert statuses == [pb.REWARD_STATUS_ACCEPTED] * 20
    assert [r.status for r in a.client.report_rewards([(d.event_id, 1.0, "r") for d in decisions[:20]])] == [
        pb.REWARD_STATUS_DUPLICATE
    ] * 20
    # 20 learned at their reward, 10 with the default reward when their 2 s window closes
    assert eventually(lambda: learner.sample("tailor_learned_examples_total") == 30)
    assert learner.sample("tailor_learned_examples_total", source="default") == 10

    def same_new_version() -> bool:
        versions = {r.client.decide("probe", "home_layout").model_version for r in (a, b)}
        return len(versions) == 1 and start_version not in versions

    assert eventually(same_new_version, timeout=5)
    # two Redis round trips per decision: one pipelined read before deciding, one pipelined write after
    served = metric_sum(a.metrics(), "tailor_decisions_total")
    assert served >= 30
    assert metric_sum(a.metrics(), "tailor_redis_round_trips_total", op="decide_read") == served
    assert metric_sum(a.metrics(), "tailor_redis_round_trips_total", op="decide_write") == served
    added, _, _ = cluster.stream_counts()
    assert added == 30  # each decision handed to the learner exactly once


def command_calls(client: redis.Redis, command: str) -> int:
    stats = client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def test_a_decision_is_two_round_trips_and_survives_a_flushed_script_cache(cluster: Cluster) -> None:
    a = cluster.replica()
    client = cluster.redis.client()
    a.client.track_events([pb.SessionEvent(session_id="s1", type=E.EVENT_TYPE_CLICK, category="shoes")])
    a.client.decide("s1", "home_layout")  # scripts loaded
    exists, evalsha = command_calls(client, "script|exists"), command_calls(client, "evalsha")
    for i in range(10):
        a.client.decide("s1", "home_layout", event_id=f"rt-{i}")
    # the write is the decision's script and the session's, in the same pipeline as each other, and
    # nothing asks Redis whether it has the scripts (which would be a third round trip)
    assert command_calls(client, "script|exists") == exists
    assert command_calls(client, "evalsha") == evalsha + 20
    client.script_flush()  # as after a Redis restart: the scripts are gone
    d = a.client.decide("s1", "home_layout", event_id="after-flush")
    assert a.client.report_rewards([(d.event_id, 1.0, "r")])[0].status == pb.REWARD_STATUS_ACCEPTED  # it was logged
    a.client.track_events([pb.SessionEvent(session_id="s1", type=E.EVENT_TYPE_CLICK, category="bags")])
    client.close()


def test_sessions_are_shared_by_the_replicas(cluster: Cluster) -> None:
    a, b = cluster.replica(), cluster.replica()
    a.client.track_events([pb.SessionEvent(session_id="s1", type=E.EVENT_TYPE_CLICK, category="shoes", id="e1")])
    b.client.track_events([pb.SessionEvent(session_id="s1", type=E.EVENT_TYPE_CLICK, category="shoes", id="e1")])
    features = b.client.get_session("s1")
    assert features["top_category"] == "shoes"
    assert features["events"] == pytest.approx(0.6931, abs=1e-3)  # the duplicate from B was dropped
    assert a.client.delete_session("s1") and not b.client.delete_session("s1")


def test_a_killed_learner_loses_nothing_and_learns_nothing_twice(cluster: Cluster) -> None:
    a = cluster.replica()
    first = cluster.learner()
    for i in range(40):
        d = a.client.decide(f"s{i}", "home_layout")
        a.client.report_rewards([(d.event_id, 1.0 if i % 2 else 0.0, "r")])
        if i == 20:
            assert eventually(lambda: first.sample("tailor_model_snapshots_total") >= 1)
    first.kill()  # kill -9, probably with learned but unpublished examples
    second = cluster.learner()
    assert eventually(lambda: second.sample("tailor_learner_leader") == 1, timeout=15)
    for i in range(40, 50):
        d = a.client.decide(f"s{i}", "home_layout")
        a.client.report_rewards([(d.event_id, 1.0, "r")])

    def all_published() -> bool:
        added, last, offsets = cluster.stream_counts()
        return added == 50 and all(offsets.get(k) == v for k, v in last.items())

    assert eventually(all_published, timeout=15)  # every hand-off is covered by the published models
    # The decision log, written with the publishes: each decision exactly once, none lost, across the kill -9.
    raw = redis.Redis(port=cluster.redis.port)  # the lines are compressed: bytes, not text
    entries: list[tuple[bytes, dict[bytes, bytes]]] = raw.xrange(f"{cluster.prefix}:{{m}}:decisions")  # type: ignore[assignment]
    raw.close()
    event_ids = [json.loads(unpack(fields[b"z"]))["EventId"] for _, fields in entries]
    assert len(event_ids) == 50 and len(set(event_ids)) == 50
    out = cluster.tmp / "export.dsjson"
    command = ["export-logs", "--out", str(out), "--redis-url", cluster.redis.url, "--redis-prefix", cluster.prefix]
    done = subprocess.run([sys.executable, "-m", "server", *command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(doc["EventId"] for doc in exported) == sorted(event_ids)
    assert sum(doc["_label_cost"] == -1.0 for doc in exported) == 30  # 20 odd of the first 40, and the last 10


def test_a_killed_replica_loses_nothing(cluster: Cluster) -> None:
    a, b = cluster.replica(), cluster.replica()
    learner = cluster.learner()
    decisions = [a.client.decide(f"s{i}", "home_layout", defer_activation=i == 0) for i in range(10)]
    a.kill()  # kill -9: whatever it acknowledged is in Redis
    assert b.client.decide("s1", "home_layout", event_id=decisions[1].event_id) == decisions[1]  # replayed
    b.client.activate(decisions[0].event_id)
    results = b.client.report_rewards([(d.event_id, 1.0, "r") for d in decisions])
    assert [r.status for r in results] == [pb.REWARD_STATUS_ACCEPTED] * 10
    assert eventually(lambda: learner.sample("tailor_learned_examples_total") == 10)


def test_a_standby_learner_takes_over(cluster: Cluster) -> None:
    a = cluster.replica()
    one, two = cluster.learner(), cluster.learner()
    assert eventually(lambda: one.sample("tailor_learner_leader") + two.sample("tailor_learner_leader") == 1)
    leader, standby = (one, two) if one.sample("tailor_learner_leader") == 1 else (two, one)
    leader.kill()
    assert eventually(lambda: standby.sample("tailor_learner_leader") == 1, timeout=15)  # lease: 5 s
    d = a.client.decide("s", "home_layout")
    a.client.report_rewards([(d.event_id, 1.0, "r")])
    assert eventually(lambda: standby.sample("tailor_learned_examples_total") >= 1)


def test_replicas_fail_open_while_redis_is_down_and_recover(cluster: Cluster) -> None:
    a = cluster.replica()
    before = a.client.decide("s", "home_layout")
    cluster.redis.kill()
    during = a.client.decide("s", "home_layout", context={"device": "mobile"})  # still answers
    assert during.action_id in LAYOUTS and during.model_version == before.model_version
    assert "tailor_decide_fail_open_total" in a.metrics()
    with pytest.raises(grpc.RpcError) as info:
        a.client.report_rewards([(before.event_id, 1.0, "r")])
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # never silently dropped: the client retries
    with pytest.raises(grpc.RpcError) as info:
        a.client.track_events([pb.SessionEvent(session_id="s", type=E.EVENT_TYPE_CLICK)])
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    cluster.redis.start()  # back (empty: this test server keeps nothing on disk)

    def recovered() -> bool:
        try:
            d = a.client.decide("s2", "home_layout")
            return a.client.report_rewards([(d.event_id, 1.0, "r")])[0].status == pb.REWARD_STATUS_ACCEPTED
        except grpc.RpcError:
            return False

    assert eventually(recovered)
    assert redis.Redis(port=cluster.redis.port).ping()


def test_the_learner_outlives_redis_going_away(cluster: Cluster) -> None:
    """Found by the soak benchmark: a Redis restart used to end `tailor learn` with a traceback."""
    a = cluster.replica()
    learner = cluster.learner()
    assert eventually(lambda: learner.sample("tailor_learner_leader") == 1)
    cluster.redis.kill()
    time.sleep(1.5)  # the learner meets the outage mid-term
    assert learner.proc is not None and learner.proc.poll() is None
    cluster.redis.start()  # back, empty (this test server keeps nothing on disk)

    def learned_again() -> bool:
        try:
            d = a.client.decide("after", "home_layout")
            a.client.report_rewards([(d.event_id, 1.0, "r")])
        except grpc.RpcError:
            return False
        return learner.sample("tailor_learned_examples_total") >= 1

    assert eventually(learned_again, timeout=30)
    assert learner.proc.poll() is None and "Traceback" not in learner.log_path.read_text()


def test_a_hung_redis_is_a_deadline_not_a_hang(cluster: Cluster) -> None:
    """Redis stops answering without closing connections (SIGSTOP): each call gives up after the
    configured Redis timeout (0.5 s by default); Decide fails open, writes are UNAVAILABLE, and service
    resumes by itself when Redis does."""
    a = cluster.replica()
    before = a.client.decide("s", "home_layout")
    assert cluster.redis.proc is not None
    os.kill(cluster.redis.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        during = a.client.decide("s", "home_layout")  # the read and the write each wait one deadline
        assert during.action_id in LAYOUTS and time.monotonic() - started < 3.0
        with pytest.raises(grpc.RpcError) as info:
            a.client.track_events([pb.SessionEvent(session_id="s", type=E.EVENT_TYPE_CLICK)])
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        os.kill(cluster.redis.proc.pid, signal.SIGCONT)

    def recovered() -> bool:
        try:
            return a.client.report_rewards([(before.event_id, 1.0, "r")])[0].status == pb.REWARD_STATUS_ACCEPTED
        except grpc.RpcError:
            return False

    assert eventually(recovered)


def test_a_new_catalog_action_is_floored_on_replicas_by_the_counts_the_learner_publishes(cluster: Cluster) -> None:
    floor = {"probability": 0.3, "until_learned": 2}
    two = {a: {"style": a} for a in ("grid", "carousel")}
    write_catalog(cluster.catalogs, "home_layout", two, reward_window_seconds=2, new_action_floor=floor)
    replica = cluster.replica()
    learner = cluster.learner()
    for i in range(20):
        d = replica.client.decide(f"s{i}", "home_layout")
        replica.client.report_rewards([(d.event_id, 1.0 if d.action_id == "grid" else 0.0, "r")])
    assert eventually(lambda: not replica.client.decide("probe", "home_layout").model_version.endswith(".0"))

    three = {**two, "editorial": {"style": "editorial"}}
    write_catalog(cluster.catalogs, "home_layout", three, reward_window_seconds=2, new_action_floor=floor)
    assert replica.proc is not None and learner.proc is not None
    replica.proc.send_signal(signal.SIGHUP)
    learner.proc.send_signal(signal.SIGHUP)  # the learner counts the new action from now on

    def floored() -> bool:
        return metric_sum(replica.metrics(), "tailor_actions_under_floor", decision_point="home_layout") == 1

    assert eventually(floored)
    ranking = replica.client.decide("after", "home_layout").ranking
    assert next(r.probability for r in ranking if r.action_id == "editorial") >= 0.3 - 1e-9

    # The next published model still carries editorial's count of 0: the replica keeps the floor.
    version = replica.client.decide("v", "home_layout").model_version
    for i in range(5):
        d = replica.client.decide(f"g{i}", "home_layout", candidate_action_ids=["grid"])
        replica.client.report_rewards([(d.event_id, 1.0, "r")])
    assert eventually(lambda: replica.client.decide("v2", "home_layout").model_version != version)
    assert floored()

    for i in range(2):
        d = replica.client.decide(f"e{i}", "home_layout", candidate_action_ids=["editorial"])
        replica.client.report_rewards([(d.event_id, 0.0, "r")])
    # learned twice by the learner, published with the model, read by the replica with it
    assert eventually(lambda: not floored() and metric_sum(replica.metrics(), "tailor_actions_under_floor") == 0)


def test_the_leader_reports_what_waits_for_it_and_catches_up(cluster: Cluster) -> None:
    """Learner lag in Redis mode: rewarded decisions waiting in the learn streams and windows past due are
    counted, with the age of the oldest, until the leader has learned them; then both read zero."""
    replica = cluster.replica()
    for i in range(12):
        d = replica.client.decide(f"s{i}", "home_layout", event_id=f"lag-{i}")
        if i < 4:  # joined at once (aggregation "first"): handed to the learner now
            replica.client.report_rewards([(d.event_id, 1.0, uuid.uuid4().hex)])
    config = LearnConfig(
        catalogs=cluster.catalogs, redis_url=cluster.redis.url, redis_prefix=cluster.prefix, metrics_port=None
    )

    async def scenario() -> None:
        learner = SharedLearner(config)

        def sample(name: str) -> float:
            value = learner.registry.get_sample_value(name)
            assert value is not None, name
            return value

        try:
            await learner.measure_lag(["home_layout"])  # before it leads any
            assert sample("tailor_learner_waiting_decisions") == 4  # the other 8 are inside their 2 s window
            await asyncio.sleep(2.5)
            await learner.measure_lag(["home_layout"])
            assert sample("tailor_learner_waiting_decisions") == 12
            assert 2.0 <= sample("tailor_learner_oldest_waiting_seconds") < 30
            stop = asyncio.Event()
            leading = asyncio.create_task(learner.run(stop))
            deadline = time.monotonic() + 15
            while sample("tailor_learner_leader") != 1 or sample("tailor_learner_waiting_decisions") != 0:
                assert time.monotonic() < deadline, sample("tailor_learner_waiting_decisions")
                await asyncio.sleep(0.2)
            assert sample("tailor_learner_oldest_waiting_seconds") == 0
            learned = sum(
                learner.registry.get_sample_value(
                    "tailor_learned_examples_total", {"decision_point": "home_layout", "source": source}
                )
                or 0
                for source in ("reward", "default")
            )
            assert learned == 12
            stop.set()
            await leading
        finally:
            await learner.close()

    asyncio.run(scenario())


def with_deals(version_doc: dict[str, object]) -> dict[str, object]:
    doc = dict(version_doc)
    doc["actions"] = [*doc["actions"], {"id": "deals", "features": {"style": "deals"}}]  # type: ignore[misc]
    return doc


def test_a_catalog_change_on_one_replica_reaches_the_other_and_the_learner_and_one_of_two_edits_wins(
    cluster: Cluster,
) -> None:
    a, b = cluster.replica(), cluster.replica()
    learner = cluster.learner()
    current = a.client.get_decision_point("home_layout")
    assert current.info.version == 1  # two replicas and a learner applied one ConfigMap: one version
    assert [e.action for e in b.client.list_audit_events()] == ["create"]
    document = json_format.MessageToDict(current.catalog)
    first = a.client.decide("before", "home_layout")
    b.client.report_rewards([(first.event_id, 1.0, "r")])
    assert eventually(lambda: learner.sample("tailor_model_snapshots_total") >= 1)  # a model is published
    put = a.client.put_decision_point(with_deals(document), expected_version=1)
    started = time.monotonic()
    assert put.changed and put.info.version == 2 and put.info.actor == "local"

    def b_serves_deals() -> bool:
        try:
            return b.client.decide("s", "home_layout", candidate_action_ids=["deals"]).action_id == "deals"
        except grpc.RpcError:
            return False

    assert eventually(b_serves_deals, timeout=5)
    assert time.monotonic() - started < 2.0  # the brief: every replica switches within 2 seconds
    # The learner learns the new catalog: a rewarded `deals` decision counts for `deals` in the published model.
    assert eventually(lambda: "learning the catalogs {'home_layout': 2}" in learner.log_path.read_text(), timeout=2)
    d = b.client.decide("learn-deals", "home_layout", candidate_action_ids=["deals"])
    a.client.report_rewards([(d.event_id, 1.0, "r")])

    def published_deals() -> int:
        client = cluster.redis.client()
        meta = client.hget(f"{cluster.prefix}:{{m}}:models", "home_layout")
        client.close()
        return int(json.loads(meta)["actions"]["counts"].get("deals", 0)) if meta else 0

    assert eventually(lambda: published_deals() == 1)
    # Two marketers edit version 2 at once, on different replicas: one wins, the other is ABORTED.
    edits = [(a, "banner"), (b, "popup")]

    def edit(replica: ServeProcess, action: str) -> object:
        doc = with_deals(document)
        doc["actions"] = [*doc["actions"], {"id": action}]  # type: ignore[misc]
        try:
            return replica.client.put_decision_point(doc, expected_version=2).info.version
        except grpc.RpcError as err:
            return err.code()

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda e: edit(*e), edits))
    assert sorted(outcomes, key=str) == sorted([3, grpc.StatusCode.ABORTED], key=str)
    assert [v.version for v in b.client.list_catalog_versions("home_layout")] == [3, 2, 1]
    # Model commands go to the learner: a reset through b is published, and a serves it.
    reset = b.client.reset_model("home_layout")
    assert eventually(lambda: a.client.decide("probe", "home_layout").model_version == reset, timeout=5)
    assert b.client.list_audit_events(page_size=1)[0].action == "reset_model"
    assert learner.sample("tailor_learner_leader") == 1


def test_a_model_command_without_a_learner_is_unavailable_and_never_applied_later(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAILOR_MODEL_COMMAND_TIMEOUT_SECONDS", "0.5")
    replica = cluster.replica()
    # Deferred probes: never learned in this test, so only a reset could change the served version.
    before = replica.client.decide("s", "home_layout", defer_activation=True).model_version
    with pytest.raises(grpc.RpcError) as err:
        replica.client.reset_model("home_layout")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "tailor learn" in str(err.value.details())
    learner = cluster.learner()  # it finds the command past its deadline: skipped
    assert eventually(lambda: learner.sample("tailor_learner_leader") == 1)
    time.sleep(1.0)
    assert replica.client.decide("s2", "home_layout", defer_activation=True).model_version == before
    assert [e.action for e in replica.client.list_audit_events()] == ["create"]
