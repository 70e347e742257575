"""The problems every candidate learns, defined once so Tailor's path, the VW reference and the service
play exactly the same rounds with exactly the same rewards.

A reward is a pure function of (problem, seed, round, action): stochastic rewards are drawn from a hash,
so whichever side picks an action in a round gets the same outcome for it.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
from dataclasses import dataclass
from typing import Protocol

Features = tuple[tuple[str, "str | float"], ...]


@dataclass(frozen=True, slots=True)
class Round:
    """One decision: the request context, the candidates (id, features) and each candidate's expected reward."""

    context: Features
    actions: tuple[tuple[str, Features], ...]
    expected: tuple[float, ...]  # mean reward of each action
    stochastic: bool

    def reward(self, problem: str, seed: int, index: int, action: int) -> float:
        p = self.expected[action]
        if not self.stochastic:
            return p
        return 1.0 if _uniform(problem, seed, index, action) < p else 0.0

    @property
    def best(self) -> float:
        return max(self.expected)


def _uniform(*parts: object) -> float:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Problem(Protocol):
    name: str
    request_actions: bool  # candidates supplied by each request (True) or the catalog's (False)

    def rounds(self, seed: int) -> list[Round]: ...


class Digits:
    """scikit-learn's digits as a 10-action bandit, labels as request-supplied actions; 2 passes."""

    name = "digits"
    request_actions = True
    passes = 2

    @staticmethod
    @functools.cache
    def _data() -> tuple[tuple[Features, int], ...]:
        from sklearn.datasets import load_digits

        images, labels = load_digits(return_X_y=True)
        return tuple(
            (tuple(sorted((f"p{j}", float(v) / 16) for j, v in enumerate(image) if v)), int(label))
            for image, label in zip(images, labels, strict=True)
        )

    def rounds(self, seed: int) -> list[Round]:
        data = self._data()
        actions = tuple((f"d{k}", (("digit", f"d{k}"),)) for k in range(10))
        order = list(range(len(data)))
        rng = random.Random(f"digits-{seed}")
        out: list[Round] = []
        for _ in range(self.passes):
            rng.shuffle(order)
            for i in order:
                context, label = data[i]
                out.append(Round(context, actions, tuple(1.0 if k == label else 0.0 for k in range(10)), False))
        return out


class Linear:
    """A synthetic linear problem: 5 numeric context features, 5 request-supplied actions with 5 numeric
    features each (drawn anew every round); a click's log-odds are bilinear in context and action."""

    name = "linear"
    request_actions = True
    n_rounds = 5000

    def rounds(self, seed: int) -> list[Round]:
        rng = random.Random(f"linear-{seed}")
        w = [[rng.gauss(0, 1) for _ in range(5)] for _ in range(5)]
        out: list[Round] = []
        for _ in range(self.n_rounds):
            x = [rng.gauss(0, 1) for _ in range(5)]
            actions, expected = [], []
            for k in range(5):
                z = [rng.gauss(0, 1) for _ in range(5)]
                logit = sum(x[i] * w[i][j] * z[j] for i in range(5) for j in range(5)) / 2 - 1.0
                expected.append(1 / (1 + math.exp(-logit)))
                actions.append((f"o{k}", tuple((f"z{j}", z[j]) for j in range(5))))
            context = tuple((f"x{i}", x[i]) for i in range(5))
            out.append(Round(context, tuple(actions), tuple(expected), True))
        return out


class SparseText:
    """Many sparse text context features: a shopper's recent search and browse terms (20 of a vocabulary
    of 800, 8 of them from the shopper's hidden topic), 8 catalog actions, one per topic."""

    name = "sparse"
    request_actions = False
    n_rounds = 5000
    topics = 8
    vocabulary = 100  # terms per topic
    on_topic, off_topic = 0.5, 0.05

    def rounds(self, seed: int) -> list[Round]:
        rng = random.Random(f"sparse-{seed}")
        actions = tuple((f"topic{t}", (("topic", f"t{t}"),)) for t in range(self.topics))
        out: list[Round] = []
        for _ in range(self.n_rounds):
            topic = rng.randrange(self.topics)
            terms = {f"w{topic * self.vocabulary + rng.randrange(self.vocabulary)}" for _ in range(8)}
            while len(terms) < 20:
                terms.add(f"w{rng.randrange(self.topics * self.vocabulary)}")
            context = tuple(sorted((term, "1") for term in terms))
            expected = tuple(self.on_topic if t == topic else self.off_topic for t in range(self.topics))
            out.append(Round(context, actions, expected, True))
        return out


PROBLEMS: dict[str, Problem] = {p.name: p for p in (Digits(), Linear(), SparseText())}
