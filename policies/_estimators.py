"""Off-policy estimates with confidence intervals: what a policy would have earned on logged decisions.

Every logged decision records the reward, the probability with which the logging (served) policy chose
the logged action, and — for the policy being evaluated, the *target* — the probability with which it
would have chosen that same action. Their ratio, the importance weight `w = target / logged`, turns the
logged rewards into an estimate of the target's mean reward:

- **IPS** (inverse propensity scoring): the mean of `w * r`. Unbiased; its variance grows with the
  weights, so a target far from the logging policy is estimated noisily.
- **SNIPS** (self-normalised IPS): `sum(w * r) / sum(w)`. Slightly biased for few decisions, but it
  cannot leave the reward range and usually has lower variance than IPS.
- **DR** (doubly robust): a reward model's prediction of the target's value, corrected by the
  importance-weighted error of that model on the logged action. Unbiased whatever the model (the
  correction removes its error on average); the better the model, the smaller the variance.

The point estimates of IPS and SNIPS and their intervals come from vw-estimators, the estimator library
of the Vowpal Wabbit project (`estimators.bandits`); DR, the summary-counter helpers and the input
checks are written here, because vw-estimators has no DR and checks its input with asserts (which
`python -O` removes) or not at all.

Two ways in: `OffPolicyEvaluation` streams decisions for one target policy (the evaluation command and
the console); `mean_interval` and `difference_interval` work from count / sum / sum-of-squares
counters, which several servers can export and a dashboard can add up before computing the interval.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from statistics import NormalDist

__all__ = ["Estimate", "OffPolicyEvaluation", "difference_interval", "mean_interval"]

#: count, total, total of squares: the counters of one sample (see `mean_interval`).
Counters = tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class Estimate:
    """An estimate with its confidence interval at level 1 - alpha.

    `method` names the estimator (`ips`, `snips`, `dr`, `mean`, `difference`), `interval` how
    `low`..`high` was computed (`gaussian`: normal approximation; `cressie-read`: the empirical-likelihood
    interval of vw-estimators). `n` is the number of decisions (or observations) behind it.
    """

    value: float
    low: float
    high: float
    n: int
    method: str
    interval: str


class OffPolicyEvaluation:
    """Streams logged decisions and estimates ONE target policy's mean reward from them.

    Rewards must lie in the known range `[r_min, r_max]` (the decision point's `reward_range`): the
    SNIPS interval needs it, and the IPS and DR intervals are intersected with it (a policy's mean
    reward cannot leave the range, so this never loses coverage; the point estimate is left as is, so
    an IPS or DR value outside the range, possible with few decisions, also lies outside its interval).

    Doubly robust estimates need, on every decision, a reward model's prediction for the logged action
    (`predicted_reward_logged`) and its prediction of the target's expected reward in that context
    (`predicted_value_target`: the sum over actions of target_pmf[a] * predicted_reward[a]). The model
    must not have been fit on the decisions it is evaluated on (cross-fit it, or fit it on older logs),
    otherwise its errors on them are too small and the interval too narrow.
    """

    def __init__(self, r_min: float = 0.0, r_max: float = 1.0) -> None:
        self.r_min = _finite("r_min", r_min)
        self.r_max = _finite("r_max", r_max)
        if not self.r_min < self.r_max:
            raise ValueError(f"the reward range needs r_min < r_max, got [{r_min}, {r_max}]")
        # Imported here, not at the top: vw-estimators loads scipy.stats (~0.5 s), which every `import
        # policies` (each server start, each CLI command) would otherwise pay. It ships no type
        # information; what comes back from it is converted to float at the boundary.
        from estimators.bandits import cressieread, gaussian, ips, snips  # type: ignore[import-untyped]
        from estimators.math import IncrementalFsum  # type: ignore[import-untyped]

        self._n = 0
        self._with_predictions: bool | None = None  # decided by the first decision added
        self._ips = ips.Estimator()
        self._ips_interval = gaussian.Interval()
        self._snips = snips.Estimator()
        self._snips_interval = cressieread.Interval(rmin=self.r_min, rmax=self.r_max)
        self._weight_total = 0.0
        self._dr_total = IncrementalFsum()
        self._dr_squares = IncrementalFsum()

    @property
    def n(self) -> int:
        """Decisions added so far."""
        return self._n

    def add(
        self,
        reward: float,
        logged_probability: float,
        target_probability: float,
        *,
        predicted_reward_logged: float | None = None,
        predicted_value_target: float | None = None,
    ) -> None:
        """Add one logged decision.

        `logged_probability`: the probability the logging policy gave the logged action, in (0, 1];
        `target_probability`: the probability the target policy gives that same action, in [0, 1].
        Pass both reward-model predictions on every decision, or neither on any (then `dr()` is not
        available). Raises ValueError, naming the argument, for anything else; nothing is added then.
        """
        reward = _finite("reward", reward)
        if not self.r_min <= reward <= self.r_max:
            raise ValueError(f"reward {reward} is outside the reward range [{self.r_min}, {self.r_max}]")
        logged = _finite("logged_probability", logged_probability)
        if not 0.0 < logged <= 1.0:
            raise ValueError(f"logged_probability must be in (0, 1], got {logged}")
        target = _finite("target_probability", target_probability)
        if not 0.0 <= target <= 1.0:
            raise ValueError(f"target_probability must be in [0, 1], got {target}")
        if (predicted_reward_logged is None) != (predicted_value_target is None):
            raise ValueError("pass both predicted_reward_logged and predicted_value_target, or neither")
        with_predictions = predicted_reward_logged is not None
        if self._with_predictions is not None and with_predictions != self._with_predictions:
            had = "had" if self._with_predictions else "had no"
            raise ValueError(
                f"earlier decisions {had} reward-model predictions: pass them on every decision or on none"
            )
        weight = target / logged
        if predicted_reward_logged is not None and predicted_value_target is not None:
            predicted_logged = _finite("predicted_reward_logged", predicted_reward_logged)
            term = _finite("predicted_value_target", predicted_value_target) + weight * (reward - predicted_logged)
            self._dr_total += term
            self._dr_squares += term * term
        # Every check passed: only now does anything change.
        self._with_predictions = with_predictions
        self._n += 1
        self._weight_total += weight
        for accumulator in (self._ips, self._ips_interval, self._snips, self._snips_interval):
            accumulator.add_example(logged, reward, target)

    def ips(self, alpha: float = 0.05) -> Estimate:
        """Inverse propensity scoring: the mean of w * r over the decisions.

        Interval: `gaussian` (vw-estimators' `gaussian.Interval`), the normal approximation to the mean
        of the per-decision terms w * r. IPS *is* a plain mean of independent terms, so the central
        limit theorem gives the textbook interval, and the same one can be computed from summed counters
        (`mean_interval`). It can cover less than promised when a few decisions carry most of the weight
        (a target that often picks what the logging policy rarely did); then prefer `snips()` or `dr()`.
        """
        self._check_ready(alpha)
        value = float(self._ips.get())
        low, high = self._ips_interval.get(alpha)
        return self._estimate(value, float(low), float(high), "ips", "gaussian")

    def snips(self, alpha: float = 0.05) -> Estimate:
        """Self-normalised IPS: sum(w * r) / sum(w), a weighted mean of the rewards.

        Interval: `cressie-read` (vw-estimators' `cressieread.Interval`: Karampatziakis, Mineiro and
        Ramdas' empirical-likelihood interval for off-policy evaluation). Like SNIPS it uses what the
        weights must satisfy (their mean is 1 under the logging policy) and the known reward range, so
        it stays inside the range and keeps its coverage with heavy weights and few decisions, where a
        normal approximation fails; it is asymptotically as tight. Computing it needs the decisions,
        not summed counters. Raises ValueError when the target gives every logged action probability 0
        (SNIPS is then undefined).
        """
        self._check_ready(alpha)
        if self._weight_total <= 0.0:
            raise ValueError("SNIPS is undefined: the target policy gives probability 0 to every logged action")
        value = float(self._snips.get())
        low, high = self._snips_interval.get(alpha)
        return self._estimate(value, float(low), float(high), "snips", "cressie-read")

    def dr(self, alpha: float = 0.05) -> Estimate:
        """Doubly robust: the mean over decisions of predicted_value_target + w * (r - predicted_reward_logged).

        Interval: `gaussian`, the normal approximation to the mean of those per-decision terms (written
        here: vw-estimators has no DR). Like IPS, DR is a mean of independent terms, so the central
        limit theorem applies; with a good reward model the terms vary much less than IPS's, which is
        the point of DR. Raises ValueError when the decisions carried no reward-model predictions.
        """
        self._check_ready(alpha)
        if not self._with_predictions:
            raise ValueError(
                "dr() needs a reward model: pass predicted_reward_logged and predicted_value_target to add()"
            )
        estimate = mean_interval(self._n, float(self._dr_total), float(self._dr_squares), alpha)
        return self._estimate(estimate.value, estimate.low, estimate.high, "dr", "gaussian")

    def _check_ready(self, alpha: float) -> None:
        _check_alpha(alpha)
        if self._n < 2:
            raise ValueError(f"an interval needs at least 2 decisions, got {self._n}")

    def _estimate(self, value: float, low: float, high: float, method: str, interval: str) -> Estimate:
        low = min(max(low, self.r_min), self.r_max)
        high = min(max(high, self.r_min), self.r_max)
        return Estimate(value, low, high, self._n, method, interval)


def mean_interval(count: float, total: float, total_squares: float, alpha: float = 0.05) -> Estimate:
    """The mean of a sample and its normal-approximation interval, from its count, sum and sum of squares.

    Those three counters add up across servers (and Prometheus scrapes), so the interval of the whole
    fleet's mean is computed from the summed counters. The variance is the unbiased sample variance
    `(total_squares - total**2 / count) / (count - 1)`. For IPS, feed the sums of w * r and (w * r)**2:
    the result equals `OffPolicyEvaluation.ips()` before that intersects it with the reward range.
    """
    n, mean, variance = _sample(count, total, total_squares, "")
    _check_alpha(alpha)
    half = _z(alpha) * math.sqrt(variance / n)
    return Estimate(mean, mean - half, mean + half, n, "mean", "gaussian")


def difference_interval(a: Counters, b: Counters, alpha: float = 0.05) -> Estimate:
    """mean(a) - mean(b) for two independent samples given as (count, total, total_squares), with its
    normal-approximation interval (the variances of the two means add).

    The lift of the served policy over a holdout arm is `difference_interval(served, holdout)`: an
    interval that excludes 0 says the difference is not noise, at level 1 - alpha. `n` is both counts.
    """
    n_a, mean_a, var_a = _sample(*a, "a: ")
    n_b, mean_b, var_b = _sample(*b, "b: ")
    _check_alpha(alpha)
    value = mean_a - mean_b
    half = _z(alpha) * math.sqrt(var_a / n_a + var_b / n_b)
    return Estimate(value, value - half, value + half, n_a + n_b, "difference", "gaussian")


def _sample(count: float, total: float, total_squares: float, which: str) -> tuple[int, float, float]:
    """(n, mean, unbiased variance) from counters, or ValueError naming the inconsistent counter."""
    count = _finite(f"{which}count", count)
    total = _finite(f"{which}total", total)
    total_squares = _finite(f"{which}total_squares", total_squares)
    if count != int(count):
        raise ValueError(f"{which}count must be a whole number, got {count}")
    n = int(count)
    if n < 2:
        raise ValueError(f"{which}an interval needs a count of at least 2, got {n}")
    mean = total / n
    spread = total_squares - total * mean
    # Summed floats lose a little: a spread below 0 by rounding only is a sample with no variance.
    if spread < -1e-9 * max(1.0, abs(total_squares)):
        raise ValueError(
            f"{which}total_squares ({total_squares}) is below total**2 / count ({total * mean}): "
            "these are not the counters of one sample"
        )
    return n, mean, max(spread, 0.0) / (n - 1)


def _z(alpha: float) -> float:
    return NormalDist().inv_cdf(1.0 - alpha / 2.0)


def _check_alpha(alpha: float) -> None:
    alpha = _finite("alpha", alpha)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _finite(name: str, value: float) -> float:
    """`value` as a plain float (numpy scalars included), or ValueError naming it."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value}")
    return number
