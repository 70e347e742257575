"""The traffic both servers receive: shoppers with behaviour events, Decide with 15 catalog actions and
20 context features (plus the session's features on Tailor), rewards for 30% of the decisions."""

from __future__ import annotations

import random
from pathlib import Path

import yaml

from tailor.v1 import decision_service_pb2 as pb

DECISION_POINT = "load_layout"
ACTIONS = tuple(f"layout_{i}" for i in range(15))
SESSIONS = 2000
REWARD_SHARE = 0.3
EVENTS_EVERY = 4  # one TrackEvents message of 5 events every 4 decisions

_KINDS = [pb.EVENT_TYPE_PAGE_VIEW, pb.EVENT_TYPE_PRODUCT_VIEW, pb.EVENT_TYPE_CLICK, pb.EVENT_TYPE_SEARCH]


def write_catalog(folder: Path) -> None:
    actions = [
        {"id": a, "features": {"style": f"s{i % 5}", "density": float(i % 7), "imagery": f"i{i % 3}"},
         "payload": {"template": f"{a}_v1"}}
        for i, a in enumerate(ACTIONS)
    ]  # fmt: skip
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
