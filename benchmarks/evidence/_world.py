"""The logged decisions: a shop's home-page layouts, chosen by Tailor's default policy as it learns, written
to a decision log the way the embedded learner writes it.

- **Catalog:** 20 layouts with 4 features each (style, density, imagery, video; `video` is 0 for three
  in four, a zero-valued feature VW's text parser drops). Each decision offers a random 4-15 of them,
  in catalog order (a client's `actions` subset).
- **Shared features:** 14 request context features (8 text, 6 numbers) and 6 session features (2 text,
  4 numbers): 20 in all, in the context and session namespaces.
- **Rewards:** a hidden preference (one style per device and segment, plus an imagery lift on mobile)
  sets each layout's chance of a reward event; a rewarded decision earns 1.0 (purchase) or 0.3 (add to
  cart), the rest the default 0.0 when their window closes. About 30% of the decisions are rewarded.
- **Logging policy:** `VWPolicy` with the default `LearningSpec` (SquareCB), predicting on every
  decision and drawing with `sample_index` (seeded by the event id) exactly as the Decide handler does;
  each decision is learned `DELAY` decisions later (its reward window), then written to the log with
  `dsjson_line`, in the order learned, through `FileEvidenceLog` with a keyed `Pseudonymizer`.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from math import floor
from pathlib import Path

from policies import LearningSpec, VWPolicy, action_line, encode_features, reward_to_cost, sample_index, shared_line
from server.state.decision_log import Decision, DecisionRecord
from server.state.evidence import FileEvidenceLog, Outcome, Pseudonymizer, dsjson_line

DECISION_POINT = "home_layout"
STYLES = ("grid", "carousel", "editorial", "list", "hero")
ACTIONS = tuple(f"layout_{i:02d}" for i in range(20))
FEATURES: dict[str, dict[str, str | float]] = {
    a: {"style": STYLES[i % 5], "density": float(4 + (i % 6) * 4), "imagery": f"i{i % 3}", "video": float(i % 4 == 0)}
    for i, a in enumerate(ACTIONS)
}
LINES = tuple(action_line(a, FEATURES[a]) for a in ACTIONS)
MIN_CANDIDATES, MAX_CANDIDATES = 4, 15
DELAY = 200  # a decision is learned this many decisions after it was made (its reward window closing)
SECONDS_APART = 0.05  # 20 decisions/s of synthetic clock
PURCHASE, CART = 1.0, 0.3
PURCHASE_SHARE = 0.4  # of the rewarded decisions
REWARD_RANGE = (0.0, 1.0)
KEY = bytes(range(32))  # the installation's pseudonymisation key (any 32 bytes)

_DEVICES = ("mobile", "desktop", "tablet")
_SEGMENTS = ("new", "returning", "loyal", "bargain", "premium")


@dataclass(frozen=True, slots=True)
class Logged:
    """One decision as learned: its record, its reward, and what the simulator knows about it."""

    record: DecisionRecord
    reward: float
    expected: tuple[float, ...]  # each candidate's expected reward (the hidden truth), in candidate order
    pmf: tuple[float, ...]  # the logging policy's probabilities, in candidate order


@dataclass(frozen=True)
class Generated:
    decisions: list[Logged]  # in the order learned (and written)
    seconds: float  # wall time of the whole generation
    learn_seconds: float  # of which VWPolicy.learn
    log_seconds: float  # of which dsjson_line + FileEvidenceLog.write (+ its flushes and close)
    rewarded: int


def _preferred(device: str, segment: str) -> str:
    return STYLES[(_DEVICES.index(device) * 3 + _SEGMENTS.index(segment) * 2) % len(STYLES)]


def reward_chance(device: str, segment: str, action: str) -> float:
    """The hidden chance that showing `action` earns a reward event."""
    features = FEATURES[action]
    chance = 0.12 + 0.36 * (features["style"] == _preferred(device, segment))
    if device == "mobile" and features["imagery"] == "i0":
        chance += 0.1
    return chance


def _context(rng: random.Random) -> tuple[list[tuple[str, str | float]], list[tuple[str, str | float]], str, str]:
    device, segment = rng.choice(_DEVICES), rng.choice(_SEGMENTS)
    context: list[tuple[str, str | float]] = [
        ("device", device),
        ("country", rng.choice(("de", "fr", "uk", "es", "it", "nl"))),
        ("channel", rng.choice(("direct", "search", "social", "email"))),
        ("weekday", rng.choice(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))),
        ("segment", segment),
        ("referrer", f"r{rng.randrange(40)}"),
        ("language", rng.choice(("de", "en", "fr", "es"))),
        ("plan", rng.choice(("free", "member", "plus"))),
        ("hour", float(rng.randrange(24))),
        ("basket_value", round(rng.expovariate(1 / 60), 2)),
        ("visits", float(rng.randrange(1, 50))),
        ("days_since_last", float(rng.randrange(0, 90))),
        ("discount_seen", rng.choice((0.0, 0.1, 0.2, 0.3))),
        ("page_depth", float(rng.randrange(1, 12))),
    ]
    session: list[tuple[str, str | float]] = [
        ("cart", rng.choice(("empty", "items"))),
        ("top_category", f"cat{rng.randrange(12)}"),
        ("views", float(rng.randrange(0, 30))),
        ("clicks", float(rng.randrange(0, 10))),
        ("searches", float(rng.randrange(0, 5))),
        ("minutes", round(rng.uniform(0, 40), 3)),
    ]
    return context, session, device, segment


def _ranking(ids: Sequence[str], pmf: Sequence[float]) -> tuple[tuple[str, float], ...]:
    return tuple(sorted(zip(ids, pmf, strict=True), key=lambda pair: pair[1], reverse=True))


def generate(decisions: int, data_dir: Path, seed: int = 1) -> Generated:
    """`decisions` decisions made and learned by the logging policy, logged into `data_dir/decisions`."""
    rng = random.Random(seed)
    policy = VWPolicy(LearningSpec())
    log = FileEvidenceLog(data_dir / "decisions")
    pseudonymize = Pseudonymizer(KEY)
    start = time.time() - decisions * SECONDS_APART - 3600.0
    pending: deque[Logged] = deque()  # decided, not yet learned
    learned: list[Logged] = []
    learn_seconds = log_seconds = 0.0
    rewarded = 0

    def learn(item: Logged, now: float) -> None:
        nonlocal learn_seconds, log_seconds
        r = item.record
        t0 = time.perf_counter()
        policy.learn(r.shared, r.actions, r.chosen, reward_to_cost(item.reward, *r.reward_range), r.probability)
        t1 = time.perf_counter()
        outcome: Outcome = "reward" if r.rewards else "default"
        log.write(dsjson_line(r, item.reward, outcome, now, pseudonymize))
        if len(learned) % 256 == 255:
            log.flush()  # the learner flushes after every slice
        log_seconds += time.perf_counter() - t1
        learn_seconds += t1 - t0
        learned.append(item)

    started = time.perf_counter()
    for i in range(decisions):
        now = start + i * SECONDS_APART
        context, session, device, segment = _context(rng)
        subset = sorted(rng.sample(range(len(ACTIONS)), rng.randint(MIN_CANDIDATES, MAX_CANDIDATES)))
        ids = [ACTIONS[j] for j in subset]
        lines = tuple(LINES[j] for j in subset)
        shared = shared_line(encode_features(context), encode_features(session))
        pmf = policy.predict(shared, lines)
        event_id = f"{rng.getrandbits(64):016x}"
        chosen = sample_index(pmf, event_id)
        expected = tuple(
            reward_chance(device, segment, a) * (PURCHASE_SHARE * PURCHASE + (1 - PURCHASE_SHARE) * CART) for a in ids
        )
        if rng.random() < reward_chance(device, segment, ids[chosen]):
            reward = PURCHASE if rng.random() < PURCHASE_SHARE else CART
            rewards: tuple[float, ...] = (reward,)
            rewarded += 1
        else:
            reward, rewards = 0.0, ()
        decision = Decision(event_id, ids[chosen], pmf[chosen], _ranking(ids, pmf), {}, "home_layout.1")
        record = DecisionRecord(
            decision=decision,
            session_id=f"shopper-{rng.randrange(20_000)}@example.com",
            decision_point=DECISION_POINT,
            shared=shared,
            actions=lines,
            chosen=chosen,
            created_at=now,
            window_seconds=DELAY * SECONDS_APART,
            aggregation="max",
            reward_range=REWARD_RANGE,
            default_reward=0.0,
            grace_seconds=60.0,
            activated_at=now,
            rewards=rewards,
            reward_ids=(f"r-{event_id}",) if rewards else (),
            learned=True,
        )
        pending.append(Logged(record, reward, expected, tuple(pmf)))
        if len(pending) > DELAY:
            learn(pending.popleft(), now + SECONDS_APART / 2)
    end = start + decisions * SECONDS_APART
    while pending:
        learn(pending.popleft(), end)
        end += 1e-3
    t0 = time.perf_counter()
    log.close()
    log_seconds += time.perf_counter() - t0
    policy.close()
    return Generated(learned, time.perf_counter() - started, learn_seconds, log_seconds, rewarded)


def scores_pmf(scores: Sequence[float]) -> list[float]:
    """VW's raw probabilities as `VWPolicy.predict` returns them (rounded to millionths, normalised)."""
    micros = [floor(s * 1e6 + 0.5) for s in scores]
    total = sum(micros)
    return [m / total for m in micros]
