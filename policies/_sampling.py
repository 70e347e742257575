"""Seeded sampling: the event id alone decides which action is drawn from a PMF.

Replaying a decision (same event id, same model, same features) draws the same action, which makes
decisions reproducible for debugging and for off-policy evaluation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

_SCALE = 1.0 / 2**64


def uniform_from_id(event_id: str) -> float:
    """A number in [0, 1) fixed by the event id."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") * _SCALE


def sample_index(pmf: Sequence[float], event_id: str) -> int:
    """Index drawn from pmf (which need not sum exactly to 1) with the event id as the seed."""
    total = sum(pmf)
    target = uniform_from_id(event_id) * total
    running = 0.0
    last_positive = 0
    for i, p in enumerate(pmf):
        if p > 0.0:
            running += p
            last_positive = i
            if target < running:
                return i
    return last_positive


def in_holdout(session_id: str, share: float) -> bool:
    """Whether a session belongs to a holdout of `share` (0..1): fixed by the session id alone, so every replica
    agrees and a session stays in (or out of) the holdout for its lifetime. Holdouts nest: a session held out at
    share 0.05 is held out at 0.1 too, so decision points with different shares hold out the same shoppers first."""
    return share > 0.0 and uniform_from_id("holdout\x00" + session_id) < share
