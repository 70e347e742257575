"""Summaries and the results files: per-algorithm medians over seeds, the parity ratio, the table.

The ratio is median(service) / median(reference). Per-seed ratios would pair runs that share only the
data order (the two sides draw actions from different generators), so they add noise, not information.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._problem import RANDOM_BASELINE
from ._reference import ReferenceRun
from ._service import ServiceRun


@dataclass(slots=True)
class Spread:
    """Median and range of a value over seeds."""

    median: float
    min: float
    max: float
    per_seed: list[float]

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values), list(values))

    def cell(self) -> str:
        return f"{self.median:.3f} ({self.min:.3f}-{self.max:.3f})"


@dataclass(slots=True)
class AlgorithmResult:
    """One algorithm over all seeds, through the service and in process."""

    algorithm: str
    vw_args: str
    seeds: list[int]
    service: Spread
    reference: Spread
    ratio: float
    replay_agreement: Spread
    replay_first_divergence: list[int | None]
    service_seconds: list[float]
    reference_seconds: list[float]
    rewards_accepted: int
    rewards_reported: int
    learned_from_rewards: int
    learned_total: int
    problems: list[str] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        algorithm: str,
        vw_args: str,
        seeds: list[int],
        runs: Sequence[ServiceRun],
        references: Sequence[ReferenceRun],
        replays: Sequence[ReferenceRun],
        reference_seconds: Sequence[float],
    ) -> AlgorithmResult:
        service = Spread.of([r.mean_reward for r in runs])
        reference = Spread.of([r.mean_reward for r in references])
        pairs = [(run.choices, replay.choices) for run, replay in zip(runs, replays, strict=True)]
        return cls(
            algorithm=algorithm,
            vw_args=vw_args,
            seeds=seeds,
            service=service,
            reference=reference,
            ratio=service.median / reference.median if reference.median > 0 else float("nan"),
            replay_agreement=Spread.of([agreement(a, b) for a, b in pairs]),
            replay_first_divergence=[first_divergence(a, b) for a, b in pairs],
            service_seconds=[round(r.seconds, 2) for r in runs],
            reference_seconds=[round(s, 2) for s in reference_seconds],
            rewards_accepted=sum(r.reward_statuses.get("REWARD_STATUS_ACCEPTED", 0) for r in runs),
            rewards_reported=sum(sum(r.reward_statuses.values()) for r in runs),
            learned_from_rewards=int(sum(r.learned.get("reward", 0.0) for r in runs)),
            learned_total=int(sum(sum(r.learned.values()) for r in runs)),
            problems=[p for seed, r in zip(seeds, runs, strict=True) for p in run_problems(seed, r)],
        )


def agreement(service: Sequence[int], replay: Sequence[int]) -> float:
    """Share of rounds where the service chose what in-process VW chose from the same event id."""
    return sum(a == b for a, b in zip(service, replay, strict=True)) / len(service)


def first_divergence(service: Sequence[int], replay: Sequence[int]) -> int | None:
    """The first round where the service and the replay chose differently (None: never)."""
    return next((i for i, (a, b) in enumerate(zip(service, replay, strict=True)) if a != b), None)


def run_problems(seed: int, run: ServiceRun) -> list[str]:
    """Everything in one service run that departs from a clean, fully learned run."""
    problems: list[str] = []
    not_accepted = {s: n for s, n in run.reward_statuses.items() if s != "REWARD_STATUS_ACCEPTED"}
    if not_accepted:
        problems.append(f"seed {seed}: rewards not accepted: {not_accepted}")
    if run.learned.get("reward", 0.0) != run.decisions:
        problems.append(f"seed {seed}: learned {run.learned} for {run.decisions} decisions")
    if run.learn_errors or run.rpc_errors:
        problems.append(f"seed {seed}: {run.learn_errors:.0f} learn errors, {run.rpc_errors:.0f} RPC errors")
    if not run.fingerprint_matches:
        problems.append(f"seed {seed}: model_version fingerprint differs from the reference's VW flags")
    if run.exit_code != 0:
        problems.append(f"seed {seed}: tailor serve exited {run.exit_code} on SIGTERM")
    problems += [f"seed {seed}: log: {line}" for line in run.log_problems[:5]]
    return problems


def table(results: Sequence[AlgorithmResult]) -> str:
    """The results as a markdown table (also readable as plain text on a terminal)."""
    rows = [
        "| algorithm | service mean reward, median (min-max) | in-process VW | service / in-process | random "
        "| same choices as replay (worst seed) | rewards accepted | service s/run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        seconds = statistics.median(r.service_seconds)
        rows.append(
            f"| {r.algorithm} | {r.service.cell()} | {r.reference.cell()} | {r.ratio:.3f} | {RANDOM_BASELINE:.3f} "
            f"| {r.replay_agreement.min:.1%} | {r.rewards_accepted}/{r.rewards_reported} | {seconds:.1f} |"
        )
    return "\n".join(rows)


def markdown(results: Sequence[AlgorithmResult], meta: dict[str, Any], verdict: str) -> str:
    """results.md: when, where and how it was measured, the table, the flags and the verdict."""
    lines = [
        f"Measured {meta['date']} at commit {meta['commit']} on a machine with nproc {meta['nproc']} "
        f"(Python {meta['python']}, vowpalwabbit {meta['vowpalwabbit']}).",
        f"Command: `{meta['command']}` — {meta['rounds']} rounds per run ({meta['passes']} passes), "
        f"seeds {', '.join(map(str, meta['seeds']))}, total {meta['total_seconds']:.0f} s.",
        "",
        table(results),
        "",
        "VW flags (identical on both sides; `--quiet` added in process):",
        "",
        *[f"- {r.algorithm}: `{r.vw_args}`" for r in results],
        "",
        verdict,
    ]
    problems = [p for r in results for p in r.problems]
    if problems:
        lines += ["", "Problems seen in the service runs:", "", *[f"- {p}" for p in problems]]
    return "\n".join(lines) + "\n"


def write(out: Path, results: Sequence[AlgorithmResult], meta: dict[str, Any], verdict: str, passed: bool) -> None:
    """results.json (everything, per seed) and results.md (the table to paste into the README)."""
    out.mkdir(parents=True, exist_ok=True)
    doc = {**meta, "verdict": verdict, "passed": passed, "algorithms": [asdict(r) for r in results]}
    (out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results, meta, verdict))
