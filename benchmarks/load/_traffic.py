"""The traffic both servers receive: shoppers with behaviour events, Decide with 15 catalog actions and
20 context features (plus the session's features on Tailor), rewards for 30% of the decisions."""

from __future__ import annotations

import random
import time
from pathlib import Path

import yaml

from tailor.v1 import decision_service_pb2 as pb

DECISION_POINT = "load_layout"
ACTIONS = tuple(f"layout_{i}" for i in range(15))
SESSIONS = 2000
REWARD_SHARE = 0.3
EVENTS_EVERY = 4  # one TrackEvents message of 5 events every 4 decisions

_KINDS = [pb.EVENT_TYPE_PAGE_VIEW, pb.EVENT_TYPE_PRODUCT_VIEW, pb.EVENT_TYPE_CLICK, pb.EVENT_TYPE_SEARCH]


def action_features(i: int) -> dict[str, str | float]:
    return {"style": f"s{i % 5}", "density": float(i % 7), "imagery": f"i{i % 3}"}


def write_catalog(folder: Path) -> None:
    actions = [
        {"id": a, "features": action_features(i), "payload": {"template": f"{a}_v1"}} for i, a in enumerate(ACTIONS)
    ]
    doc = {"decision_point": DECISION_POINT, "policy": {"reward_window_seconds": 30}, "actions": actions}
    (folder / f"{DECISION_POINT}.yaml").write_text(yaml.safe_dump(doc))


def decide_request(rng: random.Random, session: int) -> pb.DecideRequest:
    context = {f"c{j}": pb.FeatureValue(text=f"v{rng.randint(0, 9)}") for j in range(10)}
    context.update({f"n{j}": pb.FeatureValue(number=rng.random()) for j in range(10)})
    return pb.DecideRequest(session_id=f"load-{session}", decision_point=DECISION_POINT, context=context)


def events(rng: random.Random, session: int) -> pb.TrackEventsRequest:
    return pb.TrackEventsRequest(
        events=[
            pb.SessionEvent(
                session_id=f"load-{session}",
                type=rng.choice(_KINDS),
                product_id=f"p{rng.randint(0, 500)}",
                category=f"cat{rng.randint(0, 12)}",
                price=rng.uniform(5, 200),
                discount=rng.choice([0.0, 0.1, 0.3]),
            )
            for _ in range(5)
        ]
    )


def vw_example(seed: int = 0) -> tuple[str, tuple[str, ...]]:
    """One Decide of this traffic as the VW example Tailor builds for it: the request's context, the intent
    features of a session that sent 10 events and was shown every action, and the catalog's action lines."""
    from policies import action_line, encode_features, shared_line
    from server.core import TrackedEvent
    from server.sessions import intent_features
    from server.state.sessions import OpenDecision, SessionState

    rng = random.Random(seed)
    now = time.time()
    session = SessionState("s", now - 60, now - 60, now)
    for i, e in enumerate(event for _ in range(2) for event in events(rng, 0).events):
        kind = pb.EventType.Name(e.type).removeprefix("EVENT_TYPE_").lower()
        session.apply(TrackedEvent("s", kind, now - 60 + i, e.product_id, e.category, e.price, e.discount))  # type: ignore[arg-type]
    for a in ACTIONS:
        session.record_decision(OpenDecision(a, DECISION_POINT, now), a)
    context = sorted((k, v.text or v.number) for k, v in decide_request(rng, 0).context.items())
    shared = shared_line(encode_features(context), encode_features(intent_features(session, now)))
    return shared, tuple(action_line(a, action_features(i)) for i, a in enumerate(ACTIONS))
