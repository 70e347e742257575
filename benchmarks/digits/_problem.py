"""The bandit problem both sides play: digits rounds, the catalog's actions and the exploration algorithms.

Everything the service and the reference must agree on is defined here once, so a parity gap can only
come from how the service learns, never from the two sides being fed different problems.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sklearn.datasets import load_digits

from policies import Bag, Cover, EpsilonGreedy, Exploration, LearningSpec, Softmax, SquareCB

DECISION_POINT = "digits"
ACTIONS: dict[str, dict[str, str | float]] = {f"d{k}": {"digit": f"d{k}"} for k in range(10)}
ACTION_IDS: tuple[str, ...] = tuple(ACTIONS)
REWARD_WINDOW_SECONDS = 0.25
REWARD_RANGE = (0.0, 1.0)
RANDOM_BASELINE = 1.0 / len(ACTIONS)

#: The bake-off's contenders with the parameters the issue names; softmax is available but not run by default.
ALGORITHMS: dict[str, Exploration] = {
    "squarecb": SquareCB(),
    "epsilon_greedy": EpsilonGreedy(epsilon=0.05),
    "bag": Bag(size=5),
    "cover": Cover(size=3),
    "softmax": Softmax(),
}
DEFAULT_ALGORITHMS = ("squarecb", "epsilon_greedy", "bag", "cover")
SERVICE_DEFAULT = "squarecb"  # the service's default exploration (policies/_exploration.py)

Context = tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class Round:
    """One bandit round: the request context (nonzero pixels scaled to [0, 1]) and the right action."""

    context: Context
    digit: int

    def reward(self, action_index: int) -> float:
        return 1.0 if action_index == self.digit else 0.0


@functools.cache
def _contexts() -> tuple[Round, ...]:
    """Every digits image once, pixels as numeric features ``p{j} = value / 16`` (zeros left out, as VW would)."""
    images, labels = load_digits(return_X_y=True)
    # sorted by name, the order in which the service encodes request features (server/api/_validation.py)
    return tuple(
        Round(tuple(sorted((f"p{j}", float(v) / 16) for j, v in enumerate(image) if v)), int(label))
        for image, label in zip(images, labels, strict=True)
    )


def make_rounds(passes: int, seed: int) -> list[Round]:
    """`passes` passes over the data, each in its own order, all fixed by `seed` (shared by both sides)."""
    base = _contexts()
    order = list(range(len(base)))
    rng = random.Random(f"digits-order-{seed}")
    rounds: list[Round] = []
    for _ in range(passes):
        rng.shuffle(order)
        rounds += [base[i] for i in order]
    return rounds


def event_id(seed: int, index: int) -> str:
    """The event id of round `index` under `seed`; it seeds the service's draw, so seeds give distinct draws."""
    return f"{seed}-{index}"


def vw_args(exploration: Exploration) -> str:
    """The exact VW command line the service builds for a catalog with this exploration."""
    return LearningSpec(exploration=exploration).vw_args()


def write_catalog(folder: Path, exploration: Exploration) -> Path:
    """The digits catalog: one action per digit, rewards joined for 0.25 s, learned at the first reward."""
    doc: dict[str, Any] = {
        "decision_point": DECISION_POINT,
        "description": "sklearn digits as a 10-action contextual bandit (learning-parity benchmark)",
        "policy": {
            "reward_window_seconds": REWARD_WINDOW_SECONDS,
            "default_reward": 0.0,
            "reward_range": list(REWARD_RANGE),
            "aggregation": "first",
            "exploration": exploration.model_dump(by_alias=True),
        },
        "actions": [{"id": a, "features": f} for a, f in ACTIONS.items()],
    }
    path = folder / f"{DECISION_POINT}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
