"""The synthetic shopper model behind `tailor simulate` (documented in benchmarks/simulate/README.md).

Every shopper has a hidden *intent* (how they shop today) that decides which home layout converts
them best. The intent never reaches the server: it shows only in the behaviour events the shopper
sends before the decision (pace, what they click, search, look at, pay and add to the cart), drawn
with shopper-level noise so that two shoppers with one intent do not look alike. The request's
demographics are only *weakly* tied to intent, so a rule keyed on them cannot do much better than a
single layout for everyone: the gap between that rule and the oracle is what the service has to
earn by reading behaviour.

Everything here is pure and seeded (no gRPC): the same seed gives the same shoppers, and each
shopper's outcome under *every* layout is fixed up front (one uniform draw compared with that
layout's conversion probability), so the service and the baselines are scored on identical shoppers.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import product
from typing import Literal

#: The four layouts of catalogs/home_layout.yaml, with the same features.
LAYOUTS: dict[str, dict[str, str | float]] = {
    "grid": {"style": "grid", "density": 24, "imagery": "product"},
    "carousel": {"style": "carousel", "density": 6, "imagery": "lifestyle"},
    "editorial": {"style": "editorial", "density": 4, "imagery": "lifestyle"},
    "deals_first": {"style": "grid", "density": 16, "imagery": "product", "deals": "yes"},
}
ACTIONS: tuple[str, ...] = tuple(LAYOUTS)

BrowseKind = Literal["page_view", "product_view", "click", "search", "add_to_cart", "remove_from_cart"]
BROWSE_KINDS: tuple[BrowseKind, ...] = (
    "page_view",
    "product_view",
    "click",
    "search",
    "add_to_cart",
    "remove_from_cart",
)
CATEGORIES = ("fashion", "shoes", "home", "beauty", "electronics", "sports", "toys", "garden")
_PRICED: frozenset[str] = frozenset({"product_view", "click", "add_to_cart", "remove_from_cart"})

#: Abandoned carts per purchase: a shopper who does not buy still adds to the cart with this multiple of
#: their purchase probability (1.0: half of all carts are abandoned), so the catalog's add_to_cart rule
#: earns the decision a partial reward. Layout fit drives both, in proportion.
CART_ONLY_SHARE = 1.0


@dataclass(frozen=True, slots=True)
class Intent:
    """A hidden shopping intent: its prior, what converts it, and how it behaves before the decision.

    `conversion` is the purchase probability under each layout for a shopper with an average
    demographic lift. The behaviour fields are population means; each shopper varies around them.
    """

    name: str
    prior: float
    conversion: Mapping[str, float]
    events: float  # mean browse events before the decision
    gap_seconds: float  # median seconds between events
    mix: Mapping[BrowseKind, float]  # share of each event kind
    focus: float  # share of events in the shopper's main category
    price: float  # median price of the products they look at
    on_sale: float  # share of those products that are discounted

    @property
    def best_action(self) -> str:
        return max(ACTIONS, key=lambda a: self.conversion[a])


def _mix(**shares: float) -> dict[BrowseKind, float]:
    """An event mix, checked to name every browse kind once."""
    assert set(shares) == set(BROWSE_KINDS), sorted(shares)
    return {k: shares[k] for k in BROWSE_KINDS}


INTENTS: tuple[Intent, ...] = (
    Intent(
        name="mission",  # knows what they want: search, scan a dense grid, add, done
        prior=0.30,
        conversion={"grid": 0.30, "carousel": 0.14, "editorial": 0.08, "deals_first": 0.17},
        events=7,
        gap_seconds=9,
        mix=_mix(page_view=0.12, product_view=0.30, click=0.26, search=0.20, add_to_cart=0.09, remove_from_cart=0.03),
        focus=0.85,
        price=60,
        on_sale=0.2,
    ),
    Intent(
        name="deal_seeker",  # hunts discounts, compares prices, adds and removes
        prior=0.25,
        conversion={"grid": 0.13, "carousel": 0.08, "editorial": 0.06, "deals_first": 0.30},
        events=13,
        gap_seconds=12,
        mix=_mix(page_view=0.14, product_view=0.40, click=0.20, search=0.06, add_to_cart=0.12, remove_from_cart=0.08),
        focus=0.5,
        price=30,
        on_sale=0.7,
    ),
    Intent(
        name="inspiration",  # browses slowly across categories, reads more than clicks
        prior=0.25,
        conversion={"grid": 0.08, "carousel": 0.16, "editorial": 0.28, "deals_first": 0.07},
        events=11,
        gap_seconds=32,
        mix=_mix(page_view=0.42, product_view=0.32, click=0.14, search=0.04, add_to_cart=0.05, remove_from_cart=0.03),
        focus=0.35,
        price=50,
        on_sale=0.2,
    ),
    Intent(
        name="premium",  # a considered, brand-led purchase: few expensive products, looked at closely
        prior=0.20,
        conversion={"grid": 0.10, "carousel": 0.26, "editorial": 0.18, "deals_first": 0.06},
        events=9,
        gap_seconds=24,
        mix=_mix(page_view=0.14, product_view=0.46, click=0.20, search=0.08, add_to_cart=0.08, remove_from_cart=0.04),
        focus=0.75,
        price=170,
        on_sale=0.1,
    ),
)
INTENT_NAMES: tuple[str, ...] = tuple(i.name for i in INTENTS)
_BY_NAME = {i.name: i for i in INTENTS}

#: Demographic attributes sent as request context, with their population shares.
DEMOGRAPHICS: dict[str, dict[str, float]] = {
    "device": {"mobile": 0.55, "desktop": 0.35, "tablet": 0.10},
    "age_band": {"18_24": 0.18, "25_34": 0.30, "35_49": 0.30, "50_plus": 0.22},
    "region": {"north": 0.25, "south": 0.25, "east": 0.25, "west": 0.25},
    "customer": {"new": 0.45, "returning": 0.55},
}

#: Weak ties between demographics and intent: log-odds shifts added to the intent prior. Deal seekers
#: skew young and new, premium shoppers older, on desktop and returning, mission shoppers returning.
#: Region carries nothing (a realistic nuisance feature).
INTENT_TILTS: dict[tuple[str, str], dict[str, float]] = {
    ("device", "desktop"): {"mission": 0.3, "premium": 0.3},
    ("device", "tablet"): {"inspiration": 0.5},
    ("age_band", "18_24"): {"deal_seeker": 0.6, "premium": -0.5},
    ("age_band", "25_34"): {"mission": 0.15},
    ("age_band", "50_plus"): {"premium": 0.5, "deal_seeker": -0.2},
    ("customer", "new"): {"deal_seeker": 0.35, "inspiration": 0.2, "mission": -0.25},
    ("customer", "returning"): {"mission": 0.25},
}

#: How much more or less likely a shopper is to buy at all (the same for every layout, so it never
#: changes which layout is best): desktop and returning shoppers buy more often.
CONVERSION_LIFT: dict[tuple[str, str], float] = {
    ("device", "mobile"): 0.9,
    ("device", "desktop"): 1.12,
    ("customer", "new"): 0.9,
    ("customer", "returning"): 1.08,
}

Segment = tuple[str, ...]


def segment_of(demographics: Mapping[str, str]) -> Segment:
    """A shopper's demographic segment: every demographic attribute, in a fixed order."""
    return tuple(demographics[k] for k in DEMOGRAPHICS)


