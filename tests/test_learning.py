"""Online learning through the real server: reward improves against a baseline in the same run."""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path
from typing import Any

from .conftest import LAYOUTS, RunningServer, write_catalog

BEST = {"bargain": "grid", "browser": "carousel", "reader": "editorial"}


def play(server: RunningServer, rounds: int, rng: random.Random) -> list[float]:
    """Shoppers of three segments; each segment converts only on its own layout. Rewards reported at once."""
    rewards = []
    for i in range(rounds):
        segment = rng.choice(list(BEST))
        d = server.client.decide(f"s{i}", "home_layout", context={"segment": segment, "hour": rng.randint(0, 23)})
        reward = 1.0 if d.action_id == BEST[segment] else 0.0
        server.client.report_rewards([(d.event_id, reward, uuid.uuid4().hex)])
        rewards.append(reward)
    return rewards


def test_reward_improves_over_the_starting_policy(server: RunningServer) -> None:
    rng = random.Random(11)
    rewards = play(server, 700, rng)
    early = sum(rewards[:100]) / 100  # the untrained policy: about 1/len(LAYOUTS)
    late = sum(rewards[-200:]) / 200
    assert late > early + 0.3, (early, late)
    assert late > 0.75, late
    labels = {"decision_point": "home_layout", "source": "reward"}
    assert server.wait_for(lambda: server.metric("tailor_learned_examples_total", labels) == 700)


def test_a_learned_reward_changes_the_next_decision_within_a_second(start_server: Any, tmp_path: Path) -> None:
    folder = tmp_path / "categorical"
    folder.mkdir()
    # categorical features only: one example moves the rewarded action, not a shared numeric slope
    write_catalog(folder, "home_layout", {a: {"style": a} for a in LAYOUTS})
    server = start_server(folder)
    context = {"segment": "bargain"}
    before = server.client.decide("s", "home_layout", context=context)
    p_before = {x.action_id: x.probability for x in before.ranking}
    server.client.report_rewards([(before.event_id, 1.0, "r")])
    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        now = server.client.decide("s", "home_layout", context=context)
        p_now = {x.action_id: x.probability for x in now.ranking}
        if p_now[before.action_id] > p_before[before.action_id]:
            return
        time.sleep(0.01)
    raise AssertionError(f"the rewarded action's probability did not rise within 1 s: {p_before} -> {p_now}")


def test_every_rewarded_decision_is_learned_exactly_once(server: RunningServer) -> None:
    ids = [server.client.decide(f"s{i}", "home_layout").event_id for i in range(50)]
    for _ in range(3):  # retries with the same reward ids, and without
        server.client.report_rewards([(e, 1.0, f"r-{e}") for e in ids])
        server.client.report_rewards([(e, 0.0, "") for e in ids])
    labels = {"decision_point": "home_layout", "source": "reward"}
    assert server.wait_for(lambda: server.metric("tailor_learned_examples_total", labels) == 50)
    time.sleep(0.2)
    assert server.metric("tailor_learned_examples_total", labels) == 50
    assert server.metric("tailor_rewards_total", {"status": "accepted"}) == 50
    assert server.metric("tailor_rewards_total", {"status": "duplicate"}) == 100
    assert server.metric("tailor_rewards_total", {"status": "late"}) == 150
    assert len(LAYOUTS) == 3
