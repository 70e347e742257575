"""The VW text Decide builds from a session is exactly the session's intent features, whatever came before.

`intent_text` caches the event-driven part of the encoding on the session state; these tests interleave
events, decisions and the clock so that a cache left stale by any mutation shows up as a difference.
"""

from __future__ import annotations

import random
import time

import pytest

from policies import encode_features
from server.sessions import intent_features, intent_text
from server.state.sessions import OpenDecision, SessionState

from ..state.test_session_store_contract import random_events


def tokens(text: str) -> list[str]:
    return sorted(text.split(" "))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_cached_text_always_equals_the_encoded_features(seed: int) -> None:
    rng = random.Random(seed)
    now = time.time()
    state = SessionState("s", started_at=now - 900, last_event_at=now - 900, last_seen=now)
    events = random_events("s", 80, seed, now)
    checked = 0
    for i, event in enumerate(events):
        state.apply(event)
        if rng.random() < 0.4:
            point = rng.choice(["home", "cart"])
            state.record_decision(OpenDecision(f"e{i}", point, now), rng.choice(["grid", "list", "hero"]))
        for later in (0.0, rng.uniform(1, 600)):  # the clock moves on between decisions
            at = now + later
            assert tokens(intent_text(state, at)) == tokens(encode_features(intent_features(state, at)))
            checked += 1
    assert checked == 160


def test_a_new_session_encodes_its_features() -> None:
    now = time.time()
    state = SessionState("s", started_at=now, last_event_at=now, last_seen=now)
    text = intent_text(state, now)
    assert tokens(text) == tokens(encode_features(intent_features(state, now)))
    assert "cart=empty" in text.split(" ") and "events:0" in text.split(" ")
