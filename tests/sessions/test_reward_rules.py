"""Rewards derived from later session events by catalog reward rules: attribution, windows, exactly once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from server import CatalogError
from server.catalogs import load_catalog_file
from server.state.decision_log import DecisionRecord
from tailor.v1 import decision_service_pb2 as pb

from ..conftest import LAYOUTS, RunningServer, write_catalog

E = pb.EventType
RULES = [{"event": "add_to_cart", "reward": 0.3}, {"event": "purchase", "reward": 0.01, "scale_by_price": True}]


@pytest.fixture
def ruled(tmp_path: Path, start_server: Any) -> RunningServer:
    folder = tmp_path / "ruled"
    folder.mkdir()
    write_catalog(folder, "home_layout", LAYOUTS, reward_window_seconds=30, reward_rules=RULES)
    write_catalog(folder, "cart_offer", LAYOUTS, reward_window_seconds=0.3, aggregation="max", reward_rules=RULES)
    write_catalog(folder, "no_rules", LAYOUTS, reward_window_seconds=30)
    server: RunningServer = start_server(folder)
    return server


def track(server: RunningServer, *events: pb.SessionEvent) -> None:
    server.stub.TrackEvents(iter([pb.TrackEventsRequest(events=list(events))]), timeout=5)


def ev(kind: int, session: str = "s1", **fields: Any) -> pb.SessionEvent:
    return pb.SessionEvent(session_id=session, type=kind, **fields)  # type: ignore[arg-type]


def record(server: RunningServer, event_id: str) -> DecisionRecord:
    found = server.record(event_id)
    assert found is not None
    return found


def learned(server: RunningServer, point: str) -> float:
    return sum(
        server.metric("tailor_learned_examples_total", {"decision_point": point, "source": s})
        for s in ("reward", "default")
    )


def rule_status(server: RunningServer, point: str, status: str) -> float:
    return server.metric("tailor_rule_rewards_total", {"decision_point": point, "status": status})


def test_first_rule_event_is_learned_once_and_later_ones_are_late(ruled: RunningServer) -> None:
    d = ruled.client.decide("s1", "home_layout")
    track(ruled, ev(E.EVENT_TYPE_PAGE_VIEW))  # no rule for page views
    track(ruled, ev(E.EVENT_TYPE_ADD_TO_CART, product_id="p1", price=50.0, id="atc-1"))
    assert ruled.wait_for(lambda: learned(ruled, "home_layout") == 1)
    scaled = ruled.metric("tailor_learned_reward_scaled_total", {"decision_point": "home_layout"})
    assert scaled == pytest.approx(0.3)
    track(ruled, ev(E.EVENT_TYPE_PURCHASE, price=50.0, id="buy-1"))
    assert rule_status(ruled, "home_layout", "accepted") == 1
    # the purchase finds nothing open (the decision was learned at its first reward)
    assert ruled.client.report_rewards([(d.event_id, 1.0, "")])[0].status == pb.REWARD_STATUS_LATE
    time.sleep(0.1)
    assert learned(ruled, "home_layout") == 1


def test_max_aggregation_takes_the_best_derived_reward_at_window_close(ruled: RunningServer) -> None:
    d = ruled.client.decide("s1", "cart_offer")
    track(ruled, ev(E.EVENT_TYPE_ADD_TO_CART, product_id="p1", price=50.0), ev(E.EVENT_TYPE_PURCHASE, price=80.0))
    assert record(ruled, d.event_id).rewards == pytest.approx([0.3, 0.8])  # purchase: 0.01 x 80
    assert ruled.wait_for(lambda: learned(ruled, "cart_offer") == 1, timeout=3)
    scaled = ruled.metric("tailor_learned_reward_scaled_total", {"decision_point": "cart_offer"})
    assert scaled == pytest.approx(0.8)


def test_scaled_rewards_are_clamped_into_the_range(ruled: RunningServer) -> None:
    d = ruled.client.decide("s1", "cart_offer")
    track(ruled, ev(E.EVENT_TYPE_PURCHASE, price=500.0))
    assert record(ruled, d.event_id).rewards == (1.0,)


def test_every_open_decision_of_the_session_is_credited_by_its_own_rules(ruled: RunningServer) -> None:
    layout = ruled.client.decide("s1", "home_layout")
    offer = ruled.client.decide("s1", "cart_offer")
    plain = ruled.client.decide("s1", "no_rules")
    other = ruled.client.decide("s2", "home_layout")
    track(ruled, ev(E.EVENT_TYPE_ADD_TO_CART, product_id="p1", price=10.0))
    assert record(ruled, layout.event_id).learned  # first aggregation: learned at once
    assert record(ruled, offer.event_id).rewards == (0.3,)  # max aggregation: held for the window
    assert record(ruled, plain.event_id).rewards == () and not record(ruled, plain.event_id).learned
    assert record(ruled, other.event_id).rewards == () and not record(ruled, other.event_id).learned


def test_events_before_the_decision_do_not_credit_it(ruled: RunningServer) -> None:
    earlier = time.time() - 60
    d = ruled.client.decide("s1", "home_layout")
    stale = ev(E.EVENT_TYPE_ADD_TO_CART, product_id="p1", price=10.0)
    stale.timestamp.FromSeconds(int(earlier))
    track(ruled, stale)
    found = record(ruled, d.event_id)
    assert not found.learned and found.rewards == ()


def test_a_duplicate_event_credits_once(ruled: RunningServer) -> None:
    d = ruled.client.decide("s1", "cart_offer")
    e = ev(E.EVENT_TYPE_ADD_TO_CART, product_id="p1", price=10.0, id="atc-1")
    track(ruled, e, e)
    assert record(ruled, d.event_id).rewards == (0.3,)


def test_deferred_decision_holds_rule_rewards_until_activation(ruled: RunningServer) -> None:
    d = ruled.client.decide("s1", "home_layout", defer_activation=True)
    track(ruled, ev(E.EVENT_TYPE_ADD_TO_CART, product_id="p1", price=10.0))
    time.sleep(0.1)
    assert learned(ruled, "home_layout") == 0
    ruled.client.activate(d.event_id)
    assert ruled.wait_for(lambda: learned(ruled, "home_layout") == 1)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"event": "purchase", "reward": 1.0}, {"event": "purchase", "reward": 0.5}], "more than once"),
        ([{"event": "purchase", "reward": 2.0}], "within reward_range"),
        ([{"event": "checkout", "reward": 1.0}], "reward_rules.0.event"),
        ([{"event": "purchase", "reward": 1.0, "bonus": 1}], "reward_rules.0.bonus"),
    ],
)
def test_invalid_reward_rules_are_catalog_errors(tmp_path: Path, rules: list[dict[str, Any]], message: str) -> None:
    path = write_catalog(tmp_path, "home_layout", LAYOUTS, reward_rules=rules)
    with pytest.raises(CatalogError) as info:
        load_catalog_file(path)
    assert message in str(info.value) and str(path) in str(info.value)
