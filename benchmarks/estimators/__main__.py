"""``python -m benchmarks.estimators``: do Tailor's off-policy estimators find the true value of a policy?

Every repetition logs `--decisions` shoppers of `tailor simulate`'s world served by an exploring
policy, and estimates four target policies from that log with `policies.OffPolicyEvaluation` (IPS,
SNIPS, DR). Each target's true value is computed exactly from the simulator's probabilities, so over
the repetitions every estimator gets a bias, an RMSE and the coverage of its 95% intervals.

Exits 1 when some interval covers the truth in fewer than 90% of the repetitions.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._results import publish
from policies import Estimate, OffPolicyEvaluation

from ._environment import EPSILON, TARGETS, Environment, Logged, build, cross_fitted_model

HERE = Path(__file__).resolve().parent
ESTIMATORS = ("ips", "snips", "dr")
ALPHA = 0.05
COVERAGE_BAR = 0.90
MIN_COMMITTED_REPEATS = 100
R_MIN, R_MAX = 0.0, 1.0  # the simulator catalog's reward_range


def _at_least(minimum: int) -> Any:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.estimators",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--repeats",
        type=_at_least(2),
        default=100,
        help=f"repetitions (default 100; at least {MIN_COMMITTED_REPEATS} to write the committed table)",
    )
    p.add_argument("--decisions", type=_at_least(10), default=5000, help="logged decisions per repetition")
    p.add_argument("--seed", type=int, default=1, help="repetition r draws from numpy's default_rng([seed, r])")
    p.add_argument("--out", type=Path, default=HERE, help="where results.json/.md go (default: beside this file)")
    return p


def evaluate(env: Environment, logged: Logged, model: np.ndarray[Any, Any], target: str) -> dict[str, Estimate]:
    """One target policy estimated from one log, the way a caller of the policies package would."""
    rows = np.arange(len(logged.rewards))
    pmf = env.policies[target][logged.contexts]
    evaluation = OffPolicyEvaluation(R_MIN, R_MAX)
    for reward, logged_p, target_p, predicted_logged, predicted_target in zip(
        logged.rewards.tolist(),
        logged.propensities.tolist(),
        pmf[rows, logged.actions].tolist(),
        model[rows, logged.actions].tolist(),
        (pmf * model).sum(axis=1).tolist(),
        strict=True,
    ):
        evaluation.add(
            reward,
            logged_p,
            target_p,
            predicted_reward_logged=predicted_logged,
            predicted_value_target=predicted_target,
        )
    return {"ips": evaluation.ips(ALPHA), "snips": evaluation.snips(ALPHA), "dr": evaluation.dr(ALPHA)}


def _wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """A 95% interval for a coverage measured as `hits` of `n` repetitions."""
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(truth: float, estimates: list[Estimate]) -> dict[str, Any]:
    values = np.array([e.value for e in estimates])
    errors = values - truth
    hits = sum(e.low <= truth <= e.high for e in estimates)
    return {
        "bias": float(errors.mean()),
        "bias_standard_error": float(errors.std(ddof=1) / math.sqrt(len(errors))),
        "rmse": float(math.sqrt((errors**2).mean())),
        "coverage": hits / len(estimates),
        "coverage_95": _wilson(hits, len(estimates)),
        "mean_width": float(np.mean([e.high - e.low for e in estimates])),
        "interval": estimates[0].interval,
        "values": values.tolist(),
        "lows": [e.low for e in estimates],
        "highs": [e.high for e in estimates],
    }


def table(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [
        f"Measured {meta['date']} on a machine with nproc {meta['nproc']} (Python {meta['python']}, "
        f"vw-estimators {meta['vw_estimators']}), {meta['total_seconds']:.0f} s.",
        f"Command: `{meta['command']}`: {meta['repeats']} repetitions of {meta['decisions']:,} logged "
        f"decisions, 95% intervals (alpha {ALPHA}).",
        "",
        f"World: `tailor simulate`'s shoppers ({meta['contexts']} contexts: demographics x hidden intent; 4 "
        f"layouts; reward 1.0 purchase, 0.3 add to cart). Logging policy: epsilon-greedy (epsilon {EPSILON}) "
        "around the best segment rule. DR's reward model: mean reward per (intent, layout), cross-fitted on "
        "halves.",
        "",
        "| target policy | true value | estimator (interval) | mean error (bias) ± s.e. | RMSE | mean width "
        "| coverage (95% CI over repetitions) |",
        "|---|---|---|---|---|---|---|",
    ]
    for target in TARGETS:
        entry = result["targets"][target]
        for name in ESTIMATORS:
            s = entry["estimators"][name]
            low, high = s["coverage_95"]
            miss = " **below 90%**" if s["coverage"] < COVERAGE_BAR else ""
            lines.append(
                f"| {target} | {entry['true_value']:.4f} | {name} ({s['interval']}) "
                f"| {s['bias']:+.4f} ± {s['bias_standard_error']:.4f} | {s['rmse']:.4f} | {s['mean_width']:.4f} "
                f"| {s['coverage']:.0%} ({low:.0%}-{high:.0%}){miss} |"
            )
    lines += ["", "Target policies:", ""]
    lines += [f"- {target}: {result['targets'][target]['policy']}" for target in TARGETS]
    lines += ["", result["verdict"], ""]
    return "\n".join(lines)


def _verdict(targets: dict[str, Any]) -> tuple[str, bool]:
    misses = [
        f"{name} on {target} ({entry['estimators'][name]['coverage']:.0%})"
        for target, entry in targets.items()
        for name in ESTIMATORS
        if entry["estimators"][name]["coverage"] < COVERAGE_BAR
    ]
    if misses:
        return f"FAIL: coverage below {COVERAGE_BAR:.0%}: {', '.join(misses)}.", False
    worst = min(entry["estimators"][name]["coverage"] for entry in targets.values() for name in ESTIMATORS)
    return f"PASS: every interval covers the true value in at least {COVERAGE_BAR:.0%} (lowest {worst:.0%}).", True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    args = parser.parse_args(argv)
    if args.repeats < MIN_COMMITTED_REPEATS and args.out.resolve() == HERE:
        parser.error(
            f"the committed table needs --repeats >= {MIN_COMMITTED_REPEATS}: pass --out DIR for a shorter run"
        )
    started = time.perf_counter()
    env = build()
    truths = {target: env.true_value(target) for target in TARGETS}
    runs: dict[str, dict[str, list[Estimate]]] = {t: {e: [] for e in ESTIMATORS} for t in TARGETS}
    for repeat in range(args.repeats):
        rng = np.random.default_rng([args.seed, repeat])
        logged = env.log(rng, args.decisions)
        model = cross_fitted_model(env, logged)
        for target in TARGETS:
            for name, estimate in evaluate(env, logged, model, target).items():
                runs[target][name].append(estimate)
        if (repeat + 1) % 10 == 0 or repeat + 1 == args.repeats:
            print(f"{repeat + 1}/{args.repeats} repetitions, {time.perf_counter() - started:.0f} s", flush=True)
    targets = {
        target: {
            "policy": env.describe[target],
            "true_value": truths[target],
            "estimators": {name: summarize(truths[target], runs[target][name]) for name in ESTIMATORS},
        }
        for target in TARGETS
    }
    verdict, passed = _verdict(targets)
    python = os.path.relpath(sys.executable, Path.cwd())
    meta = {
        "benchmark": "off-policy estimators: bias, RMSE and interval coverage",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(
            [python if not python.startswith("..") else "python", "-m", "benchmarks.estimators", *argv]
        ),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "vw_estimators": version("vw-estimators"),
        "repeats": args.repeats,
        "decisions": args.decisions,
        "seed": args.seed,
        "alpha": ALPHA,
        "epsilon": EPSILON,
        "contexts": len(env.context_probability),
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    result = {"meta": meta, "verdict": verdict, "passed": passed, "targets": targets}
    publish(args.out, result, table(result))
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