def intent_mix(demographics: Mapping[str, str]) -> dict[str, float]:
    """P(intent | demographics): the prior tilted by the weak demographic ties."""
    logits = {i.name: math.log(i.prior) for i in INTENTS}
    for attr, value in demographics.items():
        for name, shift in INTENT_TILTS.get((attr, value), {}).items():
            logits[name] += shift
    top = max(logits.values())
    weights = {n: math.exp(v - top) for n, v in logits.items()}
    total = sum(weights.values())
    return {n: w / total for n, w in weights.items()}


def conversion_lift(demographics: Mapping[str, str]) -> float:
    lift = 1.0
    for attr, value in demographics.items():
        lift *= CONVERSION_LIFT.get((attr, value), 1.0)
    return lift


def conversion_probabilities(intent: str, demographics: Mapping[str, str]) -> dict[str, float]:
    """P(purchase | intent, demographics, layout) for every layout."""
    lift = conversion_lift(demographics)
    return {a: min(0.95, lift * p) for a, p in _BY_NAME[intent].conversion.items()}


def segment_rules() -> dict[Segment, str]:
    """The best layout for every demographic segment, from the model's exact intent mix.

    This is the strongest rule a marketer could write from demographics alone (perfect knowledge of
    each segment's intent mix); the lift is a common factor, so only the mix matters.
    """
    rules: dict[Segment, str] = {}
    for values in product(*(DEMOGRAPHICS[k] for k in DEMOGRAPHICS)):
        demographics = dict(zip(DEMOGRAPHICS, values, strict=True))
        mix = intent_mix(demographics)
        rules[values] = max(ACTIONS, key=lambda a: sum(mix[i.name] * i.conversion[a] for i in INTENTS))
    return rules


