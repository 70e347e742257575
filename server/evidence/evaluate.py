"""`tailor evaluate`: what other policies would have earned on the logged decisions, with intervals.

For every decision point in the logs (`tailor export-logs` files, or a data directory's decision log) it
estimates the mean reward of:

- `logged`: the policy that served (its estimate is the plain mean reward, a check on the rest);
- `uniform`: every candidate with equal probability;
- `baseline`: always the baseline action (`--baseline ID`; by default the catalog's `baseline_action` as the
  log recorded it, else the first candidate: what the site showed before Tailor);
- every candidate of `--candidates FILE` (YAML: `name`, `exploration` and `learning` as in a catalog's
  `policy`), and without a file Tailor's default settings: a fresh VW model replayed progressively
  through the logs in the order they were learned; each decision is scored with the probability the
  model gave the logged action *before* it learned from that decision, so no decision evaluates a model
  that has seen it.

with three estimators of `policies._estimators` (IPS, SNIPS, DR; DR's reward model is a per-action mean
of the earlier decisions' rewards, progressive like the candidates), and writes DIR/report.md,
DIR/report.json and one PNG per decision point (DIR/<decision point>.png). Deferred decisions never
activated (`_skipLearn`) are not evaluated: nobody saw them; nor are holdout decisions (`_skipLearn` too: never
learned), which instead give the lift of the served arms over the holdout, beside apprentice mode's agreement rate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from policies import (
    Estimate,
    Exploration,
    LearningSpec,
    OffPolicyEvaluation,
    SquareCB,
    difference_interval,
    mean_interval,
)
from server.catalogs import LearningParams, PolicyConfig
from server.state.evidence import LogFormatError, LoggedDecision, canonical, read_files, read_line

ESTIMATORS = ("ips", "snips", "dr")


class Candidate(BaseModel):
    """A policy to evaluate: exploration and learning settings as in a catalog's `policy`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    exploration: Exploration = Field(default_factory=SquareCB)
    learning: LearningParams = Field(default_factory=LearningParams)

    def spec(self) -> LearningSpec:
        return PolicyConfig(exploration=self.exploration, learning=self.learning).learning_spec()


class CandidatesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    candidates: list[Candidate] = Field(min_length=1)


DEFAULT_CANDIDATES = (Candidate(name="tailor-defaults"),)


def load_candidates(path: Path) -> tuple[Candidate, ...]:
    """The candidates of a YAML file; ValueError names what is wrong."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: {err}") from None
    try:
        parsed = CandidatesFile.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"{path}: {where}: {first['msg']}") from None
    names = [c.name for c in parsed.candidates]
    if len(set(names)) != len(names) or set(names) & {"logged", "uniform", "baseline"}:
        raise ValueError(f"{path}: candidate names must be unique and not logged, uniform or baseline: {names}")
    return tuple(parsed.candidates)


class _RewardModel:
    """DR's reward model: per action, the mean reward of the earlier decisions that chose it (a prior of
    one pseudo-decision at the mean of all earlier rewards)."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self.all_total, self.all_count = 0.0, 0

    def predict(self, action: str, low: float, high: float) -> float:
        prior = self.all_total / self.all_count if self.all_count else (low + high) / 2
        return (self.total[action] + prior) / (self.count[action] + 1)

    def update(self, action: str, reward: float) -> None:
        self.total[action] += reward
        self.count[action] += 1
        self.all_total += reward
        self.all_count += 1


@dataclass
class _Policy:
    name: str
    kind: str  # logged, uniform, baseline, candidate
    description: str
    evaluation: OffPolicyEvaluation
    seconds: float = 0.0
    progress: list[tuple[int, float]] = field(default_factory=list)  # (decisions, SNIPS-so-far) for the plot
    weight_total: float = 0.0
    reward_total: float = 0.0


