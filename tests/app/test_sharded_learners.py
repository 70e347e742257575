"""Learners sharded by decision point: any number of `tailor learn` processes share the decision points by lease.

A learner alone takes every decision point; a second one gets its fair share within the lease time; when one
is killed, the other takes its decision points within the lease time; through all of it, every acknowledged
reward is learned exactly once (the decision log, written with each publish, holds each decision once).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis

from server.state.evidence import unpack
from server.tools.launcher import LearnProcess
from tailor.v1 import decision_service_pb2 as pb

from ..conftest import ServeProcess, write_catalog
from ..redis_server import RedisServer

POINTS = ("p0", "p1", "p2", "p3")
LEASE_SECONDS = 2.0


def eventually(predicate: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until `predicate` held (None: it did not within `timeout`)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def held(learner: LearnProcess) -> int:
    try:
        return int(learner.sample("tailor_learner_decision_points"))
    except OSError:
        return -1


def test_learners_share_the_decision_points_and_take_over_a_killed_ones(
    tmp_path: Path, module_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAILOR_LEASE_SECONDS", str(LEASE_SECONDS))
    monkeypatch.setenv("TAILOR_DECISION_LOG_PSEUDONYMIZE", "false")
    prefix = f"sh{uuid.uuid4().hex[:6]}"
    catalogs = tmp_path / "catalogs"
    catalogs.mkdir()
    for point in POINTS:
        write_catalog(catalogs, point, {"a": {"style": "a"}, "b": {"style": "b"}}, reward_window_seconds=1)
    shared = ("--redis-url", module_redis.url, "--redis-prefix", prefix)
    replica = ServeProcess(catalogs, tmp_path / "data", *shared)
    learners: list[LearnProcess] = []

    def learner() -> LearnProcess:
        one = LearnProcess(catalogs, module_redis.url, prefix, tmp_path / f"learn-{len(learners)}.log").start()
        learners.append(one)
        return one

    accepted: dict[str, float] = {}
    stop = threading.Event()

    def traffic() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                d = replica.client.decide(f"s{i % 20}", POINTS[i % len(POINTS)])
                [result] = replica.client.report_rewards([(d.event_id, float(i % 2), "r")])
            except grpc.RpcError:
                continue
            if result.status == pb.REWARD_STATUS_ACCEPTED:
                accepted[d.event_id] = float(i % 2)

    driver = threading.Thread(target=traffic)
    try:
        replica.wait_serving()
        first = learner()
        assert eventually(lambda: held(first) == 4, 10) is not None
        driver.start()
        time.sleep(1.0)
        second = learner()
        moved = eventually(lambda: held(first) == 2 and held(second) == 2, 3 * LEASE_SECONDS)
        assert moved is not None, (held(first), held(second))  # within the lease time (a turn is a third of it)
        time.sleep(1.5)
        first.kill()  # kill -9: its leases lapse
        taken = eventually(lambda: held(second) == 4, 3 * LEASE_SECONDS)

        assert taken is not None, held(second)
        time.sleep(1.5)
    finally:
        stop.set()
        if driver.is_alive():
            driver.join(30)
    raw = redis.Redis(port=module_redis.port)

    def lines() -> list[dict[str, Any]]:
        entries: Any = raw.xrange(f"{prefix}:{{m}}:decisions")
        return [json.loads(unpack(fields[b"z"])) for _, fields in entries]

    try:
        assert len(accepted) > 100
        assert eventually(lambda: {str(d["EventId"]) for d in lines()} >= set(accepted), 20) is not None
        logged = lines()
        event_ids = [str(d["EventId"]) for d in logged]
        assert len(event_ids) == len(set(event_ids))  # exactly once, across the lease moves and the kill -9
        cost = {str(d["EventId"]): d["_label_cost"] for d in logged}
        assert all(cost[e] == -reward for e, reward in accepted.items())
        assert {str(d["_tailor"]["decision_point"]) for d in logged} == set(POINTS)
    finally:
        raw.close()
        replica.stop()
        for one in learners:
            one.stop()
