"""Session context through the real server: TrackEvents, intent features, GetSession, DeleteSession, TTL."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from tailor.v1 import decision_service_pb2 as pb

from ..conftest import LAYOUTS, RunningServer, write_catalog

E = pb.EventType


def event(
    session: str = "s1", kind: int = E.EVENT_TYPE_PAGE_VIEW, at: float | None = None, **fields: Any
) -> pb.SessionEvent:
    e = pb.SessionEvent(session_id=session, type=kind, **fields)  # type: ignore[arg-type]
    if at is not None:
        e.timestamp.CopyFrom(Timestamp(seconds=int(at), nanos=int((at % 1) * 1e9)))
    return e


def track(server: RunningServer, *batches: list[pb.SessionEvent]) -> pb.TrackEventsResponse:
    response: pb.TrackEventsResponse = server.stub.TrackEvents(
        iter([pb.TrackEventsRequest(events=b) for b in batches]), timeout=5
    )
    return response


def features(server: RunningServer, session: str = "s1") -> dict[str, Any]:
    response = server.stub.GetSession(pb.GetSessionRequest(session_id=session), timeout=5)
    return {k: (v.text if v.WhichOneof("value") == "text" else v.number) for k, v in response.features.items()}


def test_invalid_events_are_rejected_and_counted_never_a_failed_stream(server: RunningServer) -> None:
    now = time.time()
    bad = {
        "missing_session_id": event(session=""),
        "unknown_type": event(kind=E.EVENT_TYPE_UNSPECIFIED),
        "bad_price": event(price=-1.0),
        "bad_discount": event(discount=1.5),
        "future_timestamp": event(at=now + 3600),
        "stale_timestamp": event(at=now - 3 * 86400),
        "oversized_field": event(product_id="p" * 300),
        "bad_attributes": event(attributes={"x": pb.FeatureValue(number=float("nan"))}),
    }
    nan_price = event(price=float("nan"))
    good = [event(), event(kind=E.EVENT_TYPE_CLICK, at=now - 5)]
    response = track(server, [*bad.values(), nan_price], good)
    assert (response.accepted, response.rejected) == (2, len(bad) + 1)
    for reason in bad:
        assert server.metric("tailor_session_events_rejected_total", {"reason": reason}) >= 1, reason
    assert server.metric("tailor_session_events_total", {"result": "rejected"}) == len(bad) + 1
    assert features(server)["events"] > 0


def test_unknown_enum_value_is_rejected(server: RunningServer) -> None:
    response = track(server, [pb.SessionEvent(session_id="s1", type=99)])  # type: ignore[arg-type]
    assert (response.accepted, response.rejected) == (0, 1)


def test_oversized_event_batch_is_invalid_argument(server: RunningServer) -> None:
    with pytest.raises(grpc.RpcError) as info:
        track(server, [event()] * 1001)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_duplicate_events_are_acknowledged_but_counted_once(server: RunningServer) -> None:
    e = event(kind=E.EVENT_TYPE_PRODUCT_VIEW, id="ev-1", category="shoes", price=40.0)
    response = track(server, [e, e], [e])
    assert (response.accepted, response.rejected) == (3, 0)
    assert features(server)["n_product_view"] == pytest.approx(0.6931, abs=1e-3)  # log1p(1): counted once
    assert server.metric("tailor_session_events_total", {"result": "duplicate"}) == 2


def test_out_of_order_events_are_folded_in(server: RunningServer) -> None:
    now = time.time()
    track(server, [event(at=now - 10), event(at=now - 120), event(kind=E.EVENT_TYPE_CLICK, at=now - 60)])
    f = features(server)
    assert f["events"] == pytest.approx(1.386, abs=1e-3)  # log1p(3)
    assert f["session_age"] > 0.69  # log1p(minutes): the late event moved the start back ~2 minutes
    assert f["ctr"] == pytest.approx(0.5)


def test_intent_features_describe_the_session(server: RunningServer) -> None:
    now = time.time()
    track(
        server,
        [
            event(kind=E.EVENT_TYPE_PRODUCT_VIEW, category="shoes", price=120.0, discount=0.5, at=now - 50),
            event(kind=E.EVENT_TYPE_PRODUCT_VIEW, category="shoes", price=80.0, discount=0.3, at=now - 40),
            event(kind=E.EVENT_TYPE_CLICK, category="bags", price=100.0, at=now - 30),
            event(kind=E.EVENT_TYPE_SEARCH, at=now - 20),
            event(kind=E.EVENT_TYPE_ADD_TO_CART, product_id="p1", category="shoes", price=120.0, at=now - 10),
        ],
    )
    f = features(server)
    assert f["top_category"] == "shoes"
    assert f["category_shoes"] > f["category_bags"]
    assert f["price_band"] == "high"
    assert f["cart"] == "filled"
    assert f["cart_items"] == pytest.approx(0.6931, abs=1e-3)
    assert 0.0 < f["discount_affinity"] < 0.5
    assert f["discounted_share"] == pytest.approx(2 / 4)  # two of the four priced products were on sale
    assert f["share_product_view"] == pytest.approx(2 / 5)
    assert f["share_search"] == pytest.approx(1 / 5)
    assert 0.7 < f["category_focus"] < 0.8  # shoes: three of four category events (decayed alike)
    assert f["ctr"] == pytest.approx(0.5)
    assert "search_per_min" in f and "since_add_to_cart" in f and "gap_mean" in f
    track(server, [event(kind=E.EVENT_TYPE_REMOVE_FROM_CART, product_id="p1")])
    assert features(server)["cart"] == "empty"


def test_decide_uses_the_session_features_and_records_what_was_shown(server: RunningServer) -> None:
    track(server, [event(kind=E.EVENT_TYPE_SEARCH), event(kind=E.EVENT_TYPE_CLICK)])
    d = server.client.decide("s1", "home_layout", context={"device": "mobile"})
    record = server.record(d.event_id)
    assert record is not None
    assert "|s " in record.shared and "n_search:" in record.shared and "device=mobile" in record.shared
    assert features(server)[f"shown_home_layout_{d.action_id}"] > 0


def test_get_and_delete_session(server: RunningServer) -> None:
    with pytest.raises(grpc.RpcError) as info:
        features(server, "never-seen")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        server.stub.GetSession(pb.GetSessionRequest(session_id=""), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    track(server, [event()])
    d = server.client.decide("s1", "home_layout")
    assert server.stub.DeleteSession(pb.DeleteSessionRequest(session_id="s1"), timeout=5).deleted
    assert not server.stub.DeleteSession(pb.DeleteSessionRequest(session_id="s1"), timeout=5).deleted
    with pytest.raises(grpc.RpcError) as info:
        features(server)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # its decisions are forgotten too: they hold the session's features
    assert server.client.report_rewards([(d.event_id, 1.0, "")])[0].status == pb.REWARD_STATUS_UNKNOWN_EVENT


def test_idle_sessions_expire(start_server: Any, catalog_dir: Path) -> None:
    server = start_server(catalog_dir, session_ttl_seconds=0.3)
    track(server, [event()])
    assert features(server)
    assert server.wait_for(lambda: server.metric("tailor_sessions_expired_total") == 1, timeout=5)
    with pytest.raises(grpc.RpcError) as info:
        features(server)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_session_cap_evicts_the_least_recently_active(start_server: Any, catalog_dir: Path) -> None:
    server = start_server(catalog_dir, max_sessions=2)
    for session in ("a", "b"):
        track(server, [event(session=session)])
    track(server, [event(session="a")])  # a is now more recent than b
    track(server, [event(session="c")])
    assert server.metric("tailor_sessions_evicted_total") == 1
    assert server.metric("tailor_sessions") == 2
    assert features(server, "a") and features(server, "c")
    with pytest.raises(grpc.RpcError):
        features(server, "b")


def test_a_shoppers_behaviour_changes_the_decision_mid_session(start_server: Any, tmp_path: Path) -> None:
    """Deal hunters (mostly discounted views) convert on deals_first, others on grid; the policy learns to
    tell them apart from behaviour alone, and one session's decisions change as its behaviour changes.

    Hunters look at a discounted product 85% of the time, others 10%, as shoppers do: a training set in
    which every hunter view is discounted and no other is makes `discounted_share` exactly 0 or 1, and
    then a mixed session (the one probed below) is outside everything the model has seen."""
    folder = tmp_path / "layouts"
    folder.mkdir()
    write_catalog(folder, "home_layout", {"grid": {"style": "grid"}, "deals_first": {"style": "deals"}})
    server = start_server(folder)
    rng = random.Random(5)
    for i in range(200):  # two decisions per session, after a varying amount of browsing
        hunter = i % 2 == 0
        session = f"train-{i}"
        for step in range(2):
            views = [
                event(
                    session,
                    E.EVENT_TYPE_PRODUCT_VIEW,
                    price=30.0,
                    discount=rng.uniform(0.4, 0.9) if rng.random() < (0.85 if hunter else 0.1) else 0.0,
                )
                for _ in range(rng.randint(1, 4))
            ]
            track(server, views)
            d = server.client.decide(session, "home_layout", event_id=f"train-{i}-{step}")
            good = d.action_id == ("deals_first" if hunter else "grid")
            server.client.report_rewards([(d.event_id, 1.0 if good else 0.0, "r")])

    def p_deals(session: str) -> float:
        d = server.client.decide(session, "home_layout")
        return float({x.action_id: x.probability for x in d.ranking}["deals_first"])

    track(server, [event("live", E.EVENT_TYPE_PRODUCT_VIEW, price=30.0, discount=0.0) for _ in range(2)])
    before = p_deals("live")
    track(server, [event("live", E.EVENT_TYPE_PRODUCT_VIEW, price=30.0, discount=0.9) for _ in range(4)])
    after = p_deals("live")
    assert before < 0.3 < 0.7 < after, (before, after)
    assert LAYOUTS  # the shared fixtures stay importable
