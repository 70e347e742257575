"""Off-policy estimates on a synthetic bandit whose true values are known exactly.

Three contexts, three actions, Bernoulli rewards: every policy's value is a finite sum, so estimates and
intervals are checked against the truth, over seeded repetitions where coverage is the question.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from policies import Estimate, OffPolicyEvaluation, difference_interval, mean_interval

Floats = npt.NDArray[np.float64]

CONTEXTS = np.array([0.5, 0.3, 0.2])  # P(context)
MEANS = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.2], [0.3, 0.3, 0.7]])  # E[reward | context, action]
LOGGING = np.array([[0.2, 0.6, 0.2], [0.6, 0.2, 0.2], [0.2, 0.2, 0.6]])  # near-greedy, exploring
TARGETS: dict[str, Floats] = {
    "uniform": np.full((3, 3), 1 / 3),
    "fixed": np.tile([1.0, 0.0, 0.0], (3, 1)),
    "greedy": np.eye(3)[MEANS.argmax(axis=1)],
    "logging": LOGGING,
}


def true_value(target: Floats, means: Floats = MEANS) -> float:
    return float(CONTEXTS @ (target * means).sum(axis=1))


def log(rng: np.random.Generator, n: int) -> tuple[Any, Any, Floats]:
    """n decisions of the logging policy: contexts, actions, Bernoulli rewards."""
    contexts = rng.choice(3, size=n, p=CONTEXTS)
    actions = (rng.random(n)[:, None] >= LOGGING[contexts].cumsum(axis=1)).sum(axis=1).clip(max=2)
    rewards = (rng.random(n) < MEANS[contexts, actions]).astype(float)
    return contexts, actions, rewards


def tabular_model(rng: np.random.Generator, n: int) -> Floats:
    """Mean reward per (context, action) fit on a log of its own: imperfect, and not the evaluated data."""
    contexts, actions, rewards = log(rng, n)
    total = np.zeros((3, 3))
    count = np.zeros((3, 3))
    np.add.at(total, (contexts, actions), rewards)
    np.add.at(count, (contexts, actions), 1)
    return np.where(count > 0, total / np.maximum(count, 1), rewards.mean())


def evaluate(
    target: Floats,
    contexts: Any,
    actions: Any,
    rewards: Floats,
    model: Floats | None = None,
) -> OffPolicyEvaluation:
    evaluation = OffPolicyEvaluation()
    for c, a, r in zip(contexts.tolist(), actions.tolist(), rewards.tolist(), strict=True):
        if model is None:
            evaluation.add(r, LOGGING[c, a], target[c, a])
        else:
            evaluation.add(
                r,
                LOGGING[c, a],
                target[c, a],
                predicted_reward_logged=float(model[c, a]),
                predicted_value_target=float(target[c] @ model[c]),
            )
    return evaluation


def all_three(evaluation: OffPolicyEvaluation) -> list[Estimate]:
    return [evaluation.ips(), evaluation.snips(), evaluation.dr()]


@pytest.mark.parametrize("name", list(TARGETS))
def test_every_estimator_is_unbiased_and_its_intervals_cover_the_truth(name: str) -> None:
    target, truth = TARGETS[name], true_value(TARGETS[name])
    rng = np.random.default_rng(7)
    repeats, n = 80, 400
    errors: dict[str, list[float]] = {"ips": [], "snips": [], "dr": []}
    covered = dict.fromkeys(errors, 0)
    for _ in range(repeats):
        model = tabular_model(rng, 300)
        for estimate in all_three(evaluate(target, *log(rng, n), model)):
            errors[estimate.method].append(estimate.value - truth)
            covered[estimate.method] += estimate.low <= truth <= estimate.high
            assert estimate.n == n
            assert estimate.low <= estimate.high
    for method, errs in errors.items():
        mean, spread = float(np.mean(errs)), float(np.std(errs, ddof=1))
        assert abs(mean) < 4 * spread / math.sqrt(repeats) + 0.005, (method, mean, spread)  # ~unbiased
        assert spread < 0.1, (method, spread)  # and informative at 400 decisions
        assert covered[method] / repeats >= 0.85, (method, covered[method])


def test_one_large_log_lands_near_the_truth() -> None:
    rng = np.random.default_rng(11)
    model = tabular_model(rng, 5000)
    data = log(rng, 20_000)
    for name, target in TARGETS.items():
        truth = true_value(target)
        for estimate in all_three(evaluate(target, *data, model)):
            assert abs(estimate.value - truth) < 0.02, (name, estimate)
            assert estimate.high - estimate.low < 0.06, (name, estimate)


def test_a_perfect_reward_model_makes_the_dr_interval_much_tighter_than_ips() -> None:
    rng = np.random.default_rng(3)
    contexts, actions, _ = log(rng, 5000)
    # rewards close to their means: what a perfect model leaves to DR's correction is only this noise
    rewards = MEANS[contexts, actions] + rng.uniform(-0.05, 0.05, size=len(contexts))
    target = TARGETS["greedy"]
    evaluation = evaluate(target, contexts, actions, rewards, model=MEANS)
    ips, dr = evaluation.ips(), evaluation.dr()
    truth = true_value(target)
    assert dr.low <= truth <= dr.high
    assert dr.high - dr.low < 0.25 * (ips.high - ips.low), (dr, ips)


def test_snips_equals_ips_when_the_target_is_the_logging_policy() -> None:
    contexts, actions, rewards = log(np.random.default_rng(5), 3000)
    evaluation = evaluate(LOGGING, contexts, actions, rewards)
    ips, snips = evaluation.ips(), evaluation.snips()
    assert math.isclose(ips.value, snips.value, rel_tol=1e-12)
    assert math.isclose(ips.value, float(rewards.mean()), rel_tol=1e-12)  # every weight is 1
    assert (ips.method, ips.interval, snips.method, snips.interval) == ("ips", "gaussian", "snips", "cressie-read")


def _counters(values: Floats) -> tuple[float, float, float]:
    return float(len(values)), float(values.sum()), float((values**2).sum())


def test_mean_interval_from_counters_agrees_with_the_streaming_estimator() -> None:
    rng = np.random.default_rng(9)
    contexts, actions, rewards = log(rng, 4000)
    target, model = TARGETS["uniform"], tabular_model(rng, 2000)
    evaluation = evaluate(target, contexts, actions, rewards, model)
    weights = target[contexts, actions] / LOGGING[contexts, actions]
    ips_terms = weights * rewards
    dr_terms = (target[contexts] * model[contexts]).sum(axis=1) + weights * (rewards - model[contexts, actions])
    for streamed, terms in ((evaluation.ips(0.1), ips_terms), (evaluation.dr(0.1), dr_terms)):
        # two servers' counters, summed the way a dashboard adds them up
        first, second = _counters(terms[:1500]), _counters(terms[1500:])
        count, total, squares = (x + y for x, y in zip(first, second, strict=True))
        summed = mean_interval(count, total, squares, alpha=0.1)
        assert 0.0 < summed.low < summed.high < 1.0  # so the reward-range clip does not apply
        for field in ("value", "low", "high"):
            assert math.isclose(getattr(summed, field), getattr(streamed, field), rel_tol=1e-9), field
        assert summed.n == streamed.n == 4000


def test_difference_interval_is_the_difference_of_means_with_their_variances_added() -> None:
    rng = np.random.default_rng(13)
    served = (rng.random(6000) < 0.25).astype(float)
    holdout = (rng.random(1500) < 0.20).astype(float)
    lift = difference_interval(_counters(served), _counters(holdout), alpha=0.05)
    a, b = mean_interval(*_counters(served)), mean_interval(*_counters(holdout))
    assert math.isclose(lift.value, served.mean() - holdout.mean(), rel_tol=1e-12)
    half_a, half_b = (a.high - a.low) / 2, (b.high - b.low) / 2
    assert math.isclose((lift.high - lift.low) / 2, math.hypot(half_a, half_b), rel_tol=1e-9)
    assert lift.low <= 0.05 <= lift.high
    assert (lift.n, lift.method) == (7500, "difference")
    flipped = difference_interval(_counters(holdout), _counters(served))
    assert math.isclose(flipped.value, -lift.value) and math.isclose(flipped.low, -lift.high)


def test_difference_intervals_cover_the_true_lift() -> None:
    rng = np.random.default_rng(17)
    covered = 0
    for _ in range(400):
        served = (rng.random(800) < 0.3).astype(float)
        holdout = (rng.random(200) < 0.25).astype(float)
        lift = difference_interval(_counters(served), _counters(holdout))
        covered += lift.low <= 0.05 <= lift.high
    assert covered / 400 >= 0.92


def test_a_narrower_alpha_gives_a_wider_interval() -> None:
    evaluation = evaluate(
        TARGETS["uniform"], *log(np.random.default_rng(21), 1000), tabular_model(np.random.default_rng(22), 500)
    )
    for method in ("ips", "snips", "dr"):
        wide, narrow = getattr(evaluation, method)(0.01), getattr(evaluation, method)(0.2)
        assert wide.low < narrow.low <= narrow.high < wide.high, method
        assert wide.value == narrow.value


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((0.5, 0.0, 0.5), {}, "logged_probability must be in"),
        ((0.5, 1.5, 0.5), {}, "logged_probability must be in"),
        ((0.5, -0.1, 0.5), {}, "logged_probability must be in"),
        ((0.5, math.nan, 0.5), {}, "logged_probability must be finite"),
        ((0.5, 0.5, 1.1), {}, "target_probability must be in"),
        ((0.5, 0.5, -0.1), {}, "target_probability must be in"),
        ((0.5, 0.5, math.inf), {}, "target_probability must be finite"),
        ((math.nan, 0.5, 0.5), {}, "reward must be finite"),
        ((1.5, 0.5, 0.5), {}, "outside the reward range"),
        ((-0.5, 0.5, 0.5), {}, "outside the reward range"),
        (("1", 0.5, 0.5), {}, "reward must be a number"),
        ((0.5, 0.5, 0.5), {"predicted_reward_logged": 0.3}, "both predicted_reward_logged and"),
        ((0.5, 0.5, 0.5), {"predicted_value_target": 0.3}, "both predicted_reward_logged and"),
        (
            (0.5, 0.5, 0.5),
            {"predicted_reward_logged": math.nan, "predicted_value_target": 0.3},
            "predicted_reward_logged must be finite",
        ),
    ],
)
def test_add_rejects_bad_input_naming_the_problem(args: tuple[Any, ...], kwargs: dict[str, Any], message: str) -> None:
    evaluation = OffPolicyEvaluation()
    with pytest.raises(ValueError, match=message):
        evaluation.add(*args, **kwargs)
    assert evaluation.n == 0  # nothing half-added


def test_estimates_need_data_a_valid_alpha_and_a_reward_model_for_dr() -> None:
    evaluation = OffPolicyEvaluation()
    for method in (evaluation.ips, evaluation.snips, evaluation.dr):
        with pytest.raises(ValueError, match="at least 2 decisions, got 0"):
            method()
    evaluation.add(1.0, 0.5, 0.0)
    evaluation.add(0.0, 0.5, 0.0)
    with pytest.raises(ValueError, match="alpha must be in"):
        evaluation.ips(alpha=1.0)
    with pytest.raises(ValueError, match="SNIPS is undefined"):
        evaluation.snips()
    with pytest.raises(ValueError, match="dr\\(\\) needs a reward model"):
        evaluation.dr()
    with pytest.raises(ValueError, match="pass them on every decision or on none"):
        evaluation.add(1.0, 0.5, 0.5, predicted_reward_logged=0.5, predicted_value_target=0.5)


def test_the_reward_range_is_checked_and_used() -> None:
    with pytest.raises(ValueError, match="r_min < r_max"):
        OffPolicyEvaluation(1.0, 1.0)
    with pytest.raises(ValueError, match="r_max must be finite"):
        OffPolicyEvaluation(0.0, math.inf)
    evaluation = OffPolicyEvaluation(-1.0, 5.0)
    evaluation.add(5.0, 0.5, 0.5)
    evaluation.add(-1.0, 0.5, 0.5)
    for estimate in (evaluation.ips(), evaluation.snips()):
        assert -1.0 <= estimate.low <= estimate.value == 2.0 <= estimate.high <= 5.0


@pytest.mark.parametrize(
    ("counters", "message"),
    [
        ((0, 0.0, 0.0), "count of at least 2, got 0"),
        ((1, 1.0, 1.0), "count of at least 2, got 1"),
        ((2.5, 1.0, 1.0), "count must be a whole number"),
        ((10, math.nan, 1.0), "total must be finite"),
        ((10, 5.0, math.inf), "total_squares must be finite"),
        ((10, 5.0, 1.0), "not the counters of one sample"),
    ],
)
def test_counter_helpers_reject_inconsistent_counters(counters: tuple[float, float, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mean_interval(*counters)
    with pytest.raises(ValueError, match=f"b: .*{message}"):
        difference_interval((10, 5.0, 5.0), counters)
    with pytest.raises(ValueError, match="alpha must be in"):
        mean_interval(10, 5.0, 5.0, alpha=0.0)


def test_estimates_are_frozen() -> None:
    estimate = mean_interval(10, 5.0, 5.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        estimate.value = 1.0  # type: ignore[misc]


def test_importing_policies_does_not_load_vw_estimators() -> None:
    """vw-estimators loads scipy.stats (~0.5 s): every server start would pay it if `policies` imported it."""
    code = "import sys, policies; print(sorted(m for m in ('estimators', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
