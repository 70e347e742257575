"""Per-session context: behaviour events folded into a small, bounded state per shopper session.

`SessionState` keeps only aggregates (counts, decayed category weights, cart, recent decisions), never
the raw event stream, so memory per session is bounded whatever a gateway sends. `SessionStore` is the
interface both backends implement (`_memory.py`, `_redis.py`); `server/sessions/_intent.py` turns a
state into features.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from server.core._events import TrackedEvent

#: Category affinity halves every this many seconds without a new event in the category.
CATEGORY_HALF_LIFE_SECONDS = 600.0
_DECAY = math.log(2) / CATEGORY_HALF_LIFE_SECONDS
MAX_CATEGORIES = 32
MAX_CART_ITEMS = 200
MAX_SEEN_EVENT_IDS = 512
MAX_OPEN_DECISIONS = 64
MAX_SHOWN = 256


@dataclass(slots=True)
class OpenDecision:
    """A decision this session was shown, for crediting it with rewards derived from later events."""

    event_id: str
    decision_point: str
    decided_at: float


@dataclass(slots=True)
class SessionState:
    session_id: str
    started_at: float
    last_event_at: float
    last_seen: float  # server time of the last update, for the idle TTL
    events: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    gap_total: float = 0.0
    gaps: int = 0
    last_add_to_cart_at: float | None = None
    cart: dict[str, float] = field(default_factory=dict)  # product id -> price
    categories: dict[str, tuple[float, float]] = field(default_factory=dict)  # category -> (weight, as of)
    priced: int = 0
    price_log_total: float = 0.0
    discount_total: float = 0.0
    # Priced products seen on sale; None for a Redis session written before this count existed (format 1):
    # unknown, never a wrong 0.
    discounted: int | None = 0
    purchase_value: float = 0.0
    seen_ids: OrderedDict[str, None] = field(default_factory=OrderedDict)
    decisions: list[OpenDecision] = field(default_factory=list)
    shown: dict[str, dict[str, int]] = field(default_factory=dict)  # decision point -> action -> times
    # The intent features that change only with events, and with what was shown, as VW text: filled by
    # `_intent.intent_text`, cleared by whatever changes them (not part of the state itself).
    timeless_text: str | None = field(default=None, init=False, repr=False, compare=False)
    shown_text: str | None = field(default=None, init=False, repr=False, compare=False)

    def apply(self, event: TrackedEvent) -> bool:
        """Fold one event in; False if it is a duplicate (same id seen in this session)."""
        if event.id:
            if event.id in self.seen_ids:
                return False
            self.seen_ids[event.id] = None
            if len(self.seen_ids) > MAX_SEEN_EVENT_IDS:
                self.seen_ids.popitem(last=False)
        self.timeless_text = None
        t = event.timestamp
        if self.events == 0:
            self.started_at = self.last_event_at = t
        elif t >= self.last_event_at:
            self.gap_total += t - self.last_event_at
            self.gaps += 1
            self.last_event_at = t
        else:  # out of order: it still counts, and may move the session's start back
            self.started_at = min(self.started_at, t)
        self.events += 1
        kind = event.kind
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if event.category:
            self._touch_category(event.category, t)
        if event.price > 0 and kind in ("product_view", "click", "add_to_cart"):
            self.priced += 1
            self.price_log_total += math.log1p(event.price)
            self.discount_total += event.discount
            if event.discount > 0 and self.discounted is not None:
                self.discounted += 1
        if kind == "add_to_cart":
            self.last_add_to_cart_at = max(t, self.last_add_to_cart_at or t)
            if event.product_id and (event.product_id in self.cart or len(self.cart) < MAX_CART_ITEMS):
                self.cart[event.product_id] = event.price
        elif kind == "remove_from_cart":
            self.cart.pop(event.product_id, None)
        elif kind == "purchase":
            self.purchase_value += event.price
            self.cart.clear()
        return True

    def _touch_category(self, category: str, t: float) -> None:
        weight, as_of = self.categories.get(category, (0.0, t))
        if t >= as_of:
            weight = weight * math.exp(-_DECAY * (t - as_of)) + 1.0
            as_of = t
        else:
            weight += math.exp(-_DECAY * (as_of - t))
        self.categories[category] = (weight, as_of)
        if len(self.categories) > MAX_CATEGORIES:
            weakest = min(self.categories, key=lambda c: self.categories[c][0])
            del self.categories[weakest]

    def category_weights(self, now: float) -> dict[str, float]:
        """Each category's affinity decayed to `now`."""
        return {c: w * math.exp(-_DECAY * max(0.0, now - t)) for c, (w, t) in self.categories.items()}

    def record_decision(self, decision: OpenDecision, action_id: str, open_for_rewards: bool = True) -> None:
        if open_for_rewards:
            self.decisions.append(decision)
            if len(self.decisions) > MAX_OPEN_DECISIONS:
                del self.decisions[0]
        shown = self.shown.get(decision.decision_point)
        if shown is None:
            shown = self.shown[decision.decision_point] = {}
        if action_id in shown or sum(len(s) for s in self.shown.values()) < MAX_SHOWN:
            shown[action_id] = shown.get(action_id, 0) + 1
            self.shown_text = None


class SessionStore(Protocol):
    """Where session context lives. The Redis backend implements the same interface."""

    async def apply(
        self, session_id: str, events: Sequence[TrackedEvent], now: float
    ) -> tuple[list[int], list[OpenDecision]]:
        """Fold one session's events in order; returns the indexes of those applied (not duplicates) and the
        session's open decisions."""
        ...

    async def apply_batch(
        self, events: Mapping[str, Sequence[TrackedEvent]], now: float
    ) -> dict[str, tuple[list[int], list[OpenDecision]]]:
        """`apply` for several sessions at once (one round trip on Redis)."""
        ...

    async def record_decision(self, session_id: str, decision: OpenDecision, action_id: str, logged: bool) -> None:
        """Remember what the session was shown and, if `logged`, keep the decision open for rule rewards."""
        ...

    async def drop_decisions(self, session_id: str, decisions: Sequence[OpenDecision]) -> None:
        """Remove decisions that can earn nothing more from the session's open list."""
        ...

    async def load(self, session_id: str, now: float) -> SessionState | None: ...

    async def delete(self, session_id: str) -> SessionState | None: ...
