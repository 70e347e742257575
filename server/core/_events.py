"""Behaviour events as Tailor knows them once validated: the event kinds and one `TrackedEvent`.

The gRPC face turns `tailor.v1.SessionEvent`s into these; session state folds them; catalogs name the
kinds in their reward rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EventKind = Literal["page_view", "product_view", "click", "add_to_cart", "remove_from_cart", "search", "purchase"]
EVENT_KINDS: tuple[EventKind, ...] = (
    "page_view",
    "product_view",
    "click",
    "add_to_cart",
    "remove_from_cart",
    "search",
    "purchase",
)


@dataclass(slots=True)
class TrackedEvent:
    """A validated behaviour event."""

    session_id: str
    kind: EventKind
    timestamp: float
    product_id: str = ""
    category: str = ""
    price: float = 0.0
    discount: float = 0.0
    id: str = ""
