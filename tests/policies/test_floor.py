"""The new-action exploration floor as a pure function of a PMF."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from policies import apply_floor


@st.composite
def pmfs(draw: st.DrawFn) -> list[float]:
    weights = draw(st.lists(st.floats(0, 1), min_size=1, max_size=20))
    total = sum(weights)
    return [w / total for w in weights] if total > 0 else [1 / len(weights)] * len(weights)


@given(pmfs(), st.data(), st.floats(0.001, 0.5))
def test_the_floor_lifts_what_it_must_and_keeps_a_distribution(
    pmf: list[float], data: st.DataObject, floor: float
) -> None:
    lifted = data.draw(st.lists(st.integers(0, len(pmf) - 1), unique=True))
    out = apply_floor(pmf, lifted, floor)
    assert math.isclose(sum(out), 1.0, abs_tol=1e-9)
    assert all(p >= -1e-12 for p in out)
    effective = min(floor, 1 / len(pmf))
    assert all(out[i] >= effective - 1e-9 for i in lifted)
    # the mass above the floors keeps its proportions: actions not lifted scale by one common factor
    others = [i for i in range(len(pmf)) if i not in lifted and pmf[i] > 1e-6]
    ratios = {round(out[i] / pmf[i], 6) for i in others}
    assert len(ratios) <= 1


def test_nothing_to_lift_changes_nothing() -> None:
    assert apply_floor([0.7, 0.2, 0.1], [], 0.05) == [0.7, 0.2, 0.1]
    assert apply_floor([0.7, 0.2, 0.1], [2], 0.0) == [0.7, 0.2, 0.1]
    assert apply_floor([0.7, 0.2, 0.1], [2], 0.05) == [0.7, 0.2, 0.1]  # already above its floor


def test_a_starved_action_gets_its_floor_from_the_others_in_proportion() -> None:
    out = apply_floor([0.9, 0.1, 0.0], [2], 0.05)
    assert out[2] == 0.05
    assert math.isclose(out[0] / out[1], 9.0)