def demographic_intent_accuracy() -> float:
    """How often the likeliest intent of a shopper's segment is their intent: how weak demographics are.

    Compare with the largest prior (guessing the commonest intent for everyone).
    """
    hits = 0.0
    for values in product(*(DEMOGRAPHICS[k] for k in DEMOGRAPHICS)):
        demographics = dict(zip(DEMOGRAPHICS, values, strict=True))
        weight = math.prod(DEMOGRAPHICS[k][v] for k, v in demographics.items())
        hits += weight * max(intent_mix(demographics).values())
    return hits


def best_single_action() -> str:
    """The one layout that converts best over the whole population (the no-personalization default)."""
    expected = dict.fromkeys(ACTIONS, 0.0)
    for values in product(*(DEMOGRAPHICS[k] for k in DEMOGRAPHICS)):
        demographics = dict(zip(DEMOGRAPHICS, values, strict=True))
        weight = math.prod(DEMOGRAPHICS[k][v] for k, v in demographics.items())
        lift = conversion_lift(demographics)
        for name, share in intent_mix(demographics).items():
            for a in ACTIONS:
                expected[a] += weight * share * lift * _BY_NAME[name].conversion[a]
    return max(ACTIONS, key=expected.__getitem__)


@dataclass(frozen=True, slots=True)
class BrowseEvent:
    """One behaviour event, `seconds_before` the decision."""

    kind: BrowseKind
    seconds_before: float
    category: str = ""
    product_id: str = ""
    price: float = 0.0
    discount: float = 0.0


@dataclass(frozen=True, slots=True)
class Shopper:
    """One synthetic shopper: what the server may see (demographics, events) and what it may not."""

    index: int
    demographics: Mapping[str, str]
    intent: str
    events: tuple[BrowseEvent, ...]
    conversion: Mapping[str, float]  # P(purchase) under each layout
    luck: float  # the shopper's one uniform draw: buys under layout a iff luck < conversion[a]
    basket: tuple[str, str, float]  # (product id, category, price) bought or left in the cart

    def outcome(self, action: str) -> Literal["purchase", "cart", "none"]:
        """What the shopper does after seeing `action`: fixed by `luck`, so comparable across layouts."""
        p = self.conversion[action]
        if self.luck < p:
            return "purchase"
        if self.luck < p + CART_ONLY_SHARE * p:
            return "cart"
        return "none"


