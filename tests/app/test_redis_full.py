"""A full Redis (maxmemory reached, noeviction): writes are refused as RESOURCE_EXHAUSTED, Decide still
answers and counts the decision unlearnable, and everything works again once there is room."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from tailor.v1 import decision_service_pb2 as pb

from ..conftest import RunningServer
from ..redis_server import RedisServer


def test_a_full_redis_sheds_writes_and_decide_keeps_answering(
    start_server: Callable[..., RunningServer], catalog_dir: Path
) -> None:
    redis_server = RedisServer().start()  # its own: the test fills it
    try:
        server = start_server(catalog_dir, redis_url=redis_server.url, redis_prefix="full")
        before = server.client.decide("s0", "home_layout")
        raw = redis_server.client()
        raw.set("filler", "x" * 4_000_000)
        used = int(raw.info("memory")["used_memory"])
        raw.config_set("maxmemory-policy", "noeviction")
        raw.config_set("maxmemory", str(used - 1_000_000))

        event = pb.SessionEvent(session_id="s1", type=pb.EVENT_TYPE_PAGE_VIEW)
        with pytest.raises(grpc.RpcError) as events:
            server.client.track_events([event])
        assert events.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "maxmemory" in (events.value.details() or "")
        with pytest.raises(grpc.RpcError) as rewards:
            server.client.report_rewards([(before.event_id, 1.0, "r")])
        assert rewards.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        decided = server.client.decide("s2", "home_layout")  # Decide keeps the contract
        assert decided.action_id
        assert server.metric("tailor_decisions_unlearnable_total", {"decision_point": "home_layout"}) == 1

        raw.delete("filler")
        raw.config_set("maxmemory", "0")
        assert server.client.track_events([event]).accepted == 1
        statuses = [r.status for r in server.client.report_rewards([(before.event_id, 1.0, "r")])]
        assert statuses == [pb.REWARD_STATUS_ACCEPTED]  # the refused reward was not half-applied
        raw.close()
    finally:
        redis_server.stop()
