"""Rewards and the join: statuses, windows, aggregation, deferred activation, learned exactly once."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from tailor.v1 import decision_service_pb2 as pb

from ..conftest import LAYOUTS, RunningServer, write_catalog

S = pb.RewardStatus


def learned(server: RunningServer, source: str | None = None, point: str = "home_layout") -> float:
    sources = [source] if source else ["reward", "default"]
    return sum(server.metric("tailor_learned_examples_total", {"decision_point": point, "source": s}) for s in sources)


def statuses(server: RunningServer, *rewards: tuple[str, float, str]) -> list[int]:
    return [r.status for r in server.client.report_rewards(rewards)]


@pytest.fixture
def short_window(tmp_path: Path, start_server: Any) -> RunningServer:
    folder = tmp_path / "short"
    folder.mkdir()
    write_catalog(folder, "home_layout", LAYOUTS, reward_window_seconds=0.25, default_reward=0.1)
    write_catalog(folder, "sum_point", LAYOUTS, reward_window_seconds=0.25, aggregation="sum", reward_range=[0, 5])
    write_catalog(folder, "max_point", LAYOUTS, reward_window_seconds=0.25, aggregation="max")
    server: RunningServer = start_server(folder)
    return server


def test_reward_statuses_in_contract_order(server: RunningServer) -> None:
    d = server.client.decide("s1", "home_layout")
    rid = uuid.uuid4().hex
    got = statuses(
        server,
        (d.event_id, 1.0, rid),
        (d.event_id, 1.0, rid),  # same reward id: DUPLICATE (checked before LATE)
        ("never-issued", 1.0, ""),
        (d.event_id, float("inf"), rid + "x"),
        (d.event_id, float("nan"), ""),
        (d.event_id, 1.5, ""),  # outside [0, 1]: INVALID, never clipped
        (d.event_id, -0.1, ""),
        (d.event_id, 0.5, "other"),  # `first` aggregation: already learned, so LATE
        ("", 1.0, ""),
        (d.event_id, 1.0, "r" * 300),  # oversized reward id
    )
    assert got == [
        S.REWARD_STATUS_ACCEPTED,
        S.REWARD_STATUS_DUPLICATE,
        S.REWARD_STATUS_UNKNOWN_EVENT,
        S.REWARD_STATUS_INVALID,
        S.REWARD_STATUS_INVALID,
        S.REWARD_STATUS_INVALID,
        S.REWARD_STATUS_INVALID,
        S.REWARD_STATUS_LATE,
        S.REWARD_STATUS_UNKNOWN_EVENT,
        S.REWARD_STATUS_INVALID,
    ]
    assert server.metric("tailor_rewards_total", {"status": "accepted"}) == 1
    assert server.metric("tailor_rewards_total", {"status": "invalid"}) == 5
    assert server.wait_for(lambda: learned(server) == 1)


def test_one_response_per_request_message(server: RunningServer) -> None:
    d = server.client.decide("s1", "home_layout")
    requests = [pb.ReportRewardsRequest(rewards=[pb.Reward(event_id=d.event_id, value=0.0)] * n) for n in (1, 3, 0, 2)]
    responses = list(server.stub.ReportRewards(iter(requests), timeout=5))
    assert [len(r.results) for r in responses] == [1, 3, 0, 2]
    assert all(r.event_id == d.event_id for resp in responses for r in resp.results)


def test_oversized_reward_batch_is_invalid_argument(server: RunningServer) -> None:
    request = pb.ReportRewardsRequest(rewards=[pb.Reward(event_id="x", value=0.0)] * 1001)
    with pytest.raises(grpc.RpcError) as info:
        list(server.stub.ReportRewards(iter([request]), timeout=5))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_decision_without_reward_is_learned_with_default_at_window_close(short_window: RunningServer) -> None:
    d = short_window.client.decide("s1", "home_layout")
    assert learned(short_window) == 0
    assert short_window.wait_for(lambda: learned(short_window, "default") == 1, timeout=3)
    assert statuses(short_window, (d.event_id, 1.0, "")) == [S.REWARD_STATUS_LATE]
    time.sleep(0.3)
    assert learned(short_window) == 1  # learned exactly once


def test_sum_aggregation_learns_once_when_the_window_closes(short_window: RunningServer) -> None:
    d = short_window.client.decide("s1", "sum_point")
    assert statuses(short_window, (d.event_id, 1.0, "a"), (d.event_id, 2.0, "b"), (d.event_id, 2.0, "b")) == [
        S.REWARD_STATUS_ACCEPTED,
        S.REWARD_STATUS_ACCEPTED,
        S.REWARD_STATUS_DUPLICATE,
    ]
    assert learned(short_window, point="sum_point") == 0  # not before the window closes
    record = short_window.record(d.event_id)
    assert record is not None and record.rewards == (1.0, 2.0)
    assert short_window.wait_for(lambda: learned(short_window, "reward", "sum_point") == 1, timeout=3)
    assert statuses(short_window, (d.event_id, 1.0, "c")) == [S.REWARD_STATUS_LATE]


def test_max_aggregation_accepts_every_reward_in_the_window(short_window: RunningServer) -> None:
    d = short_window.client.decide("s1", "max_point")
    assert (
        statuses(short_window, (d.event_id, 0.2, ""), (d.event_id, 0.9, ""), (d.event_id, 0.2, ""))
        == [S.REWARD_STATUS_ACCEPTED] * 3
    )
    assert short_window.wait_for(lambda: learned(short_window, "reward", "max_point") == 1, timeout=3)
    assert learned(short_window, point="max_point") == 1


def test_deferred_decision_is_learned_only_after_activation(short_window: RunningServer) -> None:
    d = short_window.client.decide("s1", "home_layout", defer_activation=True)
    assert statuses(short_window, (d.event_id, 1.0, "held")) == [S.REWARD_STATUS_ACCEPTED]
    time.sleep(0.4)  # longer than the window: it has not started
    assert learned(short_window) == 0
    short_window.client.activate(d.event_id)
    assert short_window.wait_for(lambda: learned(short_window, "reward") == 1, timeout=2)
    short_window.client.activate(d.event_id)  # idempotent
    time.sleep(0.4)
    assert learned(short_window) == 1


def test_deferred_decision_never_activated_is_never_learned(tmp_path: Path, start_server: Any) -> None:
    folder = tmp_path / "deferred"
    folder.mkdir()
    write_catalog(folder, "home_layout", LAYOUTS, reward_window_seconds=0.2)
    server = start_server(folder, decision_grace_seconds=0.1, data_dir=tmp_path / "d2")
    d = server.client.decide("s1", "home_layout", defer_activation=True)
    labels = {"decision_point": "home_layout"}
    assert server.wait_for(lambda: server.metric("tailor_decisions_expired_unactivated_total", labels) == 1, 3)
    assert learned(server) == 0
    with pytest.raises(grpc.RpcError) as info:
        server.client.activate(d.event_id)  # no longer retained
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert statuses(server, (d.event_id, 1.0, "")) == [S.REWARD_STATUS_UNKNOWN_EVENT]


def test_activate_errors(server: RunningServer) -> None:
    with pytest.raises(grpc.RpcError) as info:
        server.client.activate("never-issued")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        server.client.activate("")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    d = server.client.decide("s1", "home_layout")
    server.client.activate(d.event_id)  # a no-op on a non-deferred decision


def test_full_decision_log_still_serves_but_does_not_learn(start_server: Any, catalog_dir: Path) -> None:
    server = start_server(catalog_dir, max_pending_decisions=2)
    decisions = [server.client.decide("s1", "home_layout") for _ in range(3)]
    assert all(d.action_id in LAYOUTS for d in decisions)
    labels = {"decision_point": "home_layout"}
    assert server.metric("tailor_decisions_unlearnable_total", labels) == 1
    assert statuses(server, (decisions[2].event_id, 1.0, "")) == [S.REWARD_STATUS_UNKNOWN_EVENT]


def test_a_full_log_forgets_learned_decisions_first(start_server: Any, catalog_dir: Path) -> None:
    server = start_server(catalog_dir, max_pending_decisions=3)
    decisions = []
    for i in range(5):
        d = server.client.decide(f"s{i}", "home_layout")
        assert statuses(server, (d.event_id, 1.0, "")) == [S.REWARD_STATUS_ACCEPTED]
        decisions.append(d)
        assert server.wait_for(lambda: learned(server) == len(decisions))
    labels = {"decision_point": "home_layout"}
    assert server.metric("tailor_decisions_unlearnable_total", labels) == 0  # every decision was learned
    assert server.metric("tailor_decisions_evicted_total", labels) == 2
    assert statuses(server, (decisions[0].event_id, 1.0, "late")) == [S.REWARD_STATUS_UNKNOWN_EVENT]
    assert statuses(server, (decisions[4].event_id, 1.0, "late")) == [S.REWARD_STATUS_LATE]
    record = server.record(decisions[4].event_id)
    assert record is not None and record.shared == ""  # learned: the example text is not kept
