"""Learner throughput: joined examples learned per second by Tailor's learner (the queue, reward-to-cost,
metrics and the VW call path) against raw pylibvw learn (parse + learn_multi + finish) on the same
examples, interleaved in the same run, medians over repeats.

    .venv/bin/python -m benchmarks.learner [--examples 5000] [--repeats 5]

Examples look like the load benchmark's decisions: 15 catalog actions, 20 request features and ~20
session features. Writes results.json and results.md beside this file (or --out).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from vowpalwabbit import pyvw

from benchmarks._results import publish
from policies import LearningSpec, VWPolicy, action_line, encode_features, reward_to_cost, shared_line
from server.core import Metrics
from server.learning import Learner
from server.state.decision_log import Decision, DecisionRecord
from server.state.models import ServedModel

HERE = Path(__file__).resolve().parent
_vw = pyvw.pylibvw.vw


def examples(n: int, seed: int = 7) -> list[DecisionRecord]:
    rng = random.Random(seed)
    actions = tuple(action_line(f"a{i}", {"style": f"s{i % 5}", "density": float(i % 7)}) for i in range(15))
    out = []
    for i in range(n):
        context = [(f"c{j}", f"v{rng.randint(0, 9)}") for j in range(10)] + [(f"n{j}", rng.random()) for j in range(10)]
        session = [(f"sf{j}", rng.random()) for j in range(18)] + [("cart", "empty"), ("top_category", "shoes")]
        chosen = rng.randrange(15)
        decision = Decision(f"e{i}", f"a{chosen}", 1 / 15, (), {}, "x.0")
        shared = shared_line(encode_features(context), encode_features(session))
        out.append(
            DecisionRecord(
                decision=decision,
                session_id="s",
                decision_point="p",
                shared=shared,
                actions=actions,
                chosen=chosen,
                created_at=0.0,
                window_seconds=60.0,
                aggregation="first",
                reward_range=(0.0, 1.0),
                default_reward=0.0,
                grace_seconds=0.0,
                activated_at=0.0,
                learned=True,
            )
        )
    return out


def raw_vw(records: list[DecisionRecord], rewards: list[float]) -> float:
    """Examples/s for pylibvw alone, example text prepared beforehand (label included)."""
    ws = pyvw.Workspace(LearningSpec().vw_args() + " --quiet", enable_logging=False)
    texts = []
    for r, reward in zip(records, rewards, strict=True):
        lines = list(r.actions)
        lines[r.chosen] = f"0:{reward_to_cost(reward, 0, 1)!r}:{r.probability!r} {lines[r.chosen]}"
        texts.append(r.shared + "\n" + "\n".join(lines))
    started = time.perf_counter()
    for text in texts:
        exs = _vw._parse(ws, text)
        _vw.learn_multi(ws, exs)
        _vw._finish_example_multi_ex(ws, exs)
    seconds = time.perf_counter() - started
    ws.finish()
    return len(texts) / seconds


def tailor_learner(records: list[DecisionRecord], rewards: list[float]) -> float:
    """Examples/s through Tailor's Learner: submit every example, then learn slices until the queue is empty."""
    spec = LearningSpec()

    class OneModel:
        def __init__(self) -> None:
            self.model = ServedModel("p", spec, spec.fingerprint(), VWPolicy(spec), 0, 0.0)

        def get(self, decision_point: str) -> ServedModel:
            return self.model

    learner = Learner(OneModel(), Metrics(CollectorRegistry()))  # type: ignore[arg-type]
    started = time.perf_counter()
    for r, reward in zip(records, rewards, strict=True):
        learner.submit(r, reward, "reward")
    while learner.learn_slice():
        pass
    seconds = time.perf_counter() - started
    return len(records) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    rng = random.Random(11)
    rewards = [1.0 if rng.random() < 0.2 else 0.0 for _ in range(args.examples)]
    runs: dict[str, list[float]] = {"raw_vw": [], "tailor": []}
    for _ in range(args.repeats):
        runs["raw_vw"].append(raw_vw(examples(args.examples), rewards))
        runs["tailor"].append(tailor_learner(examples(args.examples), rewards))
    raw, ours = statistics.median(runs["raw_vw"]), statistics.median(runs["tailor"])
    result: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": ".venv/bin/python -m benchmarks.learner",
        "examples": args.examples,
        "repeats": args.repeats,
        "raw_vw_per_s": raw,
        "tailor_learner_per_s": ours,
        "ratio": ours / raw,
        "runs": runs,
    }
    table = (
        f"Measured {result['when']}: {args.examples} examples (15 actions, ~40 shared features), "
        f"{args.repeats} interleaved repeats, medians. Command: `{result['command']}`.\n\n"
        "| learner | examples/s | ratio |\n|---|---|---|\n"
        f"| raw pylibvw learn (parse + learn_multi + finish, text prepared) | {raw:,.0f} | 1.00x |\n"
        f"| Tailor's learner (queue, reward-to-cost, label, metrics, VW) | {ours:,.0f} | {ours / raw:.2f}x |\n"
    )
    publish(args.out, result, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
