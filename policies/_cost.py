"""Reward-to-cost mapping: the one place a business reward becomes a VW cost.

VW minimises cost. A reward r in the decision point's range [lo, hi] maps to cost -(r - lo)/(hi - lo)
in [-1, 0], and VW is told those bounds (``--cb_min_cost -1 --cb_max_cost 0``). Negated rewards
learned markedly better than 1 - r on the digits bake-off with SquareCB (0.775 vs 0.658 mean reward),
and fixing the bounds in one place keeps them consistent with whatever range a catalog declares.
"""

from __future__ import annotations

COST_BOUNDS_ARGS = "--cb_min_cost -1 --cb_max_cost 0"


def reward_to_cost(reward: float, low: float, high: float) -> float:
    """Cost in [-1, 0] for a reward in [low, high]; a reward outside is clamped (callers validate first)."""
    scaled = (reward - low) / (high - low)
    return -min(1.0, max(0.0, scaled))