@dataclass
class PointReport:
    decision_point: str
    decisions: int
    skipped: int
    reward_range: tuple[float, float]
    baseline: str
    policies: list[dict[str, Any]]
    logged_mean: float
    arms: dict[str, Any] = field(default_factory=dict)


def _decisions(paths: Sequence[Path]) -> Iterator[LoggedDecision]:
    seen: set[str] = set()  # across all the paths: a decision in two exports is evaluated once
    for path in paths:
        lines: Iterable[str]
        if path.is_dir():
            root = path / "decisions" if (path / "decisions").is_dir() else path
            lines = read_files(root)
        else:
            lines = path.open(encoding="utf-8", errors="replace")
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                decision = read_line(canonical(line.rstrip("\n")))
            except LogFormatError as err:
                if path.is_dir():  # a data directory's log: a line torn by a crash mid-write is skipped, as export does
                    print(f"tailor evaluate: {path}: skipped an unreadable line ({err})", file=sys.stderr)
                    continue
                raise ValueError(f"{path}:{n}: {err}") from None
            if not 0 <= decision.chosen < len(decision.pmf) or not 0.0 < decision.pmf[decision.chosen] <= 1.0:
                raise ValueError(
                    f"{path}:{n}: not a Tailor decision line: the chosen action (index {decision.chosen}) "
                    f"has no probability in (0, 1] in {list(decision.pmf)}"
                )
            if decision.event_id in seen:
                continue
            seen.add(decision.event_id)
            yield decision


