"""The benchmark's world: `tailor simulate`'s shoppers, with every policy's true value known exactly.

A context is a shopper's demographics (device, age band, region, customer) and hidden intent: 3 x 4 x 4 x
2 x 4 = 384 contexts, with the simulator's own probabilities (demographic shares times
`intent_mix`). The simulator fixes each shopper's purchase probability under each of the 4 layouts
(`conversion_probabilities`) and their outcome from one uniform draw (`Shopper.outcome`): purchase
below p, add to cart only below p + CART_ONLY_SHARE * p, else nothing. The simulator's catalog turns
those into rewards (purchase 1.0, add to cart 0.3, aggregated by max), so the expected reward of every
context and layout, and with it every policy's value, is a finite sum: no sampling error in the truth.

Shoppers are drawn here with numpy from the same probabilities rather than through `ShopperFactory`,
which would also draw browse events that no policy below looks at (and take most of the run).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import product

import numpy as np
import numpy.typing as npt

from server.tools.simulator import catalog_document
from server.tools.simulator._shoppers import (
    ACTIONS,
    CART_ONLY_SHARE,
    DEMOGRAPHICS,
    INTENT_NAMES,
    best_single_action,
    conversion_probabilities,
    intent_mix,
    segment_rules,
)

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

#: The exploration of the logging policy: epsilon-greedy around the best segment rule.
EPSILON = 0.2
TARGETS = ("uniform", "baseline", "greedy", "logging")


def _rewards() -> tuple[float, float]:
    """(purchase, add-to-cart-only) rewards from the simulator's catalog (aggregation max: a purchase
    also sends add_to_cart, and the larger reward wins)."""
    policy = catalog_document()["policy"]
    assert isinstance(policy, dict) and policy["aggregation"] == "max", policy
    rules = {rule["event"]: float(rule["reward"]) for rule in policy["reward_rules"]}
    return max(rules["purchase"], rules["add_to_cart"]), rules["add_to_cart"]


@dataclass(frozen=True)
class Environment:
    """Contexts, their probabilities, outcome probabilities and the policies, as arrays.

    Rows are contexts, columns the layouts in `ACTIONS` order.
    """

    context_probability: Floats  # (contexts,)
    intent: Ints  # (contexts,): index into INTENT_NAMES
    purchase: Floats  # (contexts, actions): P(purchase)
    cart_only: Floats  # (contexts, actions): P(add to cart, no purchase)
    reward_purchase: float
    reward_cart: float
    policies: Mapping[str, Floats]  # name -> (contexts, actions) PMF
    describe: Mapping[str, str]  # name -> what the policy is

    @property
    def mean_reward(self) -> Floats:
        """E[reward | context, action]."""
        return self.reward_purchase * self.purchase + self.reward_cart * self.cart_only

    def true_value(self, policy: str) -> float:
        """The policy's exact expected reward: sum over contexts and actions, no sampling."""
        per_context = (self.policies[policy] * self.mean_reward).sum(axis=1)
        return float(self.context_probability @ per_context)

    def log(self, rng: np.random.Generator, decisions: int) -> Logged:
        """`decisions` shoppers served by the logging policy, with their rewards."""
        contexts = rng.choice(len(self.context_probability), size=decisions, p=self.context_probability)
        cdf = np.cumsum(self.policies["logging"][contexts], axis=1)
        actions = np.minimum((rng.random(decisions)[:, None] >= cdf).sum(axis=1), len(ACTIONS) - 1)
        luck = rng.random(decisions)
        p = self.purchase[contexts, actions]
        cart = p + self.cart_only[contexts, actions]
        rewards = np.where(luck < p, self.reward_purchase, np.where(luck < cart, self.reward_cart, 0.0))
        return Logged(contexts, actions, rewards, self.policies["logging"][contexts, actions])


@dataclass(frozen=True)
class Logged:
    """One repetition's logged decisions."""

    contexts: Ints
    actions: Ints
    rewards: Floats
    propensities: Floats  # the logging policy's probability of the logged action


def build() -> Environment:
    """The shopper world and its four policies: uniform, baseline, greedy and logging."""
    reward_purchase, reward_cart = _rewards()
    rules = segment_rules()
    single = ACTIONS.index(best_single_action())
    weights, intents, purchase, cart_only, logging, greedy = [], [], [], [], [], []
    for values in product(*(DEMOGRAPHICS[k] for k in DEMOGRAPHICS)):
        demographics = dict(zip(DEMOGRAPHICS, values, strict=True))
        share = math.prod(DEMOGRAPHICS[k][v] for k, v in demographics.items())
        mix = intent_mix(demographics)
        rule = ACTIONS.index(rules[values])
        for i, intent in enumerate(INTENT_NAMES):
            conversion = conversion_probabilities(intent, demographics)
            p = np.array([conversion[a] for a in ACTIONS])
            weights.append(share * mix[intent])
            intents.append(i)
            purchase.append(p)
            cart_only.append(np.minimum(p + CART_ONLY_SHARE * p, 1.0) - p)
            logging.append(np.where(np.arange(len(ACTIONS)) == rule, 1 - EPSILON, 0.0) + EPSILON / len(ACTIONS))
            greedy.append(np.eye(len(ACTIONS))[int(np.argmax(reward_purchase * p + reward_cart * cart_only[-1]))])
    contexts = len(weights)
    policies = {
        "uniform": np.full((contexts, len(ACTIONS)), 1 / len(ACTIONS)),
        "baseline": np.tile(np.eye(len(ACTIONS))[single], (contexts, 1)),
        "greedy": np.array(greedy),
        "logging": np.array(logging),
    }
    describe = {
        "uniform": "uniform random over the 4 layouts",
        "baseline": f"always `{ACTIONS[single]}`, the best single layout",
        "greedy": "deterministic: the best layout for the shopper's intent and demographics",
        "logging": f"the logging policy itself (epsilon-greedy, epsilon {EPSILON}, around the best segment rule)",
    }
    probability = np.array(weights)
    assert math.isclose(probability.sum(), 1.0), probability.sum()
    return Environment(
        context_probability=probability / probability.sum(),
        intent=np.array(intents, dtype=np.int64),
        purchase=np.array(purchase),
        cart_only=np.array(cart_only),
        reward_purchase=reward_purchase,
        reward_cart=reward_cart,
        policies=policies,
        describe=describe,
    )


def cross_fitted_model(env: Environment, logged: Logged) -> Floats:
    """A tabular reward model per (intent, layout), cross-fitted: row i of the result holds, for
    decision i, the model's predicted reward of every layout, fit on the other half of the decisions.

    It knows the intent but not the demographic lift, so it is deliberately imperfect, like a real
    model. An (intent, layout) cell with no decisions in the fitting half falls back to that half's
    mean reward.
    """
    n = len(logged.rewards)
    half = np.arange(n) % 2  # decisions are independent, so alternating halves are random halves
    predicted = np.empty((n, len(ACTIONS)))
    intents = env.intent[logged.contexts]
    cells = len(INTENT_NAMES) * len(ACTIONS)
    for fold in (0, 1):
        fit = half != fold
        index = intents[fit] * len(ACTIONS) + logged.actions[fit]
        total = np.bincount(index, weights=logged.rewards[fit], minlength=cells)
        count = np.bincount(index, minlength=cells)
        fallback = float(logged.rewards[fit].mean())
        table = np.where(count > 0, total / np.maximum(count, 1), fallback).reshape(len(INTENT_NAMES), len(ACTIONS))
        predicted[half == fold] = table[intents[half == fold]]
    return predicted
