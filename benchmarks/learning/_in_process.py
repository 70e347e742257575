"""Playing a problem in process: Tailor's own policy path (the VW examples the service builds, its
`VWPolicy`, its reward-to-cost mapping), and the VW reference through pyvw's public API.

Both draw from the PMF with their own seeded generator and learn right after each round."""

from __future__ import annotations

import random
from collections.abc import Sequence

from vowpalwabbit import pyvw

from policies import LearningSpec, VWPolicy, action_line, encode_features, reward_to_cost, shared_line

from ._problems import Problem, Round


def examples(rounds: Sequence[Round]) -> list[tuple[str, list[str]]]:
    """The (shared line, action lines) Tailor builds for each round (no session features: fresh sessions)."""
    return [(shared_line(encode_features(r.context)), [action_line(a, dict(f)) for a, f in r.actions]) for r in rounds]


def _draw(rng: random.Random, pmf: Sequence[float]) -> int:
    return rng.choices(range(len(pmf)), pmf)[0]


def play_tailor(problem: Problem, seed: int, spec: LearningSpec) -> float:
    """Mean reward of Tailor's policy path with `spec` over the problem's rounds for `seed`."""
    rounds = problem.rounds(seed)
    policy = VWPolicy(spec)
    rng = random.Random(f"draw-{seed}")
    total = 0.0
    try:
        for i, (r, (shared, actions)) in enumerate(zip(rounds, examples(rounds), strict=True)):
            pmf = policy.predict(shared, actions)
            chosen = _draw(rng, pmf)
            reward = r.reward(problem.name, seed, i, chosen)
            total += reward
            policy.learn(shared, actions, chosen, reward_to_cost(reward, 0.0, 1.0), pmf[chosen])
    finally:
        policy.close()
    return total / len(rounds)


def play_reference(problem: Problem, seed: int, vw_args: str) -> float:
    """Mean reward of in-process VW with `vw_args` (cost = -reward) on the same rounds and examples."""
    rounds = problem.rounds(seed)
    vw = pyvw.Workspace(vw_args + " --quiet", enable_logging=False)
    rng = random.Random(f"draw-{seed}")
    total = 0.0
    try:
        for i, (r, (shared, actions)) in enumerate(zip(rounds, examples(rounds), strict=True)):
            pmf = vw.predict([shared, *actions])
            chosen = _draw(rng, pmf)
            reward = r.reward(problem.name, seed, i, chosen)
            total += reward
            lines = [shared] + [
                (f"0:{-reward}:{pmf[chosen]} " if k == chosen else "") + a for k, a in enumerate(actions)
            ]
            vw.learn(lines)
    finally:
        vw.finish()
    return total / len(rounds)


def oracle(problem: Problem, seed: int) -> float:
    rounds = problem.rounds(seed)
    return sum(r.best for r in rounds) / len(rounds)


def uniform(problem: Problem, seed: int) -> float:
    rounds = problem.rounds(seed)
    return sum(sum(r.expected) / len(r.expected) for r in rounds) / len(rounds)
