"""The in-flight bound and expired deadlines: refuse at once, never queue, never compute a dead call."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tailor.v1 import decision_service_pb2 as pb

from ..conftest import RunningServer


def held_stream(server: RunningServer, release: threading.Event) -> grpc.Future[pb.TrackEventsResponse]:
    """A TrackEvents stream that stays open (holding its slot) until `release` is set."""

    def requests() -> Iterator[pb.TrackEventsRequest]:
        yield pb.TrackEventsRequest(events=[pb.SessionEvent(session_id="held", type=pb.EVENT_TYPE_PAGE_VIEW)])
        release.wait(30)

    return server.stub.TrackEvents.future(requests(), timeout=30)


def test_past_max_in_flight_calls_are_refused_at_once_and_slots_come_back(
    start_server: Callable[..., RunningServer], catalog_dir: Path
) -> None:
    server = start_server(catalog_dir, max_in_flight=2)
    release = threading.Event()
    streams = [held_stream(server, release) for _ in range(2)]
    assert server.wait_for(lambda: server.app.guard.in_flight == 2)

    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as shed:
        server.client.decide("s", "home_layout")
    assert shed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert time.monotonic() - started < 1.0  # refused at once, not queued
    assert "--max-in-flight" in (shed.value.details() or "")
    health = health_pb2_grpc.HealthStub(server.channel)  # probes are never shed
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    assert server.metric("tailor_rpcs_in_flight") == 2

    release.set()
    assert [s.result(timeout=10).accepted for s in streams] == [1, 1]
    assert server.wait_for(lambda: server.app.guard.in_flight == 0)
    for i in range(5):  # every slot came back
        server.client.decide(f"after-{i}", "home_layout")
    assert server.metric("tailor_rpcs_rejected_total", {"reason": "overload"}) == 1


def test_a_failed_call_gives_its_slot_back(start_server: Callable[..., RunningServer], catalog_dir: Path) -> None:
    server = start_server(catalog_dir, max_in_flight=1)
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as bad:
            server.client.decide("s", "no_such_point")
        assert bad.value.code() == grpc.StatusCode.NOT_FOUND
    assert server.client.decide("s", "home_layout").action_id
    assert server.app.guard.in_flight == 0


def test_a_call_whose_deadline_passed_while_it_waited_is_not_computed(
    start_server: Callable[..., RunningServer], catalog_dir: Path
) -> None:
    server = start_server(catalog_dir)

    def served() -> float:
        return server.metric("tailor_decisions_total", {"decision_point": "home_layout"})

    before = served()
    # Block the server's event loop past the call's deadline: the call arrives, waits, and must then be
    # refused instead of computed.
    blocker = threading.Thread(target=lambda: server.call(lambda: time.sleep(0.5)))
    blocker.start()
    time.sleep(0.05)
    with pytest.raises(grpc.RpcError) as late:
        server.stub.Decide(pb.DecideRequest(session_id="late", decision_point="home_layout"), timeout=0.2)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    blocker.join()
    time.sleep(0.2)
    # No decision was made (and none logged) for a caller that had given up. gRPC itself does not start a
    # call whose deadline passed in its queue; the guard also refuses one that expires before its handler.
    assert served() == before
    assert server.client.decide("s", "home_layout").action_id
    assert served() == before + 1
