"""The exploration floor: actions a model has barely learned get at least a minimum probability.

A catalog action added to a trained model starts with weights no better than zero, so a greedy-leaning
policy may almost never try it. Raising it to a floor until the model has learned it a few times lets the
model find out; the probability served (and logged, and learned with) is the floored one, so off-policy
learning stays unbiased.
"""

from __future__ import annotations

from collections.abc import Sequence


def apply_floor(pmf: Sequence[float], floored: Sequence[int], probability: float) -> list[float]:
    """`pmf` with every index in `floored` raised to at least `probability` (capped at an equal share, so
    the floors never need more than all the mass). The mass above the floors keeps its proportions: each
    action's excess over its floor (zero for the others) is scaled so the whole sums to 1."""
    n = len(pmf)
    if not floored or probability <= 0 or n == 0:
        return list(pmf)
    floor = min(probability, 1.0 / n)
    lifted = set(floored)
    floors = [floor if i in lifted else 0.0 for i in range(n)]
    excess = [max(p, f) - f for p, f in zip(pmf, floors, strict=True)]
    free = 1.0 - sum(floors)
    total = sum(excess)
    if total <= 0:  # nothing above the floors: the floored actions share what is left equally
        return [f + free / len(lifted) if f else 0.0 for f in floors]
    scale = free / total
    return [f + e * scale for f, e in zip(floors, excess, strict=True)]
