"""The in-process reference: plain Vowpal Wabbit on the same rounds, as the service would learn them.

It deliberately uses pyvw's public ``Workspace.predict``/``learn`` with lists of strings rather than the
service's ``VWPolicy`` (which calls pylibvw's raw parse path), so a bug in that fast path shows up as a
gap instead of being reproduced on both sides. Flags, example text and costs come from ``policies``.

Two ways to draw the action: the reference proper samples with its own seeded ``random.Random`` (an
independent run of the same algorithm on the same rounds); the *replay* draws exactly as the service
does, from the event id, so a service that learns like VW makes the very same choices, round by round.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import vowpalwabbit

from policies import Exploration, action_line, encode_features, reward_to_cost, sample_index, shared_line

from ._problem import ACTIONS, REWARD_RANGE, Round, event_id, vw_args

Draw = Callable[[int, Sequence[float]], int]
"""(round index, pmf) -> the chosen action's index."""


@dataclass(frozen=True, slots=True)
class ReferenceRun:
    mean_reward: float
    choices: list[int]


def _play(exploration: Exploration, rounds: Sequence[Round], draw: Draw) -> ReferenceRun:
    """Predict, draw, learn at once with cost = f(reward): the service's loop without the service."""
    workspace = vowpalwabbit.Workspace(f"{vw_args(exploration)} --quiet", enable_logging=False)
    actions = [action_line(a, f) for a, f in ACTIONS.items()]
    total = 0.0
    choices: list[int] = []
    try:
        for i, r in enumerate(rounds):
            shared = shared_line(encode_features(r.context))
            pmf: list[float] = workspace.predict([shared, *actions])
            chosen = draw(i, pmf)
            choices.append(chosen)
            reward = r.reward(chosen)
            total += reward
            cost = reward_to_cost(reward, *REWARD_RANGE)
            lines = [shared, *actions]
            lines[1 + chosen] = f"0:{cost!r}:{pmf[chosen]!r} {actions[chosen]}"  # VW's own probability
            workspace.learn(lines)
    finally:
        workspace.finish()
    return ReferenceRun(total / len(rounds), choices)


def run_reference(exploration: Exploration, rounds: Sequence[Round], seed: int) -> ReferenceRun:
    """In-process VW sampling with a generator seeded by `seed`: the yardstick for the service."""
    rng = random.Random(f"reference-sampling-{seed}")
    return _play(exploration, rounds, lambda _, pmf: rng.choices(range(len(pmf)), weights=pmf)[0])


def run_replay(exploration: Exploration, rounds: Sequence[Round], seed: int) -> ReferenceRun:
    """In-process VW drawing from the service's event ids: should choose exactly what the service chose."""
    return _play(exploration, rounds, lambda i, pmf: sample_index(pmf, event_id(seed, i)))