def evaluate_point(
    decisions: Sequence[LoggedDecision],
    candidates: Sequence[Candidate],
    baseline: str | None,
    alpha: float,
) -> PointReport:
    """Every policy's estimates on one decision point's logged decisions (in the order they were learned)."""
    from vowpalwabbit import pyvw

    usable = [d for d in decisions if not d.skip_learn]
    low, high = usable[0].reward_range if usable else (0.0, 1.0)
    first_ids = usable[0].action_ids if usable else ()
    logged_baseline = next((d.baseline for d in reversed(decisions)), None)
    baseline_id = baseline or logged_baseline or (first_ids[0] if first_ids else "")

    def new(name: str, kind: str, description: str) -> _Policy:
        return _Policy(name, kind, description, OffPolicyEvaluation(low, high))

    fixed = [
        new("logged", "logged", "the policy that served (mean reward of the logged decisions)"),
        new("uniform", "uniform", "every candidate with equal probability"),
        new("baseline", "baseline", f"always {baseline_id!r}"),
    ]
    learned = [new(c.name, "candidate", c.spec().vw_args()) for c in candidates]
    workspaces = [pyvw.Workspace(f"{c.spec().vw_args()} --dsjson --chain_hash --quiet") for c in candidates]
    model = _RewardModel()
    every = max(1, len(usable) // 200)
    try:
        for i, d in enumerate(usable, 1):
            ids = d.action_ids
            reward = min(high, max(low, d.reward))
            chosen_id = ids[d.chosen]
            # The probability the chosen action was served with, not `_label_probability` (the float32 VW's
            # text parser read, which can differ by a float32 step): the logged policy's weights are then 1.
            logged_probability = d.pmf[d.chosen]
            predicted = [model.predict(a, low, high) for a in ids]
            k = len(ids)
            base_index = ids.index(baseline_id) if baseline_id in ids else 0
            pmfs: list[tuple[_Policy, Sequence[float]]] = [
                (fixed[0], d.pmf),
                (fixed[1], [1.0 / k] * k),
                (fixed[2], [1.0 if j == base_index else 0.0 for j in range(k)]),
            ]
            for policy, ws in zip(learned, workspaces, strict=True):
                started = time.perf_counter()
                examples = ws.parse(d.line)
                pmf = ws.predict(examples)
                ws.learn(examples)
                ws.finish_example(examples)
                policy.seconds += time.perf_counter() - started
                pmfs.append((policy, _pmf(pmf, k)))
            for policy, pmf in pmfs:
                target = min(1.0, max(0.0, float(pmf[d.chosen])))
                policy.evaluation.add(
                    reward,
                    logged_probability,
                    target,
                    predicted_reward_logged=predicted[d.chosen],
                    predicted_value_target=sum(p * r for p, r in zip(pmf, predicted, strict=True)),
                )
                policy.weight_total += target / logged_probability
                policy.reward_total += target / logged_probability * reward
                if i % every == 0 and policy.weight_total > 0:
                    policy.progress.append((i, policy.reward_total / policy.weight_total))
            model.update(chosen_id, reward)
    finally:
        for ws in workspaces:
            ws.finish()
    rows = []
    for policy in [*fixed, *learned]:
        row: dict[str, Any] = {"policy": policy.name, "kind": policy.kind, "description": policy.description}
        for method in ESTIMATORS:
            row[method] = _estimate(policy.evaluation, method, alpha)
        if policy.kind == "candidate":
            row["replay_seconds"] = round(policy.seconds, 3)
        row["progress"] = policy.progress
        rows.append(row)
    logged_mean = sum(min(high, max(low, d.reward)) for d in usable) / len(usable) if usable else math.nan
    return PointReport(
        decision_point=decisions[0].decision_point,
        decisions=len(usable),
        skipped=len(decisions) - len(usable),
        reward_range=(low, high),
        baseline=baseline_id,
        policies=rows,
        logged_mean=logged_mean,
        arms=_arms(decisions, baseline_id, alpha),
    )


def _arms(decisions: Sequence[LoggedDecision], baseline: str, alpha: float) -> dict[str, Any]:
    """How the decisions were served (policy, apprentice, holdout): per arm the count and mean reward; the lift of
    each served arm over the holdout with its interval; apprentice mode's agreement rate (the model's own choice
    was the baseline) with its interval."""
    rewards: dict[str, list[float]] = defaultdict(list)
    agreed: list[float] = []
    for d in decisions:
        if d.outcome == "unactivated":
            continue
        rewards[d.arm].append(d.reward)
        if d.arm == "apprentice":
            agreed.append(1.0 if d.model_action == (d.baseline or baseline) else 0.0)

    def counters(xs: Sequence[float]) -> tuple[float, float, float]:
        return float(len(xs)), math.fsum(xs), math.fsum(x * x for x in xs)

    out: dict[str, Any] = {
        "served": {arm: {"n": len(xs), "mean_reward": math.fsum(xs) / len(xs)} for arm, xs in sorted(rewards.items())}
    }
    held = rewards.get("holdout", [])
    for arm in ("policy", "apprentice"):
        served = rewards.get(arm, [])
        if len(served) >= 2 and len(held) >= 2:
            e = difference_interval(counters(served), counters(held), alpha)
            out.setdefault("lift", {})[arm] = {"value": e.value, "low": e.low, "high": e.high, "n": e.n}
    if len(agreed) >= 2:
        e = mean_interval(*counters(agreed), alpha)
        out["agreement"] = {"value": e.value, "low": max(0.0, e.low), "high": min(1.0, e.high), "n": e.n}
    return out


def _pmf(prediction: Any, k: int) -> list[float]:
    pmf = [float(p) for p in prediction]
    if len(pmf) != k:
        raise ValueError(f"VW predicted {len(pmf)} probabilities for {k} candidates")
    return pmf


def _estimate(evaluation: OffPolicyEvaluation, method: str, alpha: float) -> dict[str, Any] | None:
    try:
        e: Estimate = getattr(evaluation, method)(alpha)
    except ValueError:
        return None  # too few decisions, or SNIPS undefined (the policy never chose a logged action)
    return {"value": e.value, "low": e.low, "high": e.high, "n": e.n, "interval": e.interval}


def _cell(e: dict[str, Any] | None) -> str:
    return "n/a" if e is None else f"{e['value']:.4f} [{e['low']:.4f}, {e['high']:.4f}]"


def markdown(reports: Sequence[PointReport], sources: Sequence[Path], alpha: float, seconds: float) -> str:
    level = f"{1 - alpha:.0%}"
    out = [
        "# Offline evaluation",
        "",
        f"Logs: {', '.join(str(s) for s in sources)}. Estimated mean reward per decision, with {level} intervals.",
        "",
        "- **IPS** (inverse propensity scoring): mean of w·r, w = target probability / logged probability of the "
        "logged action; unbiased; interval: normal approximation.",
        "- **SNIPS** (self-normalised IPS): Σw·r / Σw; stays in the reward range, usually less variance; interval: "
        "Cressie-Read empirical likelihood (vw-estimators).",
        "- **DR** (doubly robust): a reward model's prediction corrected by the weighted error on the logged action; "
        "the model is the per-action mean reward of earlier decisions; interval: normal approximation.",
        "",
        "Candidates are replayed through VW progressively: each decision is scored before the model learns from "
        "it. A policy far from the logged one (large weights) gets wide intervals: trust SNIPS and DR there.",
        "",
    ]
    for r in reports:
        out += [
            f"## {r.decision_point}",
            "",
            f"{r.decisions} decisions (reward range {list(r.reward_range)}; logged mean reward {r.logged_mean:.4f}; "
            f"baseline action {r.baseline!r}"
            + (f"; {r.skipped} never-learned decisions (never activated, or holdout) not replayed" if r.skipped else "")
            + ").",
            "",
            *_arm_lines(r),
            "| policy | IPS | SNIPS | DR | settings |",
            "|---|---|---|---|---|",
        ]
        for row in r.policies:
            settings = row["description"].replace("|", "\\|")
            timing = f" (replay {row['replay_seconds']:.1f} s)" if "replay_seconds" in row else ""
            out.append(
                f"| {row['policy']} | {_cell(row['ips'])} | {_cell(row['snips'])} | {_cell(row['dr'])} "
                f"| `{settings}`{timing} |"
            )
        out += ["", f"![{r.decision_point}]({_png_name(r.decision_point)})", ""]
    out.append(f"Evaluated in {seconds:.1f} s.")
    return "\n".join(out) + "\n"


def _arm_lines(r: PointReport) -> list[str]:
    served = r.arms.get("served", {})
    if set(served) <= {"policy"}:
        return []
    lines = [
        "Served: " + ", ".join(f"{arm} {v['n']} (mean reward {v['mean_reward']:.4f})" for arm, v in served.items())
    ]
    for arm, e in r.arms.get("lift", {}).items():
        lines.append(f"- lift of {arm} over holdout: {_cell(e)}")
    if "agreement" in r.arms:
        lines.append(f"- apprentice agreement (the model chose {r.baseline!r} too): {_cell(r.arms['agreement'])}")
    return [*lines, ""]


def _png_name(point: str) -> str:
    return f"{point}.png"


def plot(report: PointReport, path: Path, alpha: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, curve) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [row["policy"] for row in report.policies]
    for offset, method in zip((-0.25, 0.0, 0.25), ESTIMATORS, strict=True):
        ys: list[float] = []
        values: list[float] = []
        errors: tuple[list[float], list[float]] = ([], [])
        for y, row in enumerate(report.policies):
            e = row[method]
            if e is None:
                continue
            ys.append(y + offset)
            values.append(e["value"])
            errors[0].append(max(0.0, e["value"] - e["low"]))
            errors[1].append(max(0.0, e["high"] - e["value"]))
        bars.errorbar(values, ys, xerr=errors, fmt="o", capsize=3, label=method.upper())
    bars.set_yticks(range(len(names)), names)
    bars.invert_yaxis()
    bars.set_xlabel(f"estimated mean reward ({1 - alpha:.0%} interval)")
    bars.set_title(f"{report.decision_point}: {report.decisions} decisions")
    bars.legend(loc="best")
    for row in report.policies:
        if row["progress"]:
            xs, ys2 = zip(*row["progress"], strict=True)
            curve.plot(xs, ys2, label=row["policy"])
    curve.set_xlabel("logged decisions replayed")
    curve.set_ylabel("SNIPS so far")
    curve.set_title("estimated value as the log is replayed")
    curve.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("logs", nargs="+", type=Path, help="DSJSON files from tailor export-logs, or a data directory")
    p.add_argument("--out", type=Path, required=True, help="directory for report.md, report.json and the plots")
    p.add_argument("--candidates", type=Path, help="YAML: candidates: [{name, exploration, learning}, ...]")
    p.add_argument(
        "--baseline",
        help="the baseline action id (default: the catalog's baseline_action as logged, else the first candidate)",
    )
    p.add_argument("--decision-point", action="append", default=[], help="only this decision point (repeatable)")
    p.add_argument(
        "--alpha",
        type=float,
        default=float(os.environ.get("TAILOR_EVALUATE_ALPHA", "0.05")),
        help="1 - confidence level of the intervals (default 0.05: 95%%)",
    )


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if not 0.0 < args.alpha < 1.0:
        print(f"tailor evaluate: --alpha must be in (0, 1), got {args.alpha}", file=sys.stderr)
        return 2
    try:
        candidates = load_candidates(args.candidates) if args.candidates else DEFAULT_CANDIDATES
    except ValueError as err:
        print(f"tailor evaluate: --candidates {err}", file=sys.stderr)
        return 2
    missing = [str(p) for p in args.logs if not p.exists()]
    if missing:
        print(f"tailor evaluate: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    by_point: dict[str, list[LoggedDecision]] = defaultdict(list)
    try:
        for d in _decisions(args.logs):
            if not args.decision_point or d.decision_point in args.decision_point:
                by_point[d.decision_point].append(d)
    except ValueError as err:
        print(f"tailor evaluate: {err}", file=sys.stderr)
        return 1
    if not by_point:
        print("tailor evaluate: the logs hold no decisions (of the selected decision points)", file=sys.stderr)
        return 1
    for point, decisions in by_point.items():
        ids = {a for d in decisions if not d.skip_learn for a in d.action_ids}
        if args.baseline and ids and args.baseline not in ids:
            print(
                f"tailor evaluate: --baseline {args.baseline!r} is not a candidate of {point!r} "
                f"(its candidates: {', '.join(sorted(ids))}; select decision points with --decision-point)",
                file=sys.stderr,
            )
            return 2
    reports = []
    for point in sorted(by_point):
        decisions = sorted(by_point[point], key=lambda d: d.learned_at)
        reports.append(evaluate_point(decisions, candidates, args.baseline, args.alpha))
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for report in reports:
        plot(report, out / _png_name(report.decision_point), args.alpha)
    seconds = time.perf_counter() - started
    (out / "report.md").write_text(markdown(reports, args.logs, args.alpha, seconds))
    document = {
        "alpha": args.alpha,
        "sources": [str(p) for p in args.logs],
        "seconds": round(seconds, 3),
        "decision_points": [
            {
                "decision_point": r.decision_point,
                "decisions": r.decisions,
                "skipped": r.skipped,
                "reward_range": list(r.reward_range),
                "baseline": r.baseline,
                "logged_mean": r.logged_mean,
                "arms": r.arms,
                "policies": [{k: v for k, v in row.items() if k != "progress"} for row in r.policies],
            }
            for r in reports
        ],
    }
    (out / "report.json").write_text(json.dumps(document, indent=2) + "\n")
    total = sum(r.decisions for r in reports)
    print(
        f"tailor evaluate: {total} decisions of {len(reports)} decision point(s), "
        f"{len(candidates)} candidate(s), in {seconds:.1f} s; report in {out / 'report.md'}",
        file=sys.stderr,
    )
    return 0