class ShopperFactory:
    """Draws shoppers from the model, reproducibly from one seed."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._count = 0

    def next(self) -> Shopper:
        rng = self._rng
        demographics = {k: _draw(rng, shares) for k, shares in DEMOGRAPHICS.items()}
        intent = _BY_NAME[_draw(rng, intent_mix(demographics))]
        events = _browse(rng, intent, demographics["device"], self._count)
        conversion = conversion_probabilities(intent.name, demographics)
        category = _main_category(events) or rng.choice(CATEGORIES)
        price = round(intent.price * math.exp(rng.gauss(0.0, 0.4)), 2)
        shopper = Shopper(
            index=self._count,
            demographics=demographics,
            intent=intent.name,
            events=events,
            conversion=conversion,
            luck=rng.random(),
            basket=(f"sku-{self._count}-buy", category, price),
        )
        self._count += 1
        return shopper


def _draw(rng: random.Random, shares: Mapping[str, float]) -> str:
    return rng.choices(list(shares), weights=list(shares.values()))[0]


def _dirichlet(rng: random.Random, mean: Mapping[BrowseKind, float], concentration: float) -> dict[BrowseKind, float]:
    draws = {k: rng.gammavariate(concentration * p, 1.0) for k, p in mean.items()}
    total = sum(draws.values()) or 1.0
    return {k: v / total for k, v in draws.items()}


@dataclass(frozen=True, slots=True)
class _Traits:
    """One shopper's own version of their intent's behaviour: how much, how fast, what, at what price."""

    count: int
    pace: float  # median seconds between events
    mix: dict[BrowseKind, float]
    price: float
    focus: float
    main_category: str


def _traits(rng: random.Random, intent: Intent, device: str) -> _Traits:
    """Shopper-level noise on every trait keeps the intents overlapping: behaviour tells a learner a
    lot about intent, never everything. Mobile shoppers tap faster."""
    return _Traits(
        count=2 + _poisson(rng, intent.events * math.exp(rng.gauss(0.0, 0.35))),
        pace=intent.gap_seconds * math.exp(rng.gauss(0.0, 0.45)) * (0.8 if device == "mobile" else 1.0),
        mix=_dirichlet(rng, intent.mix, concentration=12.0),
        price=intent.price * math.exp(rng.gauss(0.0, 0.35)),
        focus=min(1.0, max(0.0, intent.focus + rng.gauss(0.0, 0.12))),
        main_category=rng.choice(CATEGORIES),
    )


def _browse(rng: random.Random, intent: Intent, device: str, index: int) -> tuple[BrowseEvent, ...]:
    """The shopper's behaviour before the decision, oldest first, ending a few seconds before it."""
    traits = _traits(rng, intent, device)
    gaps = [traits.pace * math.exp(rng.gauss(0.0, 0.6)) for _ in range(traits.count - 1)]
    offset = rng.expovariate(1 / 4.0) + sum(gaps)  # the last event a few seconds before the decision
    kinds, weights = list(traits.mix), list(traits.mix.values())
    cart: list[str] = []
    out: list[BrowseEvent] = []
    for n in range(traits.count):
        kind: BrowseKind = rng.choices(kinds, weights=weights)[0]
        if kind == "remove_from_cart" and not cart:
            kind = "product_view"  # nothing to remove yet: they look at one more product instead
        category = traits.main_category if rng.random() < traits.focus else rng.choice(CATEGORIES)
        if kind in _PRICED:
            product_id = cart.pop() if kind == "remove_from_cart" else f"sku-{index}-{n}"
            if kind == "add_to_cart":
                cart.append(product_id)
            discount = round(rng.uniform(0.15, 0.5), 2) if rng.random() < intent.on_sale else 0.0
            price = round(traits.price * math.exp(rng.gauss(0.0, 0.4)), 2)
            out.append(BrowseEvent(kind, offset, category, product_id, price, discount))
        else:
            out.append(BrowseEvent(kind, offset, category))
        if n < traits.count - 1:
            offset -= gaps[n]
    return tuple(out)


def _poisson(rng: random.Random, lam: float) -> int:
    """Knuth's method: fine for the small means used here."""
    limit = math.exp(-lam)
    k, p = 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _main_category(events: tuple[BrowseEvent, ...]) -> str:
    counts: dict[str, int] = {}
    for e in events:
        if e.category:
            counts[e.category] = counts.get(e.category, 0) + 1
    return max(counts, key=counts.__getitem__) if counts else ""
