"""Session intent features: what a shopper's behaviour in this session says, as VW features.

This is the one place session state becomes features (namespace ``s``, crossed with the action
namespace so each behaviour can favour different actions). Numbers are put on a scale a linear learner
handles well: counts and durations as log1p, shares and ratios in [0, 1]. Every feature is defined in
README.md ("Session intent features"); GetSession returns exactly this list.
"""

from __future__ import annotations

import math
from math import log1p

from policies import encode_features, escape_key
from server.core import EVENT_KINDS
from server.state.sessions import SessionState

Feature = tuple[str, "str | float"]

#: Price bands by the geometric mean price of the products a shopper looked at.
PRICE_BANDS = ((25.0, "low"), (75.0, "mid"), (200.0, "high"))
TOP_CATEGORIES = 3


def _log(x: float) -> float:
    """log1p of a duration or amount that clock skew could make slightly negative."""
    return log1p(x) if x > 0.0 else 0.0


def intent_features(state: SessionState, now: float) -> list[Feature]:
    """The session's intent features as of `now`, sorted by name (GetSession shows exactly these)."""
    out = _timed(state, now) + _timeless(state) + _shown(state)
    out.sort()  # by name; a name appears once, so values are never compared
    return out


def intent_text(state: SessionState, now: float) -> str:
    """`intent_features` encoded for VW (namespace ``s``), for Decide.

    The same features, grouped (those that change with time, then those that change only with events,
    then what was shown) and sorted within each group, so the same state is the same example in every
    process. The two event-driven groups are encoded once per change of the state and cached on it:
    a Decide encodes only the handful of features that move with the clock."""
    timeless, shown = state.timeless_text, state.shown_text
    if timeless is None:
        timeless = state.timeless_text = _encode_sorted(_timeless(state))
    if shown is None:
        shown = state.shown_text = _shown_text(state)
    timed = _encode_sorted(_timed(state, now))
    return f"{timed} {timeless} {shown}" if shown else f"{timed} {timeless}"


def _encode_sorted(features: list[Feature]) -> str:
    features.sort()
    return encode_features(features)


def _timed(state: SessionState, now: float) -> list[Feature]:
    """Features that move with the clock."""
    age_seconds = max(0.0, now - state.started_at)
    age_minutes = age_seconds / 60.0
    out: list[Feature] = [
        ("session_age", _log(age_minutes)),
        ("events_per_min", _log(state.events / max(age_minutes, 0.5))),
        ("idle", _log(now - state.last_event_at)),
    ]
    searches = state.counts.get("search", 0)
    if searches:
        out.append(("search_per_min", _log(searches / max(age_minutes, 0.5))))
    if state.last_add_to_cart_at is not None:
        out.append(("since_add_to_cart", _log(now - state.last_add_to_cart_at)))
    return out


def _timeless(state: SessionState) -> list[Feature]:
    """Features that change only when an event is folded in."""
    out: list[Feature] = [("events", log1p(state.events))]
    if state.gaps:
        out.append(("gap_mean", _log(state.gap_total / state.gaps)))
    counts = state.counts
    for kind in EVENT_KINDS:
        n = counts.get(kind, 0)
        if n:
            out.append((f"n_{kind}", log1p(n)))
            out.append((f"share_{kind}", n / state.events))
    views = counts.get("page_view", 0) + counts.get("product_view", 0)
    if views:
        out.append(("ctr", min(1.0, counts.get("click", 0) / views)))
    if state.cart:
        out.append(("cart_items", log1p(len(state.cart))))
        out.append(("cart_value", _log(sum(state.cart.values()))))
    out.append(("cart", "filled" if state.cart else "empty"))
    if state.purchase_value > 0:
        out.append(("purchased_value", _log(state.purchase_value)))
    if state.priced:
        mean_log_price = state.price_log_total / state.priced
        out.append(("price_level", mean_log_price))
        out.append(("price_band", _price_band(math.expm1(mean_log_price))))
        out.append(("discount_affinity", state.discount_total / state.priced))
        if state.discounted is not None:
            out.append(("discounted_share", state.discounted / state.priced))
    if state.categories:
        # Every category decays at the same rate, so their shares do not move with the clock: weigh them
        # as of the latest category event. Strongest first, ties by name (sort by name, then stably by weight).
        weights = state.category_weights(max(as_of for _, as_of in state.categories.values()))
        total = sum(weights.values())
        top = sorted(weights)
        top.sort(key=weights.__getitem__, reverse=True)
        out.append(("top_category", top[0]))
        out.append(("category_focus", weights[top[0]] / total))
        out += [(f"category_{c}", weights[c] / total) for c in top[:TOP_CATEGORIES]]
    return out


def _shown_text(state: SessionState) -> str:
    """`_shown` encoded: times shown are small counts, so each count's text is formatted once."""
    tokens: list[str] = []
    for point, actions in state.shown.items():
        for a, n in actions.items():
            count = _COUNT_TEXT[n] if n < len(_COUNT_TEXT) else f"{log1p(n):.9g}"
            tokens.append(f"{escape_key(f'shown_{point}_{a}')}:{count}")
    tokens.sort()
    return " ".join(tokens)


#: log1p(n) as `encode_features` writes it, for the counts a session's `shown` holds.
_COUNT_TEXT = tuple(f"{log1p(n):.9g}" for n in range(1024))


def _shown(state: SessionState) -> list[Feature]:
    """What this session was already shown, per decision point and action (changes with each decision)."""
    out: list[Feature] = []
    for point, actions in state.shown.items():
        out += [(f"shown_{point}_{a}", log1p(n)) for a, n in actions.items()]
    return out


def _price_band(price: float) -> str:
    for limit, band in PRICE_BANDS:
        if price < limit:
            return band
    return "premium"
